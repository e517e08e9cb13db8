"""Both doors through the failed-login limiter (issue 15), in process and fast, with an injected clock and several
client addresses: the SMTP door on loopback, connecting from 127.0.0.2, .3, ... (Linux routes all of 127/8 to
lo), and the HTTP app through httpx's ASGI transport with any client address, or none (the Function host).

Each case asserts what the device sees: `535`/`454`/`235` at AUTH, `401`/`429` + `Retry-After` over HTTP, for
the right (username, address) pairs; and behind a proxy, the username alone is counted (not the proxy's address,
and not nothing)."""

from __future__ import annotations

import asyncio
import base64
import logging
import threading
import time
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest
from argon2 import PasswordHasher
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from gateway.core.errors import StorageUnavailable
from gateway.core.login_limiter import LoginLimiter, LoginLimits
from gateway.devices import DeviceRegistry
from gateway.intake.http import create_app
from gateway.services import Services
from gateway.telemetry import metrics
from tests.integration.test_smtp_harness import USER, Dialogue, SmtpRun, running_smtp
from tests.support import services_for

A, B, C = "127.0.0.2", "127.0.0.3", "127.0.0.4"
PROXIED = {"SCANGW_SMTP_PROXY_CIDRS": "127.0.0.0/8"}
DEADLINE = 10.0


@pytest.fixture(autouse=True)
def cheap_argon2(monkeypatch: pytest.MonkeyPatch) -> None:
    """Real argon2 at its cheapest parameters: these tests count logins, not the cost of one (64 MiB each)."""
    monkeypatch.setattr(
        "gateway.devices.PasswordHasher", lambda: PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    )


class Clock:
    """The limiter's clock, moved by the test: windows expire without waiting."""

    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


