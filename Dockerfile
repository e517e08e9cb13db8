# The SMTP sidecar: `scangw smtp` only. Container Apps maps ports 25/587/465 to these unprivileged ports.
# Settings come from the environment at run time (SCANGW_STORAGE__*, SCANGW_SMTP_TLS_CERT/_KEY, ...);
# the --implicit-tls listener needs the certificate, so mount it and set SCANGW_SMTP_TLS_CERT/_KEY.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONPATH=/app \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY requirements.txt ./
RUN pip install --no-cache-dir -r requirements.txt
COPY gateway ./gateway

# A system user with no shell and no write access to the code; only its working folder is writable.
RUN useradd --system --uid 10001 --home-dir /var/lib/scangw --create-home --shell /usr/sbin/nologin scangw
USER 10001
WORKDIR /var/lib/scangw

EXPOSE 2525 2587 2465

# A TCP connect to the plain listener: cheap, and it fails when the event loop is wedged or the port closed.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import socket; socket.create_connection(('127.0.0.1', 2525), timeout=3).close()"]

CMD ["python", "-m", "gateway", "smtp", "--listen", "0.0.0.0:2525", "--listen", "0.0.0.0:2587", "--implicit-tls", "0.0.0.0:2465"]
