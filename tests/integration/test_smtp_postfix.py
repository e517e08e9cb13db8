"""A real Postfix relaying to the SMTP door, configured exactly as README's "Relay in front of the gateway" says:
SASL with `noanonymous`, STARTTLS (`encrypt`) or port 465 (`smtp_tls_wrappermode`), UTF-8 mail flagged SMTPUTF8,
a `552` bounced rather than retried, and `devices rotate` followed by a map update and `postqueue -f`.

The Postfix is a private instance in a temporary folder (its own config_directory and queue_directory, listening
on a loopback port, relaying only to the door on loopback); the system's Postfix configuration is never read for
settings nor touched, and nothing is sent anywhere else. Skipped, with the reason, where Postfix is not installed
or cannot be started (its master must start as root).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import smtplib
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.test_smtp_harness import USER, Pki, make_pki, running_smtp
from tests.support import free_port

POSTFIX = shutil.which("postfix") or ("/usr/sbin/postfix" if Path("/usr/sbin/postfix").exists() else None)
SBIN = Path(POSTFIX).parent if POSTFIX else Path("/usr/sbin")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(POSTFIX is None, reason="Postfix not installed (apt-get install postfix libsasl2-modules)"),
    pytest.mark.skipif(os.geteuid() != 0, reason="a private Postfix instance's master must start as root"),
]

MASTER_CF = """\
{listen} inet n - n - - smtpd
pickup    unix n - n 60 1 pickup
cleanup   unix n - n - 0 cleanup
qmgr      unix n - n 300 1 qmgr
tlsmgr    unix - - n 1000? 1 tlsmgr
rewrite   unix - - n - - trivial-rewrite
bounce    unix - - n - 0 bounce
defer     unix - - n - 0 bounce
trace     unix - - n - 0 bounce
verify    unix - - n - 1 verify
flush     unix n - n 1000? 0 flush
proxymap  unix - - n - - proxymap
smtp      unix - - n - - smtp
relay     unix - - n - - smtp
showq     unix n - n - - showq
error     unix - - n - - error
retry     unix - - n - - error
discard   unix - - n - - discard
anvil     unix - - n - 1 anvil
scache    unix - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
"""

#: A scan as a relay receives it from a scanner: raw UTF-8 in the subject and the scanning user's name.
UTF8_SCAN = (
    "From: Jürgen Müller <jmueller@contoso.com>\r\nTo: alice@contoso.com, bob@contoso.com\r\n"
    "Subject: Größe prüfen\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
    "Content-Transfer-Encoding: 8bit\r\n\r\nGrüße vom Scanner\r\n"
).encode()


@dataclass
class Postfix:
    """A private Postfix: submit to `port` on 127.0.0.1, it relays to the gateway."""

    folder: Path
    port: int

    @property
    def etc(self) -> Path:
        return self.folder / "etc"

    def run(self, *command: str, check: bool = True) -> str:
        result = subprocess.run(
            [str(SBIN / command[0]), "-c", str(self.etc), *command[1:]],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed: {result.stdout}{result.stderr}{self.log()[-2000:]}")
        return result.stdout

    def log(self) -> str:
        path = self.folder / "maillog"
        return path.read_text(errors="replace") if path.exists() else ""

    def set_password(self, password: str, gateway: tuple[str, int]) -> None:
        """The README's map: one line per relayhost, then `postmap`."""
        maps = self.etc / "sasl_passwd"
        maps.write_text(f"[{gateway[0]}]:{gateway[1]} {USER}:{password}\n")
        maps.chmod(0o600)
        self.run("postmap", f"hash:{maps}")

    def queue(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.run("postqueue", "-j").splitlines() if line.strip()]

    def submit(self, message: bytes, to: list[str], utf8: bool = True) -> None:
        with smtplib.SMTP("127.0.0.1", self.port, timeout=30) as client:
            client.sendmail(
                "scanner@office.test", to, message, mail_options=["SMTPUTF8", "BODY=8BITMIME"] if utf8 else []
            )