class Meter:
    """The real OpenTelemetry SDK with an in-memory reader, installed for one test."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.reader = InMemoryMetricReader()
        provider = MeterProvider(metric_readers=[self.reader])
        monkeypatch.setattr(metrics, "_on", metrics._Instruments(provider.get_meter("test")))

    def total(self, name: str, **attributes: str) -> int:
        data = self.reader.get_metrics_data()
        found = 0
        for resource in data.resource_metrics if data else []:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        found += sum(int(p.value) for p in metric.data.data_points if dict(p.attributes) == attributes)
        return found


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# -- SMTP ---------------------------------------------------------------------------------------------------


class Door:
    """The SMTP door with an injected limiter clock and a second device, `scanner2`."""

    def __init__(self, run: SmtpRun, clock: Clock) -> None:
        self.run, self.clock = run, clock
        self.passwords = {USER: run.password, "scanner2": run.add_device("scanner2", sender="scanner@contoso.com")}

    def auth(self, user: str, password: str, source: str) -> str:
        talk = Dialogue(self.run.plain, source=source)
        try:
            assert talk.ask("EHLO scanner").startswith("250")
            return talk.ask("AUTH PLAIN " + b64(f"\0{user}\0{password}"))
        finally:
            talk.close()

    def login(self, user: str, source: str) -> str:
        return self.auth(user, self.passwords[user], source)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def smtp_door(tmp: Path, clock: Clock, env: dict[str, str] | None = None) -> Any:
    def injected(services: Services) -> None:
        services.logins = LoginLimiter(LoginLimits(), clock)

    return running_smtp(tmp, env, prepare=injected)


def test_smtp_wrong_passwords_stop_that_device_from_that_address_only(
    tmp_path: Path, clock: Clock, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    meter = Meter(monkeypatch)
    caplog.set_level(logging.INFO, logger="scangw.smtp")
    with smtp_door(tmp_path, clock) as run:
        door = Door(run, clock)
        for _ in range(5):
            assert door.auth(USER, "wrong", A).startswith("535 5.7.8 Authentication failed")
        throttled = door.login(USER, A)  # the right password, not even checked
        assert throttled == "454 4.7.0 Too many failed logins: wait a minute, then check the device's password"
        assert door.login(USER, B) == "235 2.7.0 Authentication successful"  # the same device elsewhere
        assert door.login("scanner2", A).startswith("235 2.7.0")  # another device from that address
        clock.now += 59
        assert door.login(USER, A).startswith("454 4.7.0 Too many failed logins")
        clock.now += 2
        assert door.login(USER, A).startswith("235 2.7.0")  # the window expired
    log = caplog.messages
    assert f"event=smtp.auth result=failed peer={A} user='{USER}' mechanism=PLAIN" in log
    assert f"event=smtp.auth result=throttled peer={A} user='{USER}' mechanism=PLAIN" in log
    assert f"event=smtp.auth result=ok peer={B} user='{USER}' mechanism=PLAIN device={USER} tls=False" in log
    assert meter.total("scangw.auth.failures", door="smtp", device=USER) == 7  # 5 failed, 2 throttled
    assert meter.total("scangw.scans.refused", door="smtp", reason="auth") == 7


def test_smtp_a_spray_of_unknown_names_stops_that_address_but_not_a_device_at_its_usual_address(
    tmp_path: Path, clock: Clock
) -> None:
    with smtp_door(tmp_path, clock) as run:
        door = Door(run, clock)
        assert door.login(USER, C).startswith("235")  # C becomes scanner1's usual address
        for n in range(5):
            assert door.auth(f"guess{n}", "x", A).startswith("535")
            assert door.auth(f"guess{n}", "x", C).startswith("535")  # and from the device's own network
        assert door.login("scanner2", A).startswith("454 4.7.0")  # a name the address never logged in from
        assert door.login("scanner2", B).startswith("235")
        assert door.login(USER, C).startswith("235")  # its usual address: judged by its own pair alone
        assert door.login("scanner2", C).startswith("454 4.7.0")  # C is not scanner2's usual address


def test_smtp_behind_a_proxy_the_username_is_counted_whatever_the_address(tmp_path: Path, clock: Clock) -> None:
    with smtp_door(tmp_path, clock, PROXIED) as run:
        door = Door(run, clock)
        assert door.login(USER, C).startswith("235")
        for _ in range(5):
            assert door.auth(USER, "wrong", A).startswith("535")
        # Every client has the proxy's address: a limiter keyed by it would miss this (or lock out everyone).
        assert door.login(USER, B).startswith("454 4.7.0")
        assert door.login(USER, C).startswith("454 4.7.0")  # no "usual address" behind a proxy
        assert door.login("scanner2", A).startswith("235")
        for n in range(10):
            assert door.auth(f"guess{n}", "x", A).startswith("535")
        assert door.login("scanner2", A).startswith("235")  # a spray of names locks out nobody else


class Outage:
    """The devices table, failing every read while `down` (a storage outage)."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.down = inner, False

    async def get(self, key: str) -> Any:
        if self.down:
            raise StorageUnavailable("storage account unreachable")
        return await self.inner.get(key)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_smtp_a_registry_outage_is_no_failed_login(
    tmp_path: Path, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="scangw.smtp")
    outage: list[Outage] = []

    def prepare(services: Services) -> None:
        services.logins = LoginLimiter(LoginLimits(), clock)
        outage.append(Outage(services.spool.devices))
        services.registry = DeviceRegistry(outage[0])  # type: ignore[arg-type]

    with running_smtp(tmp_path, prepare=prepare) as run:
        door = Door(run, clock)
        outage[0].down = True
        for _ in range(6):
            assert door.login(USER, A) == (
                "454 4.7.0 Device registry unreachable (storage outage), password not checked: try again in a minute"
            )
        outage[0].down = False
        assert door.login(USER, A).startswith("235 2.7.0")  # the outage counted as no failure
    assert (
        f"event=smtp.auth result=unavailable peer={A} user='{USER}' mechanism=PLAIN error=storage account unreachable"
        in caplog.messages
    )


