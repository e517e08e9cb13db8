"""The bad-input corpus (issue 9, Tests): a few hundred generated SMTP dialogues, MIME messages and HTTP requests
(truncated, wrong boundaries, deep nesting, enormous headers, invalid encodings, NUL bytes, overlong lines,
absurd parameters) thrown at the real `scangw smtp`, `scangw http` and `scangw worker` processes on loopback.

Each case must end in a clear answer (an SMTP reply or an HTTP status a device can act on, never a traceback
or a 500); afterwards no process has died, memory stayed bounded, every acknowledged scan reaches a final job
state, and nothing is half-stored (no bytes without a job, no job without its bytes)."""

from __future__ import annotations

import base64
import json
import os
import random
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import pytest

from tests.support import ROOT, free_port, gateway_process, poll, run, scangw, services_for

SEED = int(os.environ.get("SCANGW_CORPUS_SEED", "9"))
#: A dialogue line starting with this is sent as is, and then the client vanishes (no reply awaited).
CUT = b"\x00CUT\x00"
#: Growth of a door's resident memory over the whole corpus that still counts as bounded.
MEMORY_BOUND = 150 * 1024 * 1024


@dataclass
class Stack:
    tmp: Path
    env: dict[str, str]
    smtp: tuple[str, int]
    http: str
    password: str
    procs: dict[str, subprocess.Popen[str]]
    accepted: list[str] = field(default_factory=list)

    def auth(self) -> str:
        return base64.b64encode(f"\0mfp1\0{self.password}".encode()).decode()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("corpus")
    env = {
        "SCANGW_STORAGE": f"local:{tmp / 'spool'}",
        "SCANGW_OUTBOX": str(tmp / "outbox"),
        "SCANGW_MAX_MESSAGE_MB": "3",
        "SCANGW_SENDER": "scanner@contoso.com",
        "SCANGW_PARTIAL_WAIT_MINUTES": "0",
        "SCANGW_HTTP_TIMEOUT_SECONDS": "3",
    }
    added = scangw("devices", "add", "mfp1", "--allow-to", "*@contoso.com", "--json", env=env)
    assert added.returncode == 0, added.stderr
    smtp_port, http_port = free_port(), free_port()
    http = f"http://127.0.0.1:{http_port}"
    with (
        gateway_process("http", "--listen", f"127.0.0.1:{http_port}", env=env, health_url=f"{http}/api/health") as h,
        gateway_process("smtp", "--listen", f"127.0.0.1:{smtp_port}", env=env) as s,
    ):
        poll(lambda: _connects(smtp_port), timeout=30, what="the SMTP door to listen")
        yield Stack(
            tmp, env, ("127.0.0.1", smtp_port), http, json.loads(added.stdout)["password"], {"http": h, "smtp": s}
        )


