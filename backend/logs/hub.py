"""Live fan-out of a run's log lines to any number of followers, with no gap and no double.

The engine publishes each batch as it arrives from the runner, then stores it in chunks.
Until a batch is stored it stays in the hub's `pending` list, so a follower that
subscribes (taking a snapshot of `pending` at the same instant) and then replays the
store sees every line: stored ones from the DB, the rest from the snapshot or its queue,
deduplicated by seq. A follower whose queue fills up (a slow reader) is dropped from the
hub and goes back to the store; it never slows the run or the other followers.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from backend.logs.batch import LogBatch

# A follower this many batches behind is dropped to the store (bounded memory per follower).
QUEUE_BATCHES = 64


@dataclass
class Subscription:
    run_id: int
    queue: asyncio.Queue[LogBatch | None] = field(
        default_factory=lambda: asyncio.Queue(QUEUE_BATCHES)
    )
    overflowed: bool = False


@dataclass
class _RunLog:
    pending: list[LogBatch] = field(default_factory=list)
    subscribers: list[Subscription] = field(default_factory=list)


class LogHub:
    def __init__(self) -> None:
        self._runs: dict[int, _RunLog] = {}

    def is_live(self, run_id: int) -> bool:
        """Whether this process is executing the run (and so publishes its lines)."""
        return run_id in self._runs

    def open(self, run_id: int) -> None:
        self._runs.setdefault(run_id, _RunLog())

    def publish(self, run_id: int, batch: LogBatch) -> None:
        log = self._runs.setdefault(run_id, _RunLog())
        log.pending.append(batch)
        for sub in list(log.subscribers):
            try:
                sub.queue.put_nowait(batch)
            except asyncio.QueueFull:
                sub.overflowed = True
                log.subscribers.remove(sub)

    def stored(self, run_id: int, last_seq: int) -> None:
        """Lines up to `last_seq` are committed to the store: no need to keep them."""
        log = self._runs.get(run_id)
        if log is not None:
            log.pending = [b for b in log.pending if b.last_seq > last_seq]

    def close(self, run_id: int) -> None:
        """The run is over here: tell followers to go back to the store for the rest."""
        log = self._runs.pop(run_id, None)
        if log is None:
            return
        for sub in log.subscribers:
            try:
                sub.queue.put_nowait(None)
            except asyncio.QueueFull:
                sub.overflowed = True

    def subscribe(self, run_id: int) -> tuple[Subscription, list[LogBatch]]:
        """A subscription plus the not-yet-stored batches, taken at the same instant."""
        sub = Subscription(run_id)
        log = self._runs.get(run_id)
        if log is None:
            sub.queue.put_nowait(None)
            return sub, []
        log.subscribers.append(sub)
        return sub, list(log.pending)

    def unsubscribe(self, sub: Subscription) -> None:
        log = self._runs.get(sub.run_id)
        if log is not None and sub in log.subscribers:
            log.subscribers.remove(sub)
