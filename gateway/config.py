"""One frozen settings object, built once from an injected mapping (normally os.environ).

Every error names the setting and what would fix it, so `scangw` can exit 2 with one actionable line.
Nothing here reads the environment at import time.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from gateway.core.errors import ConfigError

MIB = 1024 * 1024

#: Graph endpoint per national cloud; tokens are not interchangeable between clouds.
GRAPH_HOSTS = {
    "public": "https://graph.microsoft.com",
    "usgov": "https://graph.microsoft.us",
    "usgovdod": "https://dod-graph.microsoft.us",
    "china": "https://microsoftgraph.chinacloudapi.cn",
}

#: Clouds where Outlook attachment upload sessions do not exist (platform facts, section 1).
NO_UPLOAD_SESSION_CLOUDS = frozenset({"usgov", "usgovdod"})

QUEUE_NAME = "scan-jobs"
POISON_QUEUE_NAME = "scan-jobs-poison"
BLOB_CONTAINER = "scans"
DEVICES_TABLE = "devices"
JOBS_TABLE = "jobs"
MAILBOXES_TABLE = "mailboxes"


@dataclass(frozen=True)
class StorageIdentity:
    """Identity-based storage endpoints, named as the Functions host reads them for `SCANGW_STORAGE`."""

    blob_uri: str
    queue_uri: str
    table_uri: str
    client_id: str | None = None


@dataclass(frozen=True)
class Settings:
    storage: str = "local:scangw-data"
    storage_identity: StorageIdentity | None = None
    sender: str | None = None
    cloud: str = "public"
    graph_url: str = GRAPH_HOSTS["public"]
    outbox: Path | None = None
    max_message_bytes: int = 35 * MIB
    admin_email: str | None = None
    smtp_tls_cert: Path | None = None
    smtp_tls_key: Path | None = None
    #: Host names for the door's own self-signed certificate, used when no SCANGW_SMTP_TLS_CERT is given.
    smtp_tls_self_signed: tuple[str, ...] = ()
    smtp_require_tls_auth: bool = False
    smtp_proxy_cidrs: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    smtp_legacy_tls: bool = False
    #: SMTP door capacity (issue 9): a NAT'd office may need more per address, a small box fewer in total.
    smtp_max_connections: int = 1000
    smtp_max_per_address: int = 50
    smtp_login_seconds: float = 60.0
    mailbox_rate_per_min: int = 30
    max_attempts: int = 50
    max_age_hours: float = 24.0
    retry_base_seconds: float = 15.0
    send_grace_seconds: float = 300.0
    #: SCANGW_HTTP_STOP_SECONDS: on SIGTERM, how long uploads in progress may take to finish before `503`.
    http_stop_seconds: float = 30.0
    partial_wait_minutes: float = 30.0
    link_hours: float = 0.0
    #: Where recipients reach `scangw http` (embedded spool download links); no trailing slash.
    public_url: str | None = None
    keep_sent_hours: float = 0.0
    keep_failed_days: float = 7.0
    keep_jobs_days: float = 30.0
    azure_client_id: str | None = None
    appinsights_connection_string: str | None = field(default=None, repr=False)
    #: SCANGW_LOG_FORMAT: `text` (key=value event lines) or `json` (one object per line).
    log_format: str = "text"
    #: Abuse limits of the two doors an admin may tune (issue 9; README "Security").
    max_recipients: int = 100
    max_files: int = 500
    auth_failures: int = 5
    auth_window_seconds: float = 60.0
    auth_user_failures: int = 50
    auth_user_window_seconds: float = 900.0
    smtp_idle_timeout_seconds: float = 300.0
    http_timeout_seconds: float = 60.0

    @property
    def graph_scope(self) -> str:
        """The token scope follows the cloud even when the base URL is overridden (e.g. a test double)."""
        return f"{GRAPH_HOSTS[self.cloud]}/.default"

    @property
    def graph_base_url(self) -> str:
        return f"{self.graph_url}/v1.0"

    @property
    def upload_sessions_available(self) -> bool:
        return self.cloud not in NO_UPLOAD_SESSION_CLOUDS

    @property
    def local_dir(self) -> Path | None:
        """The embedded spool's folder, or None when storage is Azure (or Azurite)."""
        if self.storage_identity is None and self.storage.startswith("local:"):
            return Path(self.storage[len("local:") :] or "scangw-data")
        return None

    @property
    def store_label(self) -> str:
        """Which store a command uses, for the lines that must say it (an absolute folder, or the account)."""
        local = self.local_dir
        if local is not None:
            return str(local.resolve())
        if self.storage_identity is not None:
            return self.storage_identity.table_uri
        fields = dict(part.split("=", 1) for part in self.storage.split(";") if "=" in part)
        return f"Azure Storage account {fields.get('AccountName', 'devstoreaccount1 (Azurite)')}"