def _connects(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


# -- generators ------------------------------------------------------------------------------------------------


def mime_cases(rng: random.Random) -> list[tuple[str, bytes]]:
    """Messages a broken or hostile device might send after a good login: (name, DATA bytes without the dot)."""
    pdf = b"%PDF-1.4\n" + bytes(rng.randrange(256) for _ in range(300))
    b64 = base64.encodebytes(pdf).replace(b"\n", b"\r\n")
    cases: list[tuple[str, bytes]] = []

    def multipart(boundary: bytes, parts: list[bytes], close: bool = True, declared: bytes | None = None) -> bytes:
        head = (
            b'Subject: corpus\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="'
            + (declared if declared is not None else boundary)
            + b'"\r\n\r\n'
        )
        body = b"".join(b"--" + boundary + b"\r\n" + p + b"\r\n" for p in parts)
        return head + body + (b"--" + boundary + b"--\r\n" if close else b"")

    attachment = (
        b'Content-Type: application/pdf\r\nContent-Disposition: attachment; filename="s.pdf"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
        + b64
    )
    text = b"Content-Type: text/plain\r\n\r\nhello"
    for i in range(8):
        cases.append((f"good-{i}", multipart(b"b" + str(i).encode(), [text, attachment])))
        cases.append(
            (f"wrong-boundary-{i}", multipart(b"real", [text, attachment], declared=b"other" + str(i).encode()))
        )
        cases.append((f"unclosed-{i}", multipart(b"u", [text, attachment], close=False)))
        cases.append((f"truncated-b64-{i}", multipart(b"t", [attachment[: rng.randrange(60, len(attachment))]])))
    for depth in (5, 50, 200, 1000):
        nested = text
        for level in range(depth):
            nested = (
                b'Content-Type: multipart/mixed; boundary="n'
                + str(level).encode()
                + b'"\r\n\r\n--n'
                + str(level).encode()
                + b"\r\n"
                + nested
                + b"\r\n--n"
                + str(level).encode()
                + b"--"
            )
        cases.append((f"nesting-{depth}", b"Subject: deep\r\nMIME-Version: 1.0\r\n" + nested + b"\r\n"))
    for size in (10_000, 200_000, 300_000):
        cases.append((f"huge-header-{size}", b"Subject: big\r\nX-Junk: " + b"a" * size + b"\r\n\r\nbody\r\n"))
        folded = b"".join(b" w" + str(n).encode() + b"\r\n" for n in range(size // 10))
        cases.append((f"folded-header-{size}", b"Subject: fold\r\nX-Fold:\r\n" + folded + b"\r\nbody\r\n"))
    for n in range(6):
        cases.append((f"nul-{n}", b"Subject: n\x00ul\r\nFrom: a\x00@contoso.com\r\n\r\n\x00" * (n + 1)))
        cases.append((f"overlong-line-{n}", b"Subject: long\r\n\r\n" + b"x" * (100_000 * (n + 1)) + b"\r\n"))
        cases.append((f"bare-lf-{n}", b"Subject: lf\n\nline\n" * (n + 1)))
    for charset in (b"x-bogus", b"utf-7", b"iso-2022-jp", b"utf-8\x00", b""):
        cases.append(
            (
                f"charset-{charset!r}",
                b"Subject: =?"
                + charset
                + b'?q?caf=C3=A9?=\r\nContent-Type: text/plain; charset="'
                + charset
                + b'"\r\n\r\n\xff\xfe body\r\n',
            )
        )
    for encoding in (b"base64", b"quoted-printable", b"x-uuencode", b"8bit", b"b\x00ase64"):
        cases.append(
            (
                f"cte-{encoding!r}",
                b"Subject: e\r\nContent-Type: application/pdf; name=a.pdf\r\nContent-Transfer-Encoding: "
                + encoding
                + b"\r\n\r\n=ZZ!!@@==\r\n%%%\r\n",
            )
        )
    absurd = [
        b'Content-Type: application/pdf; name*0="a"; name*99999999999="b"',
        b"Content-Type: application/pdf; " + b"; ".join(b"p%d=v" % k for k in range(3000)),
        b"Content-Disposition: attachment; filename*=utf-8''%ZZ%C3",
        b'Content-Disposition: attachment; filename="=?utf-8?q?a=0D=0ABcc:_x@evil.example?=.pdf"',
        b'Content-Type: message/partial; id="x"; number=1; total=1000000000000',
        b'Content-Type: message/partial; id="x"; number=\xd9\xa1; total=3',
        b"Content-Type: text/plain; charset=" + b"x" * 5000,
        b"Content-Type: /",
        b"Content-Type: multipart/mixed",
        b'Content-Type: multipart/mixed; boundary=""',
    ]
    for k, header in enumerate(absurd):
        cases.append((f"absurd-param-{k}", b"Subject: p\r\n" + header + b"\r\n\r\nQUJD\r\n"))
    for k in range(10):  # random bytes, sometimes with a plausible header block first
        junk = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 5000))).replace(b"\r\n.\r\n", b"")
        cases.append((f"random-{k}", (b"Subject: r\r\n\r\n" if k % 2 else b"") + junk))
    return cases