def test_smtp_a_long_username_is_logged_cut_to_64_characters(
    tmp_path: Path, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="scangw.smtp")
    with smtp_door(tmp_path, clock) as run:
        door = Door(run, clock)
        assert door.auth("u" * 100, "x", A).startswith("535")
    assert f"event=smtp.auth result=failed peer={A} user='{'u' * 64}' mechanism=PLAIN" in caplog.messages


# -- HTTP ---------------------------------------------------------------------------------------------------

Client = tuple[str, int] | None


class Http:
    """The HTTP app in process, with an injected limiter clock and two devices (mfp1, mfp2)."""

    def __init__(self, svc: Services, passwords: dict[str, str]) -> None:
        self.svc, self.passwords = svc, passwords
        self.app = create_app(self._provide)

    async def _provide(self) -> Services:
        return self.svc

    async def get(self, user: str, password: str, client: Client) -> httpx.Response:
        transport = httpx.ASGITransport(app=self.app, client=client)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
            return await http.get("/api/scans/nosuchjob", auth=(user, password))

    async def login(self, user: str, client: Client) -> httpx.Response:
        return await self.get(user, self.passwords[user], client)


def http_case(tmp: Path, clock: Clock, scenario: Any) -> None:
    async def main() -> None:
        svc = await services_for(tmp)
        svc.logins = LoginLimiter(LoginLimits(), clock)
        try:
            passwords = {
                name: (await svc.registry.add(name, sender="scanner@contoso.com"))[1] for name in ("mfp1", "mfp2")
            }
            await asyncio.wait_for(scenario(Http(svc, passwords)), 60)
        finally:
            await svc.close()

    asyncio.run(main())


HA, HB, HC = ("198.51.100.7", 40000), ("203.0.113.10", 40001), ("192.0.2.66", 40002)


def throttled(r: httpx.Response, seconds: int) -> bool:
    return (
        r.status_code == 429
        and r.headers["retry-after"] == str(seconds)
        and r.json()["error"]["code"] == "too_many_attempts"
        and f"wait {seconds} seconds" in r.json()["error"]["message"]
    )


def test_http_wrong_passwords_get_429_with_retry_after_for_that_pair_only(tmp_path: Path, clock: Clock) -> None:
    async def scenario(http: Http) -> None:
        for _ in range(5):
            r = await http.get("mfp1", "wrong", HA)
            assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Basic"), r.text
        assert throttled(await http.login("mfp1", HA), 60)  # the right password, not even checked
        assert throttled(await http.get("mfp1", "wrong", HA), 60)  # and a wrong one is no 401 meanwhile
        assert (await http.login("mfp1", HB)).status_code == 404  # logged in: the job just does not exist
        assert (await http.login("mfp2", HA)).status_code == 404
        clock.now += 20
        assert throttled(await http.login("mfp1", HA), 40)
        clock.now += 39.5
        assert throttled(await http.login("mfp1", HA), 1)  # half a second left still refuses
        clock.now += 1
        assert (await http.login("mfp1", HA)).status_code == 404

    http_case(tmp_path, clock, scenario)


def test_http_a_spray_of_unknown_names_stops_that_address_but_not_a_device_at_its_usual_address(
    tmp_path: Path, clock: Clock
) -> None:
    async def scenario(http: Http) -> None:
        assert (await http.login("mfp1", HC)).status_code == 404  # HC becomes mfp1's usual address
        for n in range(5):
            assert (await http.get(f"guess{n}", "x", HA)).status_code == 401
            assert (await http.get(f"guess{n}", "x", HC)).status_code == 401
        assert throttled(await http.login("mfp2", HA), 60)
        assert (await http.login("mfp2", HB)).status_code == 404
        assert (await http.login("mfp1", HC)).status_code == 404  # its usual address: its own pair alone
        assert throttled(await http.login("mfp2", HC), 60)

    http_case(tmp_path, clock, scenario)


