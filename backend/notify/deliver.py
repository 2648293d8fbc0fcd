"""The delivery worker every backend runs: it claims due deliveries from the outbox, sends
each (through the URL guard, to the address it checked, no redirect followed), and records
the attempt: delivered on a 2xx, else due again after an exponential backoff until
IAC_NOTIFY_MAX_ATTEMPTS, then failed.

Everything it knows is in the database (`backend.store.deliveries`), so a backend that
restarts, or another one, goes on where it stopped. A delivery is sent at least once: a
backend that dies after the receiver got the request and before the database heard of it
leaves it to be sent again, with the same X-Iac-Delivery id for the receiver to notice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from backend.config import Settings
from backend.crypto import Cipher
from backend.db import Database
from backend.errors import Invalid
from backend.notify import guard, payloads
from backend.store import deliveries
from backend.store.deliveries import Due, Outcome

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("iac.notify")
BATCH = 20  # deliveries claimed (and sent concurrently) at a time
SHOWN_BODY_BYTES = 200  # of a refusal's body, kept in the attempt's error


@dataclass(frozen=True)
class NotifyOptions:
    backend_id: str
    public_url: str
    policy: guard.Policy
    poll_interval: float = 2.0
    timeout: float = 10.0
    max_attempts: int = 10
    backoff: float = 2.0
    backoff_max: float = 900.0

    @classmethod
    def of(cls, settings: Settings, backend_id: str) -> NotifyOptions:
        return cls(
            backend_id=backend_id,
            public_url=settings.public_url,
            policy=guard.Policy.of(settings.notify_allow, settings.notify_allow_private),
            poll_interval=settings.notify_poll_interval,
            timeout=settings.notify_timeout,
            max_attempts=settings.notify_max_attempts,
            backoff=settings.notify_backoff,
            backoff_max=settings.notify_backoff_max,
        )

    @property
    def lease(self) -> float:
        """How long a claim keeps other backends off a delivery: well over one attempt."""
        return 2 * self.timeout + 10


def _scrub(text: str, *secrets: str) -> str:
    """An error message without the URL in it (a Slack URL is a credential)."""
    for secret in secrets:
        if len(secret) > 1:
            text = text.replace(secret, "<url>")
    return " ".join(text.split())


async def _post(
    client: httpx.AsyncClient, pinned: guard.Pinned, data: bytes, headers: dict[str, str]
) -> tuple[int, bytes]:
    """The answer's status and the start of its body (a refusal's reason)."""
    async with client.stream(
        "POST",
        pinned.url,
        content=data,
        headers={**headers, **pinned.headers},
        extensions=pinned.extensions,
    ) as response:
        shown = b""
        async for chunk in response.aiter_bytes():
            shown += chunk
            if len(shown) >= SHOWN_BODY_BYTES:
                break
        return response.status_code, shown[:SHOWN_BODY_BYTES]


async def send(
    due: Due, options: NotifyOptions, *, verify: ssl.SSLContext | bool = True
) -> Outcome:
    """One attempt: the request and what came of it (never raises). The host's addresses
    are tried in turn until one accepts the connection. `verify`: how the server's
    certificate is checked (default: the system's CAs)."""
    if due.problem:
        return Outcome(None, 0, due.problem)
    # Imported on the first delivery: with the CLI extras installed (rich, pygments) httpx
    # costs an idle backend ~10 MB, and most backends send no notification.
    import httpx

    started = time.monotonic()
    status: int | None = None
    hidden = [due.url]  # from any error text
    try:
        async with asyncio.timeout(options.timeout):
            addresses = await guard.check_all(due.url, options.policy)
            hidden += [p.url for p in addresses] + [addresses[0].url.split("/", 3)[-1]]
            timestamp = int(time.time())
            data = payloads.body(due.kind, due.payload, due.delivery_id, options.public_url)
            headers = payloads.headers(due.event, due.delivery_id, timestamp, data, due.secret)
            async with httpx.AsyncClient(
                follow_redirects=False, trust_env=False, timeout=options.timeout, verify=verify
            ) as client:
                for pinned in addresses:
                    try:
                        status, shown = await _post(client, pinned, data, headers)
                        break
                    except httpx.ConnectError:
                        if pinned is addresses[-1]:
                            raise
        error = ""
        if status is not None and 300 <= status < 400:
            error = f"HTTP {status}: a redirect, which notifications do not follow"
        elif status is not None and not 200 <= status < 300:
            text = shown.decode("utf-8", "replace")
            error = f"HTTP {status}" + (f": {text}" if text.strip() else "")
    except guard.Refused as exc:
        error = f"refused: {exc}"
    except Invalid as exc:
        error = f"the stored URL is invalid: {exc}"
    except TimeoutError:
        error = f"no answer within {options.timeout:g} s (IAC_NOTIFY_TIMEOUT)"
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    except OSError as exc:
        error = f"{type(exc).__name__}: {exc}"
    except Exception as exc:  # unforeseen: still an attempt that failed, and recorded
        error = f"unexpected {type(exc).__name__}: {exc}"
        # No traceback: its messages could quote the URL; this one is scrubbed.
        log.error("delivery %d: %s", due.delivery_id, _scrub(error, *hidden))
    duration = int((time.monotonic() - started) * 1000)
    return Outcome(status, duration, _scrub(error, *hidden))


class Notifier:
    """The worker of one backend: `run` until cancelled; `wake` to look at once."""

    def __init__(self, database: Database, cipher: Cipher, options: NotifyOptions) -> None:
        self.database = database
        self.cipher = cipher
        self.options = options
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        try:
            async with self.database.session() as session:
                released = await deliveries.release_own(session, self.options.backend_id)
            if released:
                log.info("released %d notification deliveries claimed before a restart", released)
        except Exception:
            log.exception("releasing this backend's earlier notification claims failed")
        while True:
            self._wake.clear()
            try:
                busy = await self.deliver_due()
            except Exception:  # the next pass retries; notifying must never stop the backend
                log.exception("delivering notifications failed")
                busy = 0
            if busy >= BATCH:
                continue  # more may be due at once
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.options.poll_interval)

    async def deliver_due(self) -> int:
        """Claim what is due, send it, record the outcomes; how many were claimed."""
        options = self.options
        async with self.database.session() as session:
            ids, until = await deliveries.claim(session, options.backend_id, options.lease, BATCH)
        if not ids:
            return 0
        async with self.database.session() as session:
            due = await deliveries.load(session, self.cipher, ids, until)
        outcomes = await asyncio.gather(*(send(d, options) for d in due))
        for item, outcome in zip(due, outcomes, strict=True):
            try:
                async with self.database.session() as session:
                    status = await deliveries.finish(
                        session,
                        item,
                        outcome,
                        options.backend_id,
                        max_attempts=options.max_attempts,
                        base=options.backoff,
                        cap=options.backoff_max,
                    )
            except Exception:
                log.exception("recording delivery %d's attempt failed", item.delivery_id)
                continue
            if status is None:
                log.warning(
                    "delivery %d: the claim was lost before its outcome was recorded",
                    item.delivery_id,
                )
            elif not outcome.ok:
                log.info(
                    "delivery %d (%s) attempt %d: %s; now %s",
                    item.delivery_id,
                    item.event,
                    item.attempts + 1,
                    outcome.error,
                    status,
                )
        return len(ids)