def smtp_dialogues(rng: random.Random, stack: Stack) -> list[tuple[str, list[bytes]]]:
    """Raw dialogues (lines sent one after another), most of them before or around AUTH."""
    auth = stack.auth().encode()
    d: list[tuple[str, list[bytes]]] = [
        ("nul-in-ehlo", [b"EHLO a\x00b"]),
        ("ehlo-600", [b"EHLO " + b"h" * 600]),
        ("line-70000", [b"EHLO " + b"h" * 70_000]),
        ("binary-junk", [bytes(rng.randrange(256) for _ in range(300))]),
        ("mail-before-helo", [b"MAIL FROM:<a@b.c>"]),
        ("rcpt-before-mail", [b"EHLO x", b"AUTH PLAIN " + auth, b"RCPT TO:<a@contoso.com>"]),
        ("data-before-rcpt", [b"EHLO x", b"AUTH PLAIN " + auth, b"MAIL FROM:<>", b"DATA"]),
        ("size-absurd", [b"EHLO x", b"AUTH PLAIN " + auth, b"MAIL FROM:<a@b.c> SIZE=99999999999999999999999"]),
        ("size-negative", [b"EHLO x", b"AUTH PLAIN " + auth, b"MAIL FROM:<a@b.c> SIZE=-1"]),
        ("auth-not-base64", [b"EHLO x", b"AUTH PLAIN !!!!"]),
        ("auth-unknown-mech", [b"EHLO x", b"AUTH CRAM-MD5"]),
        ("auth-plain-no-nul", [b"EHLO x", b"AUTH PLAIN " + base64.b64encode(b"justtext")]),
        ("auth-login-cancel", [b"EHLO x", b"AUTH LOGIN", b"*"]),
        ("auth-huge", [b"EHLO x", b"AUTH PLAIN " + base64.b64encode(b"\0u\0" + b"p" * 30_000)]),
        ("starttls-unoffered", [b"EHLO x", b"STARTTLS"]),
        ("vrfy-expn", [b"EHLO x", b"VRFY root", b"EXPN all"]),
        ("pipelined-junk", [b"EHLO x\r\nNOOP\r\nNOOP\r\nFOO BAR\r\nRSET"]),
    ]
    for k in range(20):
        rcpt = rng.choice(
            [
                b"<a\x01b@contoso.com>",
                b"<" + b"a" * rng.randrange(60, 400) + b"@contoso.com>",
                b"<a@contoso.com> NOTIFY=" + b"X" * rng.randrange(1, 2000),
                b"<>",
                b"<@relay:a@contoso.com>",
                b"<a@[127.0.0.1]>",
                b'<"a b"@contoso.com>',
                b"a@contoso.com",
                b"<a@evil.example>",
                b"<a@contoso.com",
            ]
        )
        d.append((f"rcpt-{k}", [b"EHLO x", b"AUTH PLAIN " + auth, b"MAIL FROM:<a@b.c>", b"RCPT TO:" + rcpt]))
    for k in range(8):
        cut = rng.randrange(1, 400)
        d.append(
            (
                f"truncated-data-{k}",
                [
                    b"EHLO x",
                    b"AUTH PLAIN " + auth,
                    b"MAIL FROM:<>",
                    b"RCPT TO:<a@contoso.com>",
                    b"DATA",
                    CUT + b"Subject: cut\r\n\r\n" + b"z" * cut,
                ],
            )
        )
    for k in range(5):
        d.append((f"guess-{k}", [b"EHLO x", b"AUTH PLAIN " + base64.b64encode(f"\0nobody{k}\0x".encode())]))
    return d


