"""One ServeState stream from this backend to each registered runner, kept open.

Runners relay terraform's state requests over these streams (see `backend.state_service`);
the stream is named after this backend (`IAC_BACKEND_ID`), so after a restart the same
name takes back the traffic of the runs it executes, and a runner can hand a restarted
backend the state it found unsaved in a work dir.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from backend.runner_client import RunnerClient, RunnerUnreachable, StateHandler

log = logging.getLogger("iac.backend.state")

RETRY_FIRST = 0.2
RETRY_MAX = 5.0


class StateChannels:
    def __init__(self, name: str, handler_for: Callable[[str], StateHandler]) -> None:
        self.name = name
        self.handler_for = handler_for
        self._kept: dict[str, tuple[RunnerClient, asyncio.Task[None]]] = {}

    def sync(self, clients: dict[str, RunnerClient]) -> None:
        """Keep a stream to each of `clients` (and to no other runner)."""
        for name in list(self._kept):
            client, task = self._kept[name]
            if clients.get(name) is not client:
                task.cancel()
                del self._kept[name]
        for name, client in clients.items():
            if name not in self._kept:
                task = asyncio.create_task(self._keep(name, client), name=f"state-{name}")
                self._kept[name] = (client, task)

    async def _keep(self, name: str, client: RunnerClient) -> None:
        delay = RETRY_FIRST
        handler = self.handler_for(name)
        while True:
            opened = time.monotonic()
            try:
                await client.serve_state(self.name, handler)
            except RunnerUnreachable as exc:
                log.debug("state stream to runner %s: %s", name, exc)
            if time.monotonic() - opened > 10 * RETRY_MAX:
                delay = RETRY_FIRST  # it had been up: reconnect quickly
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX)

    async def close(self) -> None:
        tasks = [task for _, task in self._kept.values()]
        self._kept.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
