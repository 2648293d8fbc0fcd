"""State terraform could not save: it writes it to `errored.tfstate` in its working
directory. The runner server hands it to the run's backend as a state version (over the
run's state channel) when the run ends, or, for the runs a killed server left, once their
backend connects again; when the backend refuses it, the file stays where it is and the
run's error message and the server's log say where."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from protos.iacrunner.v1 import runner_pb2 as pb
from runner_server import workspace
from runner_server.config import ServerConfig
from runner_server.journal import Journal, Record
from runner_server.runs import Run, add_note
from runner_server.state_relay import NoChannel, StateRelay

log = logging.getLogger("iac_runner_server")

ERRORED_STATE = "errored.tfstate"
# How often the state a killed server left is offered again to a backend not connected yet.
LEFTOVER_RETRY = 30.0


def _read_file(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


class UnsavedState:
    def __init__(
        self,
        config: ServerConfig,
        journal: Journal,
        state: StateRelay,
        background: Callable[[Coroutine[Any, Any, None]], None],
    ) -> None:
        self.config = config
        self.journal = journal
        self.state = state
        self.background = background  # runs a coroutine as a task the server waits for

    async def recover(self, run: Run, result: pb.Result) -> bool:
        """The run's unsaved state, if any, goes to its backend as a state version. False
        when some is left in the work dir, which must then be kept."""
        path = os.path.join(run.work_dir, ERRORED_STATE)
        try:
            data = await asyncio.to_thread(_read_file, path)
        except FileNotFoundError:
            return True
        except OSError as exc:
            note = f"terraform could not save its state and {path} is unreadable: {exc}"
            add_note(result, note)
            return False
        call = pb.StateCall(run_id=run.run_id, method="RECOVER", body=data)
        try:
            reply = await self.state.call(call)
        except NoChannel as exc:
            reply = pb.StateResponse(status=503, body=str(exc).encode())
        if reply.status == 200:
            note = "terraform could not save its state: " + reply.body.decode("utf-8", "replace")
            add_note(result, note)
            with contextlib.suppress(OSError):
                os.unlink(path)
            return True
        note = (
            f"terraform could not save its state; it is kept in {path} on runner "
            f"{self.config.runner_id} (the backend refused it: "
            f"{reply.body.decode('utf-8', 'replace')})"
        )
        add_note(result, note)
        log.warning(json.dumps({"event": "unsaved_state_kept", "run_id": run.run_id, "path": path}))
        return False

    def recover_leftovers(self, runs: Mapping[str, Run]) -> None:
        """Runs a previous server was executing when it died (its journal; none of
        `runs`): their unsaved state goes to their backend (in the background, when it
        connects), their work dirs are removed as they asked."""
        for record in self.journal.leftovers():
            if record.run_id in runs:
                continue
            errored = os.path.join(record.work_dir, ERRORED_STATE)
            if record.state_channel and os.path.isfile(errored):
                self.background(self._hand_over(record, errored))
                continue
            if record.cleanup and os.path.isdir(record.work_dir):
                workspace.remove(self.config.workspace_root, record.work_dir)
            self.journal.remove(record.run_id)
            log.info(json.dumps({"event": "leftover_removed", "run_id": record.run_id}))

    async def _hand_over(self, record: Record, errored: str) -> None:
        data = await asyncio.to_thread(_read_file, errored)
        call = pb.StateCall(run_id=record.run_id, method="RECOVER", body=data)
        while True:
            try:
                reply = await self.state.call(call, channel=record.state_channel)
            except NoChannel:
                await asyncio.sleep(LEFTOVER_RETRY)
                continue
            break
        if reply.status == 200:
            await asyncio.to_thread(os.unlink, errored)
            if record.cleanup:
                await asyncio.to_thread(
                    workspace.remove, self.config.workspace_root, record.work_dir
                )
            event = {"event": "unsaved_state_recovered", "run_id": record.run_id}
        else:
            event = {"event": "unsaved_state_kept", "run_id": record.run_id, "path": errored}
        self.journal.remove(record.run_id)
        log.warning(json.dumps(event))