def http_cases(rng: random.Random, stack: Stack) -> list[tuple[str, Callable[[httpx.Client], httpx.Response]]]:
    good = ("mfp1", stack.password)
    cases: list[tuple[str, Callable[[httpx.Client], httpx.Response]]] = []

    def put(name: str, **kw: object) -> Callable[[httpx.Client], httpx.Response]:
        return lambda c: c.put(f"/api/scans/{name}", auth=good, **kw)  # type: ignore[arg-type]

    for k, name in enumerate(
        [
            "..%2F..%2Fetc%2Fpasswd",
            "%00.pdf",
            "a%0D%0ABcc:x.pdf",
            "%E2%80%AEfdp.exe",
            "x" * 3000 + ".pdf",
            "%C3%28.pdf",
            "CON",
            ".",
        ]
    ):
        cases.append((f"put-name-{k}", put(name, params={"to": "a@contoso.com"}, content=b"%PDF")))
    for k, to in enumerate(
        ["", "a\x00@contoso.com", "a@contoso.com,b@contoso.com", "<a@contoso.com>", "x" * 10_000, "a@evil.example"]
    ):
        cases.append((f"put-to-{k}", put("a.pdf", params={"to": to}, content=b"%PDF")))
    for k, subject in enumerate(["\r\nBcc: x@evil.example", "=?utf-8?q?=0D=0A?=", "\x1b[31mred", "s" * 20_000]):
        cases.append(
            (f"put-subject-{k}", put("a.pdf", params={"to": "a@contoso.com", "subject": subject}, content=b"%PDF"))
        )
    for k, header in enumerate(
        [
            "Basic",
            "Basic !!!",
            "Basic " + base64.b64encode(b"\xff\xfe:x").decode(),
            "Bearer x",
            "Basic " + "A" * 8000,
            "Digest a=b",
        ]
    ):
        cases.append((f"auth-{k}", lambda c, h=header: c.get("/api/scans/x", headers={"authorization": h})))
    for k, ctype in enumerate(
        [
            "multipart/form-data",
            "multipart/form-data; boundary=",
            "multipart/form-data; boundary=" + "b" * 5000,
            "multipart/mixed; boundary=b",
            "text/plain",
            'multipart/form-data; boundary="b;c"',
        ]
    ):
        body = b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.pdf"\r\n\r\n%PDF\r\n--b--\r\n'
        cases.append(
            (
                f"post-ctype-{k}",
                lambda c, t=ctype, b=body: c.post("/api/scans", auth=good, content=b, headers={"content-type": t}),
            )
        )
    bodies = [
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.pdf"\r\n\r\n%PDF',  # truncated
        b"--b\r\n\r\n%PDF\r\n--b--\r\n",
        b'--x\r\nContent-Disposition: form-data; name="file"\r\n\r\n%PDF\r\n--x--\r\n',  # wrong boundary
        b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename*=utf-8''%FF%FE.pdf\r\n\r\n%PDF\r\n--b--\r\n",
        b'--b\r\nContent-Disposition: form-data; na\x00me="file"\r\n\r\n%PDF\r\n--b--\r\n',
        b'--b\r\nContent-Disposition: form-data; name="to"\r\n\r\n' + b"a@contoso.com," * 200 + b"\r\n--b--\r\n",
        b"--b\r\nX-Big: " + b"h" * 100_000 + b"\r\n\r\n%PDF\r\n--b--\r\n",
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.pdf"\r\nContent-Type: application/pdf; x="\r\n\r\n%PDF\r\n--b--\r\n',
        b"--b--\r\n",
        b"",
    ]
    for k, body in enumerate(bodies):
        cases.append(
            (
                f"post-body-{k}",
                lambda c, b=body: c.post(
                    "/api/scans", auth=good, content=b, headers={"content-type": "multipart/form-data; boundary=b"}
                ),
            )
        )
    for k in range(10):
        junk = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 3000)))
        cases.append(
            (
                f"post-random-{k}",
                lambda c, b=junk: c.post(
                    "/api/scans", auth=good, content=b, headers={"content-type": "multipart/form-data; boundary=b"}
                ),
            )
        )
    for k, method in enumerate(["PROPFIND", "MKCOL", "OPTIONS", "HEAD", "DELETE", "PATCH", "TRACE"]):
        cases.append((f"method-{k}", lambda c, m=method: c.request(m, "/api/scans/a%00b/", auth=good)))
    for k, path in enumerate(
        [
            "/api/links/\u00e9\u00e9",
            "/api/links/v1.AAAA.BBBB",
            "/api/scans/" + "9" * 5000,
            "/api/scans/%FF",
            "/api/%2e%2e/x",
        ]
    ):
        cases.append((f"path-{k}", lambda c, p=path: c.get(p, auth=good)))
    cases.append(("put-too-big", put("big.pdf", params={"to": "a@contoso.com"}, content=b"x" * (4 * 1024 * 1024))))
    cases.append(("put-empty", put("empty.pdf", params={"to": "a@contoso.com"}, content=b"")))
    return cases


# -- running them ----------------------------------------------------------------------------------------------


def talk(address: tuple[str, int], lines: list[bytes], data: bytes | None = None) -> list[bytes]:
    """Send each line (and optionally DATA content plus the dot), collect every reply; tolerate a closed door."""
    replies: list[bytes] = []
    with socket.create_connection(address, timeout=30) as sock:
        reader = sock.makefile("rb")

        def reply() -> bytes:
            text = b""
            while True:
                line = reader.readline(100_000)
                if not line:
                    return text
                text += line
                if line[3:4] != b"-":
                    return text

        replies.append(reply())
        try:
            for line in lines:
                if line.startswith(CUT):
                    sock.sendall(line[len(CUT) :])
                    return replies  # the client vanishes mid-DATA
                sock.sendall(line + b"\r\n")
                replies.append(reply())
            if data is not None:
                sock.sendall(data + b"\r\n.\r\n")
                replies.append(reply())
                sock.sendall(b"QUIT\r\n")
        except OSError:
            replies.append(b"")  # the door closed the connection: an answer too
    return replies