def default_data_dir(env: Mapping[str, str]) -> Path:
    """The embedded spool when no SCANGW_STORAGE* is set: one per-user folder, wherever the shell stands, so
    `scangw devices list` from any folder sees what `scangw dev` created (XDG base directory convention)."""
    import sys

    xdg = (env.get("XDG_DATA_HOME") or "").strip()
    if xdg and Path(xdg).is_absolute():
        return Path(xdg) / "scangw"
    home = Path(env["HOME"]) if env.get("HOME", "").strip() else Path.home()
    if sys.platform == "darwin":
        return home / "Library" / "Application Support" / "scangw"
    return home / ".local" / "share" / "scangw"


def _text(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name, "").strip()
    return value or None


def _number(env: Mapping[str, str], name: str, default: float, low: float, high: float | None = None) -> float:
    raw = _text(env, name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(name, f"'{raw}' is not a number; set it to a number such as {default:g}.") from None
    if value < low or (high is not None and value > high):
        bound = f"between {low:g} and {high:g}" if high is not None else f"at least {low:g}"
        raise ConfigError(name, f"{raw} is out of range; it must be {bound}.")
    return value


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = _text(env, name)
    if raw is None:
        return default
    if raw.lower() in {"1", "true", "yes", "on"}:
        return True
    if raw.lower() in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(name, f"'{raw}' is not a switch; use 1 or 0.")


def _address(env: Mapping[str, str], name: str) -> str | None:
    value = _text(env, name)
    if value is not None and ("@" not in value or any(c.isspace() for c in value) or value.count("@") != 1):
        raise ConfigError(name, f"'{value}' is not a mailbox address like scanner@contoso.com.")
    return value


def _storage(env: Mapping[str, str]) -> tuple[str, StorageIdentity | None]:
    prefix = "SCANGW_STORAGE__"
    parts = {k[len(prefix) :].lower(): v.strip() for k, v in env.items() if k.startswith(prefix) and v.strip()}
    direct = _text(env, "SCANGW_STORAGE")
    if parts:
        missing = [n for n in ("blobserviceuri", "queueserviceuri", "tableserviceuri") if n not in parts]
        if missing:
            names = ", ".join(f"{prefix}{m.replace('serviceuri', 'ServiceUri')}" for m in missing)
            raise ConfigError(prefix + "*", f"identity-based storage also needs {names}.")
        credential = parts.get("credential", "managedidentity")
        if credential.lower() != "managedidentity":
            raise ConfigError(prefix + "credential", f"'{credential}' is not supported; use managedidentity.")
        identity = StorageIdentity(
            blob_uri=parts["blobserviceuri"].rstrip("/"),
            queue_uri=parts["queueserviceuri"].rstrip("/"),
            table_uri=parts["tableserviceuri"].rstrip("/"),
            client_id=parts.get("clientid"),
        )
        return direct or "", identity
    if direct is None:
        return f"local:{default_data_dir(env)}", None
    if direct.startswith("local:"):
        return direct, None
    if "=" not in direct or ("AccountName=" not in direct and "UseDevelopmentStorage" not in direct):
        raise ConfigError(
            "SCANGW_STORAGE", "use local:<dir> for the embedded spool or an Azure Storage connection string."
        )
    return direct, None


def _graph_url(env: Mapping[str, str], cloud: str) -> str:
    raw = _text(env, "SCANGW_GRAPH_URL")
    if raw is None:
        return GRAPH_HOSTS[cloud]
    url = raw.rstrip("/")
    scheme, _, rest = url.partition("://")
    if scheme not in {"http", "https"} or not rest or "/" in rest:
        raise ConfigError("SCANGW_GRAPH_URL", f"'{raw}' must be scheme://host[:port] with no path.")
    return url


def _public_url(env: Mapping[str, str]) -> str | None:
    raw = _text(env, "SCANGW_PUBLIC_URL")
    if raw is None:
        return None
    url = raw.rstrip("/")
    scheme, _, rest = url.partition("://")
    if scheme not in {"http", "https"} or not rest or rest.startswith("/") or any(c in rest for c in "?# "):
        raise ConfigError(
            "SCANGW_PUBLIC_URL",
            f"'{raw}' must be the address recipients reach `scangw http` at, like https://scan.contoso.com.",
        )
    return url


def _cidrs(env: Mapping[str, str]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    raw = _text(env, "SCANGW_SMTP_PROXY_CIDRS") or ""
    nets = []
    for item in raw.replace(";", ",").split(","):
        if item.strip():
            try:
                nets.append(ipaddress.ip_network(item.strip(), strict=False))
            except ValueError:
                raise ConfigError(
                    "SCANGW_SMTP_PROXY_CIDRS", f"'{item.strip()}' is not a CIDR like 10.0.0.0/23."
                ) from None
    return tuple(nets)


def _self_signed_hosts(env: Mapping[str, str]) -> tuple[str, ...]:
    raw = _text(env, "SCANGW_SMTP_TLS_SELF_SIGNED")
    if raw is None:
        return ()
    from gateway.intake.self_signed import parse_hosts  # only when set: `cryptography` is a heavy import

    try:
        return parse_hosts(raw)
    except ValueError as exc:
        raise ConfigError(
            "SCANGW_SMTP_TLS_SELF_SIGNED", f"{exc}; list the door's host names, like smtp.contoso.com,10.0.0.5."
        ) from None


def load_settings(env: Mapping[str, str]) -> Settings:
    """Validate every setting at once so a misconfiguration is reported at start, not at the first scan."""
    storage, identity = _storage(env)
    cloud = (_text(env, "SCANGW_CLOUD") or "public").lower()
    if cloud not in GRAPH_HOSTS:
        raise ConfigError("SCANGW_CLOUD", f"'{cloud}' is unknown; use one of {', '.join(GRAPH_HOSTS)}.")
    cert = _text(env, "SCANGW_SMTP_TLS_CERT")
    key = _text(env, "SCANGW_SMTP_TLS_KEY")
    if bool(cert) != bool(key):
        missing = "SCANGW_SMTP_TLS_KEY" if cert else "SCANGW_SMTP_TLS_CERT"
        raise ConfigError(missing, "TLS needs both a certificate and its key (PEM files).")
    for name, value in (("SCANGW_SMTP_TLS_CERT", cert), ("SCANGW_SMTP_TLS_KEY", key)):
        if value and not Path(value).is_file():
            raise ConfigError(name, f"no file at {value}.")
    self_signed = _self_signed_hosts(env)
    outbox = _text(env, "SCANGW_OUTBOX")
    link_hours = _number(env, "SCANGW_LINK_HOURS", 0, 0, 168)
    public_url = _public_url(env)
    if link_hours > 0 and public_url is None and identity is None and storage.startswith("local:") and not outbox:
        raise ConfigError(
            "SCANGW_PUBLIC_URL",
            "SCANGW_LINK_HOURS with the embedded spool serves links from `scangw http`: set its public address, "
            "like https://scan.contoso.com (or SCANGW_LINK_HOURS=0).",
        )
    return Settings(
        storage=storage,
        storage_identity=identity,
        sender=_address(env, "SCANGW_SENDER"),
        cloud=cloud,
        graph_url=_graph_url(env, cloud),
        outbox=Path(outbox) if outbox else None,
        max_message_bytes=int(_number(env, "SCANGW_MAX_MESSAGE_MB", 35, 1, 150) * MIB),
        admin_email=_address(env, "SCANGW_ADMIN_EMAIL"),
        smtp_tls_cert=Path(cert) if cert else None,
        smtp_tls_key=Path(key) if key else None,
        smtp_tls_self_signed=self_signed,
        smtp_require_tls_auth=_flag(env, "SCANGW_SMTP_REQUIRE_TLS_AUTH", default=bool(cert or self_signed)),
        smtp_proxy_cidrs=_cidrs(env),
        smtp_legacy_tls=_flag(env, "SCANGW_SMTP_LEGACY_TLS", default=False),
        smtp_max_connections=int(_number(env, "SCANGW_SMTP_MAX_CONNECTIONS", 1000, 1, 100000)),
        smtp_max_per_address=int(_number(env, "SCANGW_SMTP_MAX_PER_ADDRESS", 50, 1, 100000)),
        smtp_login_seconds=_number(env, "SCANGW_SMTP_LOGIN_SECONDS", 60, 5, 3600),
        mailbox_rate_per_min=int(_number(env, "SCANGW_MAILBOX_RATE_PER_MIN", 30, 0)),
        max_attempts=int(_number(env, "SCANGW_MAX_ATTEMPTS", 50, 1)),
        max_age_hours=_number(env, "SCANGW_MAX_AGE_HOURS", 24, 0.01),
        retry_base_seconds=_number(env, "SCANGW_RETRY_BASE_SECONDS", 15, 0.1, 3600),
        send_grace_seconds=_number(env, "SCANGW_SEND_GRACE_SECONDS", 300, 0, 86400),
        http_stop_seconds=_number(env, "SCANGW_HTTP_STOP_SECONDS", 30, 0, 3600),
        partial_wait_minutes=_number(env, "SCANGW_PARTIAL_WAIT_MINUTES", 30, 0),
        link_hours=link_hours,
        public_url=public_url,
        keep_sent_hours=_number(env, "SCANGW_KEEP_SENT_HOURS", 0, 0),
        keep_failed_days=_number(env, "SCANGW_KEEP_FAILED_DAYS", 7, 0),
        keep_jobs_days=_number(env, "SCANGW_KEEP_JOBS_DAYS", 30, 0),
        azure_client_id=_text(env, "AZURE_CLIENT_ID"),
        appinsights_connection_string=_text(env, "APPLICATIONINSIGHTS_CONNECTION_STRING"),
        log_format=_log_format(env),
        max_recipients=int(_number(env, "SCANGW_MAX_RECIPIENTS", 100, 1, 500)),
        max_files=int(_number(env, "SCANGW_MAX_FILES", 500, 1, 500)),
        auth_failures=int(_number(env, "SCANGW_AUTH_FAILURES", 5, 1, 1000)),
        auth_window_seconds=_number(env, "SCANGW_AUTH_WINDOW_SECONDS", 60, 1, 86400),
        auth_user_failures=int(_number(env, "SCANGW_AUTH_USER_FAILURES", 50, 1, 100000)),
        auth_user_window_seconds=_number(env, "SCANGW_AUTH_USER_WINDOW_SECONDS", 900, 1, 86400),
        smtp_idle_timeout_seconds=_number(env, "SCANGW_SMTP_IDLE_TIMEOUT_SECONDS", 300, 5, 3600),
        http_timeout_seconds=_number(env, "SCANGW_HTTP_TIMEOUT_SECONDS", 60, 1, 3600),
    )


def _log_format(env: Mapping[str, str]) -> str:
    value = (_text(env, "SCANGW_LOG_FORMAT") or "text").lower()
    if value not in {"text", "json"}:
        raise ConfigError("SCANGW_LOG_FORMAT", f"'{value}' is unknown; use text or json.")
    return value