def _master_pid(folder: Path) -> int | None:
    try:
        return int((folder / "queue" / "pid" / "master.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError):  # a zombie (exited, not yet reaped) counts as gone
        if Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z":
            return False
    return True


@contextlib.contextmanager
def private_postfix(gateway: tuple[str, int], password: str, ca: Path, *, implicit_tls: bool) -> Iterator[Postfix]:
    folder = Path(tempfile.mkdtemp(prefix="scangw-pf-"))  # short: unix socket paths are limited to 107 bytes
    folder.chmod(0o755)
    postfix = Postfix(folder, free_port())
    postfix.etc.mkdir()
    (folder / "queue").mkdir()
    (folder / "data").mkdir()
    shutil.chown(folder / "data", "postfix")
    shutil.copy(ca, postfix.etc / "gateway-ca.pem")
    main_cf = f"""\
compatibility_level = 3.6
queue_directory = {folder}/queue
data_directory = {folder}/data
maillog_file = {folder}/maillog
maillog_file_prefixes = {folder}
myhostname = relay.office.test
mydomain = office.test
myorigin = office.test
mydestination = office.test
local_recipient_maps =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
smtputf8_enable = yes
# --- README "Relay in front of the gateway" ---
relayhost = [{gateway[0]}]:{gateway[1]}
smtp_sasl_auth_enable = yes
smtp_sasl_password_maps = hash:{postfix.etc}/sasl_passwd
smtp_sasl_security_options = noanonymous
smtp_tls_security_level = encrypt
smtp_tls_wrappermode = {"yes" if implicit_tls else "no"}
smtp_tls_CAfile = {postfix.etc}/gateway-ca.pem
message_size_limit = 52428800
# README: bounces for the office's own senders are delivered on the relay, never relayed to the gateway
# (a null-sender notice there would be refused and become a double bounce); a test drops them.
local_transport = discard:delivered locally
"""
    (postfix.etc / "main.cf").write_text(main_cf)
    (postfix.etc / "master.cf").write_text(MASTER_CF.format(listen=f"127.0.0.1:{postfix.port}"))
    postfix.set_password(password, gateway)
    try:
        try:
            postfix.run("postfix", "start")
        except RuntimeError as exc:
            pytest.skip(f"cannot start a private Postfix here: {exc}")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                smtplib.SMTP("127.0.0.1", postfix.port, timeout=5).quit()
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"the private Postfix did not listen: {postfix.log()[-2000:]}")
        yield postfix
    finally:
        pid = _master_pid(folder)
        postfix.run("postfix", "stop", check=False)
        deadline = time.monotonic() + 15
        while pid is not None and _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if pid is not None and _alive(pid):
            postfix.run("postfix", "abort", check=False)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)  # only the master this test started, by its pid
        shutil.rmtree(folder, ignore_errors=True)


def poll(predicate: Callable[[], bool], what: str, postfix: Postfix, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    pytest.fail(f"{what} within {timeout:g} s; Postfix log:\n{postfix.log()[-3000:]}")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.mark.parametrize("implicit_tls", [False, True], ids=["starttls-587", "wrappermode-465"])
def test_postfix_relays_utf8_mail_through_the_gateway(tmp_path: Path, pki: Pki, implicit_tls: bool) -> None:
    with running_smtp(tmp_path, pki.env(SCANGW_MAX_MESSAGE_MB="1"), implicit=1) as run:
        gateway = run.implicit if implicit_tls else run.plain
        with private_postfix(gateway, run.password, pki.ca, implicit_tls=implicit_tls) as postfix:
            postfix.submit(UTF8_SCAN, ["alice@contoso.com", "bob@contoso.com"])
            poll(lambda: len(run.jobs()) == 1, "the relayed scan was not queued by the gateway", postfix)
            [job] = run.jobs()
            assert set(job.to) == {"alice@contoso.com", "bob@contoso.com"}
            stored = run.message(job)
            assert "Subject: Größe prüfen".encode() in stored and "Grüße vom Scanner".encode() in stored
            poll(lambda: "status=sent" in postfix.log(), "Postfix did not log the delivery", postfix)
            assert "250 2.0.0 Ok: queued as" in postfix.log()

            # Over the gateway's size limit: Postfix sends SIZE=, reads 552 and bounces (no retries for days).
            postfix.submit(b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * 1200, ["alice@contoso.com"], utf8=False)
            poll(lambda: "status=bounced" in postfix.log(), "Postfix did not bounce the oversize scan", postfix)
            bounced = [line for line in postfix.log().splitlines() if "status=bounced" in line]
            assert len(bounced) == 1 and "dsn=5.3.4" in bounced[0], bounced  # from the SIZE the door advertises
            poll(lambda: "status=sent (delivered locally)" in postfix.log(), "the bounce was not kept local", postfix)
            assert len(run.jobs()) == 1


def test_after_devices_rotate_postfix_holds_mail_until_the_map_is_updated(tmp_path: Path, pki: Pki) -> None:
    with running_smtp(tmp_path, pki.env(), implicit=1) as run:
        with private_postfix(run.plain, run.password, pki.ca, implicit_tls=False) as postfix:
            _, new_password = run.call(run.services.registry.rotate(USER))
            postfix.submit(UTF8_SCAN, ["alice@contoso.com"])

            def deferred() -> bool:
                return any(
                    "535" in str(r.get("delay_reason", ""))
                    for item in postfix.queue()
                    for r in item.get("recipients", [])  # type: ignore[union-attr]
                )

            poll(deferred, "Postfix did not hold the scan after the 535", postfix)
            assert run.jobs() == []
            postfix.set_password(new_password, run.plain)  # README: update the map, then flush the queue
            postfix.run("postqueue", "-f")
            poll(lambda: len(run.jobs()) == 1, "the held scan was not delivered after postqueue -f", postfix)
            poll(lambda: postfix.queue() == [], "the Postfix queue did not empty", postfix)