def clear(reply: bytes) -> bool:
    """An SMTP reply a device can act on: a code and text, ASCII, no traceback; or the door closed."""
    if reply == b"":
        return True
    return reply[:3].isdigit() and reply.isascii() and b"Traceback" not in reply and len(reply) < 4096


def rss(proc: subprocess.Popen[str]) -> int:
    return int(psutil.Process(proc.pid).memory_info().rss)


def test_the_corpus_ends_in_clear_answers_and_leaves_nothing_half_stored(stack: Stack) -> None:
    rng = random.Random(SEED)
    start_rss = {name: rss(p) for name, p in stack.procs.items()}
    count = 0

    # A first good login from this address makes it the device's usual one (the spray cases below then only
    # lock out unknown names, as for an office behind one NAT).
    assert talk(stack.smtp, [b"EHLO x", b"AUTH PLAIN " + stack.auth().encode()])[-1].startswith(b"235")

    for name, lines in smtp_dialogues(rng, stack):
        replies = talk(stack.smtp, lines)
        assert all(clear(r) for r in replies), (name, replies)
        count += 1

    login = [
        b"EHLO x",
        b"AUTH PLAIN " + stack.auth().encode(),
        b"MAIL FROM:<scanner@printer.local>",
        b"RCPT TO:<a@contoso.com>",
        b"DATA",
    ]
    for name, message in mime_cases(rng):
        replies = talk(stack.smtp, login, message)
        final = replies[-1]
        assert clear(final) and final[:1] in (b"2", b"4", b"5"), (name, replies[-2:])
        if final.startswith(b"250 2.0.0"):
            stack.accepted.append(final.rsplit(b" ", 1)[1].decode().strip())
        count += 1

    with httpx.Client(base_url=stack.http, timeout=30) as client:
        for name, request in http_cases(rng, stack):
            r = request(client)
            assert r.status_code < 500 or r.status_code == 503, (name, r.status_code, r.text[:300])
            assert "Traceback" not in r.text, name
            routed = r.text not in ("Not Found", "Method Not Allowed")  # the router's own answer off our routes
            if r.status_code >= 400 and r.request.method != "HEAD" and routed:
                assert r.json()["error"]["message"], name
            if r.status_code == 202:
                stack.accepted.append(r.json()["id"])
            count += 1

    assert count >= 200, count
    for name, proc in stack.procs.items():
        assert proc.poll() is None, f"scangw {name} died"
        assert rss(proc) - start_rss[name] < MEMORY_BOUND, (name, start_rss[name], rss(proc))

    # Deliver everything: each acknowledged scan ends sent or failed with a reason; no job without its bytes,
    # no bytes without their job.
    worker = subprocess.run(
        [sys.executable, "-m", "gateway", "worker", "--once"],
        env={**os.environ, **stack.env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert worker.returncode == 0, worker.stderr[-3000:]
    assert "Traceback" not in worker.stderr, worker.stderr[worker.stderr.find("Traceback") - 300 :][:4000]

    async def look() -> tuple[dict[str, tuple[str, str | None]], list[str]]:
        svc = await services_for(stack.tmp)
        try:
            jobs = {j.id: (j.state.value, j.error) for j in await svc.jobs.list()}
            return jobs, await svc.spool.blobs.list("")
        finally:
            await svc.close()

    jobs, blobs = run(look())
    assert set(stack.accepted) <= set(jobs), set(stack.accepted) - set(jobs)
    assert all(state in ("sent", "failed") for state, _ in jobs.values()), jobs
    assert all(error for state, error in jobs.values() if state == "failed")
    owners = {b.split("/", 1)[0] for b in blobs if not b.startswith(("partial/", "."))}
    assert owners <= set(jobs), owners - set(jobs)
    sent = sum(1 for state, _ in jobs.values() if state == "sent")
    assert len(list((stack.tmp / "outbox").glob("*.eml"))) >= sent - 1  # each sent job wrote its message
