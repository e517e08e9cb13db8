"""The delivery agent: one queue message in, one job advanced, an outcome out (done, or retry after N s).

The same code runs in `scangw worker` and in the queue-triggered Function. The job record is the truth:
every side effect is preceded by an etag-checked write of the intent, so if two runs ever overlap (a
duplicated queue message), the later writer wins and the other stops before acting; and after a crash at
any line the next run sees the recorded intent and resumes instead of repeating. Transient failures come back with a delay;
permanent ones end `failed` with a reason and a notice.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from gateway.core.bounce import NOTIFY, SENT_FROM
from gateway.core.devices import Device
from gateway.core.errors import (
    Deferred,
    IdentityUnavailable,
    PermanentDeliveryError,
    StorageUnavailable,
    TooLargeForMailbox,
    TransientDeliveryError,
)
from gateway.core.jobs import Job, JobKind, JobState, PoisonMessage, decode_queue_message
from gateway.core.links import LINKS_ALL, LINKS_UNTIL, kept_after_send
from gateway.core.message import OutgoingMessage, ParsedMessage, compose, parsed_from_json, parsed_to_json
from gateway.core.notice import failure_notice, notice_recipients
from gateway.core.ports import Conflict
from gateway.core.retry import next_delay
from gateway.delivery.links import switch_to_links, with_links
from gateway.delivery.partial import Fragments, Merged, Wait
from gateway.delivery.transport import Delivered, Transport
from gateway.services import Services
from gateway.telemetry import metrics, spans

log = logging.getLogger("scangw.delivery")

#: When another run took the job over, look again this much later (its own message carries the job).
TAKEN_OVER_RETRY_SECONDS = 60.0


@dataclass(frozen=True)
class Done:
    pass


@dataclass(frozen=True)
class Retry:
    delay: float


Outcome = Done | Retry


class TakenOver(Exception):
    """Another worker wrote the job since we read it: stop, it is theirs now."""


class JobCheckpoint:
    """Progress of one delivery kept inside the job record under `key`, written before each side effect."""

    def __init__(self, agent: DeliveryAgent, job: Job, etag: str, key: str) -> None:
        self._agent = agent
        self.job = job
        self.etag = etag
        self._key = key

    @property
    def progress(self) -> Mapping[str, Any]:
        return dict(self.job.progress.get(self._key) or {})

    async def save(self, **changes: Any) -> None:
        merged = {**self.progress, **changes}
        await self.update(**{self._key: merged})

    def stage(self, **changes: Any) -> None:
        merged = {**self.progress, **changes}
        self.stage_progress(**{self._key: merged})

    def stage_progress(self, **progress: Any) -> None:
        """Change the job in hand; the next write (always before the next side effect) carries it."""
        self.job = replace(self.job, progress={**self.job.progress, **progress})

    def stage_fields(self, **fields: Any) -> None:
        self.job = replace(self.job, **fields)

    async def update(self, **progress: Any) -> None:
        new = {**self.job.progress, **progress}
        try:
            self.job, self.etag = await self._agent.services.jobs.save(self.job, self.etag, progress=new)
        except Conflict as exc:
            raise TakenOver(self.job.id) from exc

    async def set(self, **fields: Any) -> None:
        try:
            self.job, self.etag = await self._agent.services.jobs.save(self.job, self.etag, **fields)
        except Conflict as exc:
            raise TakenOver(self.job.id) from exc


class DeliveryAgent:
    def __init__(
        self,
        services: Services,
        transport: Transport,
        fallback_sender: str | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        partial_poll_seconds: float = 20.0,
    ) -> None:
        self.partial_poll_seconds = partial_poll_seconds
        self.services = services
        self.settings = services.settings
        self.transport = transport
        self.fallback_sender = fallback_sender
        self.clock = clock
        self.rng = rng or random.Random()

    async def handle(self, text: str | bytes) -> Outcome:
        """Never raises for a job's own problems; raises StorageUnavailable only when storage is down."""
        try:
            job_id = decode_queue_message(text)
        except PoisonMessage as exc:
            # infra/app/kql/alert-poison.kql matches the field event=queue.poison, never the text
            log.error("event=queue.poison reason=%s", exc)
            await self.services.spool.queue.put_poison(text if isinstance(text, str) else text.decode("latin-1"))
            return Done()
        found = await self.services.jobs.get_record(job_id)
        if found is None:
            log.error("event=queue.orphan job=%s no job record (expired or never stored); message dropped", job_id)
            return Done()
        job, etag = found
        if job.state.final:
            return Done()
        now = self.clock()
        not_before = float(job.progress.get("not_before") or 0)
        if not_before > now + 1:
            return Retry(not_before - now)
        progress = {k: v for k, v in job.progress.items() if k != "not_before"}
        checkpoint = JobCheckpoint(self, job, etag, "delivery")
        try:
            claim = {"state": JobState.SENDING, "attempts": job.attempts + 1, "progress": progress}
            if job.kind == JobKind.MIME and not job.progress.get("parsed"):
                # Exploding a message is the one heavy step before the first side effect: the attempt is on
                # record first, so a message that kills the worker every time still runs out of attempts.
                await checkpoint.set(**claim)
            else:
                # Written with the first intent the transport records (before any Graph call): one write for
                # queued -> sending; a duplicated run still loses that etag race before acting.
                checkpoint.stage_fields(**claim)
            log.info("job=%s state=sending attempt=%d", job.id, checkpoint.job.attempts)
            return await spans.delivering(checkpoint.job, self._deliver(checkpoint))
        except TakenOver:
            log.warning("job=%s taken over by another worker", job.id)
            return Retry(TAKEN_OVER_RETRY_SECONDS)

    async def _deliver(self, cp: JobCheckpoint) -> Outcome:
        job = cp.job
        if job.progress.get("failing"):
            return await self._fail(cp, job.progress["failing"])
        try:
            device = await self.services.registry.get(job.device) or Device(name=job.device, password_hash="")
            parsed = await self._parsed(cp)
            if isinstance(parsed, Wait):
                return await self._wait_for_fragments(cp, parsed)
            if isinstance(parsed, Merged):
                await cp.set(state=JobState.SENT, error=None, progress={"merged_into": parsed.into})
                log.info("job=%s state=sent merged_into=%s (message/partial fragment)", job.id, parsed.into)
                await self._drop_bytes(job.id)
                return Done()
            try:
                message = compose(job, parsed, device, self.settings.sender or self.fallback_sender)
            except ValueError:
                raise PermanentDeliveryError(
                    f"No sender mailbox for device {job.device}.",
                    f"Set SCANGW_SENDER, or give the device one: scangw devices update {job.device} --sender <mailbox>.",
                ) from None
            delivered = await self._deliver_message(cp, message)
        except IdentityUnavailable as exc:
            return await self._transient(cp, str(exc), exc.retry_after, counted=False, bounded=False)
        except Deferred as exc:
            return await self._transient(cp, str(exc), exc.retry_after, counted=False)
        except TransientDeliveryError as exc:
            return await self._transient(cp, str(exc), exc.retry_after)
        except PermanentDeliveryError as exc:
            log.error("job=%s permanent failure: %s", job.id, exc.reason())
            await cp.update(failing=exc.reason())
            return await self._fail(cp, exc.reason())
        except (TakenOver, StorageUnavailable):
            raise
        except Exception as exc:  # noqa: BLE001 - a bug must not lose the scan: retry it like a transient error
            log.exception("job=%s unexpected error", job.id)
            return await self._transient(cp, f"internal error ({type(exc).__name__}); retrying", None)
        kept = kept_after_send(cp.job.progress)
        # What the mailbox sweep needs if a bounce comes back: where to look, and whom to tell.
        kept[SENT_FROM] = message.mailbox
        if message.reply_to:
            kept[NOTIFY] = message.reply_to[0].address
        await cp.set(state=JobState.SENT, error=None, request_id=delivered.request_id, progress=kept)
        log.info("job=%s state=sent request_id=%s %s", job.id, delivered.request_id, delivered.detail)
        metrics.scan_delivered(cp.job, message.mailbox)
        if self.settings.keep_sent_hours == 0 and LINKS_UNTIL not in kept:
            await self._drop_bytes(job.id)
        return Done()

    async def _deliver_message(self, cp: JobCheckpoint, message: OutgoingMessage) -> Delivered:
        """Deliver; if Exchange refuses the size and links are on, deliver once more with every file as a link."""
        fallback = getattr(self.transport, "link_fallback", None)
        try:
            return await self.transport.deliver(
                await with_links(cp, message, fallback, self.settings, self.clock()), cp
            )
        except TooLargeForMailbox as exc:
            if fallback is None or cp.job.progress.get(LINKS_ALL):
                raise
            log.warning("job=%s too large for %s; sending download links instead: %s", cp.job.id, message.mailbox, exc)
            await switch_to_links(cp, self.transport, message.mailbox, self.settings, self.clock())
        return await self.transport.deliver(await with_links(cp, message, fallback, self.settings, self.clock()), cp)

    async def _parsed(self, cp: JobCheckpoint) -> ParsedMessage | Wait | Merged:
        """Explode an SMTP message into parts once (the result is recorded, so retries reuse it); a
        message/partial fragment may instead wait for its siblings or travel with another job."""
        job = cp.job
        if job.kind != JobKind.MIME:
            return ParsedMessage()
        recorded = job.progress.get("parsed")
        if recorded:
            return parsed_from_json(recorded)
        fragments = Fragments(
            self.services.spool.blobs,
            self.services.jobs,
            self.settings.partial_wait_minutes,
            self.clock,
            self.partial_poll_seconds,
        )
        result = await fragments.explode(job)
        if isinstance(result, ParsedMessage):
            cp.stage_progress(parsed=parsed_to_json(result))  # a crash before the next write parses again
            if job.subject is None and result.subject:  # `scangw jobs list` shows SMTP jobs' subjects too
                cp.stage_fields(subject=result.subject)
        return result

    async def _wait_for_fragments(self, cp: JobCheckpoint, wait: Wait) -> Outcome:
        """Waiting for fragments is not a delivery attempt: give the attempt back so max_attempts still means
        Graph failures."""
        progress = {**cp.job.progress, "not_before": self.clock() + wait.seconds}
        await cp.set(state=JobState.QUEUED, attempts=max(0, cp.job.attempts - 1), error=None, progress=progress)
        log.info("job=%s state=queued waiting for message/partial fragments: %s", cp.job.id, wait.reason)
        return Retry(wait.seconds)

    async def _transient(
        self, cp: JobCheckpoint, reason: str, retry_after: float | None, counted: bool = True, bounded: bool = True
    ) -> Outcome:
        """Re-queue with a delay. A wait for the mailbox's budget (`counted=False`) gives the attempt back and
        is spread by up to a quarter more, so a burst that all heard the same wait does not return at once.
        A setup problem (no identity: `bounded=False`) is not the scan's fault: the job waits however long."""
        job = cp.job
        age_hours = job.age_hours(datetime.fromtimestamp(self.clock(), UTC))
        attempts = job.attempts if counted else max(0, job.attempts - 1)
        too_old = bounded and age_hours >= self.settings.max_age_hours
        if attempts >= self.settings.max_attempts or too_old:
            final = f"Gave up after {job.attempts} attempts over {age_hours:.1f} h. Last error: {reason}"
            await cp.update(failing=final)
            return await self._fail(cp, final)
        if counted:
            delay = next_delay(job.attempts, retry_after, self.rng, self.settings.retry_base_seconds)
        else:
            wait = max(retry_after or 1.0, 1.0)
            delay = wait + self.rng.random() * wait / 4
        progress = {**job.progress, "not_before": self.clock() + delay}
        await cp.set(state=JobState.QUEUED, attempts=attempts, error=reason, progress=progress)
        if counted:  # infra/app/kql/alert-retries.kql counts these lines by their fields
            log.warning("job=%s state=queued retry_in=%.0fs reason=%s", job.id, delay, reason)
        elif not bounded:  # one line with the remedy, no traceback: the admin's to fix, no alert storm
            log.warning("job=%s state=queued wait_in=%.0fs reason=%s", job.id, delay, reason)
        else:  # waiting for the mailbox's budget is normal under a burst: no alert
            log.info("job=%s state=queued wait_in=%.0fs reason=%s", job.id, delay, reason)
        return Retry(delay)

    async def _fail(self, cp: JobCheckpoint, reason: str) -> Outcome:
        """Send the notice first (resumably), then mark failed: a crash in between repeats only the notice check."""
        job = cp.job
        sender = self.settings.sender
        scanning_user = job.progress.get(NOTIFY) or job.reply_to
        parsed = job.progress.get("parsed") or {}
        original = parsed.get("reply_to") or parsed.get("from_")
        if original:
            scanning_user = original["address"]
        recipients = notice_recipients(scanning_user, self.settings.admin_email)
        if sender and recipients:
            notice_cp = JobCheckpoint(self, job, cp.etag, "notice")
            kept = bool(await self.services.spool.blobs.list(f"{job.id}/"))
            try:
                await self.transport.deliver(failure_notice(job, reason, sender, recipients, kept), notice_cp)
            except TransientDeliveryError as exc:
                cp.job, cp.etag = notice_cp.job, notice_cp.etag
                delay = next_delay(1, exc.retry_after, self.rng, self.settings.retry_base_seconds)
                await cp.set(progress={**cp.job.progress, "not_before": self.clock() + delay})
                return Retry(delay)
            except PermanentDeliveryError as exc:
                log.error("job=%s failure notice could not be sent: %s", job.id, exc.reason())
            cp.job, cp.etag = notice_cp.job, notice_cp.etag
        await cp.set(state=JobState.FAILED, error=reason)
        log.error("job=%s state=failed reason=%s", job.id, reason)
        metrics.scan_failed(cp.job, reason, cp.job.progress.get(SENT_FROM) or job.sender or sender)
        return Done()

    async def _drop_bytes(self, job_id: str) -> None:
        try:
            await self.services.spool.blobs.delete_prefix(f"{job_id}/")
        except Exception:  # noqa: BLE001 - retention sweeps what is left
            log.warning("job=%s sent, but its bytes could not be deleted yet; retention will", job_id)