def test_http_on_the_function_host_the_username_is_counted(tmp_path: Path, clock: Clock) -> None:
    """No client address (the Function host is one front for every client): the username alone is the key."""

    async def scenario(http: Http) -> None:
        for _ in range(5):
            assert (await http.get("mfp1", "wrong", None)).status_code == 401
        assert throttled(await http.login("mfp1", None), 60)
        assert (await http.login("mfp2", None)).status_code == 404
        for n in range(10):
            assert (await http.get(f"guess{n}", "x", None)).status_code == 401
        assert (await http.login("mfp2", None)).status_code == 404  # a spray of names locks out nobody else
        clock.now += 61
        assert (await http.login("mfp1", None)).status_code == 404

    http_case(tmp_path, clock, scenario)


def test_http_a_success_forgives_the_pairs_earlier_failures(tmp_path: Path, clock: Clock) -> None:
    async def scenario(http: Http) -> None:
        for _ in range(4):
            assert (await http.get("mfp1", "wrong", HA)).status_code == 401
        assert (await http.login("mfp1", HA)).status_code == 404
        for _ in range(4):
            assert (await http.get("mfp1", "wrong", HA)).status_code == 401
        assert (await http.login("mfp1", HA)).status_code == 404

    http_case(tmp_path, clock, scenario)


def held_argon2(monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Event, list[str]]:
    """Real (cheap) argon2, except that checking the password "flood" waits until released: a flood of
    wrong passwords that holds argon2 slots for as long as the test wants."""
    release, held = threading.Event(), []

    class Held(PasswordHasher):
        def verify(self, hash: str | bytes, password: str | bytes) -> Literal[True]:
            if password == "flood":
                held.append(str(password))
                release.wait(DEADLINE)
            return super().verify(hash, password)

    monkeypatch.setattr("gateway.devices.PasswordHasher", lambda: Held(time_cost=1, memory_cost=8, parallelism=1))
    return release, held


async def flood_settled(held: list[str]) -> None:
    """The flood took every argon2 slot it may (one, when the fair queue is keyed by its address)."""
    deadline = time.monotonic() + 0.5
    while len(held) < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert held, "the flood never reached argon2"


def test_http_a_flood_of_names_from_one_address_leaves_an_argon2_slot_for_a_device_elsewhere(
    tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    release, held = held_argon2(monkeypatch)

    async def scenario(http: Http) -> None:
        flood = [asyncio.ensure_future(http.get(f"guess{n}", "flood", HA)) for n in range(4)]
        try:
            await flood_settled(held)
            login = await asyncio.wait_for(http.login("mfp1", HB), 5)  # not queued behind the flood
            assert login.status_code == 404
        finally:
            release.set()
        assert [(await f).status_code for f in flood] == [401] * 4

    http_case(tmp_path, clock, scenario)


def test_smtp_a_flood_of_names_from_one_address_leaves_an_argon2_slot_for_a_device_elsewhere(
    tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    release, held = held_argon2(monkeypatch)
    with smtp_door(tmp_path, clock) as run:
        flood = []
        try:
            for n in range(4):
                talk = Dialogue(run.plain, source=A)
                flood.append(talk)
                assert talk.ask("EHLO flood").startswith("250")
                talk.send("AUTH PLAIN " + b64(f"\0guess{n}\0flood") + "\r\n")
            asyncio.run(flood_settled(held))
            talk = Dialogue(run.plain, source=B)
            talk.sock.settimeout(5)  # not queued behind the flood
            assert talk.ask("EHLO scanner").startswith("250")
            assert talk.ask("AUTH PLAIN " + b64(f"\0{USER}\0{run.password}")).startswith("235")
            talk.close()
        finally:
            release.set()
        assert [talk.reply()[:3] for talk in flood] == ["535"] * 4
        for talk in flood:
            talk.close()
