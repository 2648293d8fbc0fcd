"""What a plan phase's end records of its artifacts: the saved plan (sealed) and its
digest, whether it has changes, its review (redacted by `backend.plans`, then sealed) with
its counts, and for a drift check what drifted."""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from backend.crypto import Cipher
from backend.models import Operation
from backend.plans import PlanUnreadable, read_plan
from backend.steps import PLAN_FILE, PLAN_HAS_CHANGES, PLAN_JSON
from backend.store import drift
from protos.iacrunner.v1 import runner_pb2 as pb


@dataclass
class PlanOutcome:
    values: dict[str, Any]  # the run's columns
    has_plan: bool
    drift_detail: dict[str, Any]
    notes: list[str] = field(default_factory=list)  # lines for the run's log


async def read_outcome(
    cipher: Cipher,
    operation: str,
    result: pb.Result | None,
    artifacts: dict[str, bytes],
    secrets: list[str],
) -> PlanOutcome:
    """`result` is the plan step's (None: re-attached after it, to the show step; then the
    review says whether the plan had changes)."""
    plan = artifacts.get(PLAN_FILE)
    values: dict[str, Any] = {
        "has_changes": result is None or result.exit_code == PLAN_HAS_CHANGES,
        "plan_file": cipher.seal(plan) if plan is not None else None,
        "plan_sha256": hashlib.sha256(plan).hexdigest() if plan is not None else None,
    }
    if result is not None and result.tool_version:
        values["tool_version"] = result.tool_version
    outcome = PlanOutcome(values, plan is not None, drift.detail_of(None))
    document = artifacts.get(PLAN_JSON)
    if document is None:
        return outcome
    try:
        review = await asyncio.to_thread(read_plan, document, secrets)
    except PlanUnreadable as exc:
        outcome.notes.append(f"the plan's summary is not available: {exc}")
        return outcome
    if result is None:
        values["has_changes"] = review.has_changes(operation == Operation.DRIFT)
    values["changes"] = review.counts.out()
    values["plan_summary"] = cipher.seal(json.dumps(review.out()).encode())
    outcome.drift_detail = drift.detail_of(review)
    outcome.notes.append(review.counts.line())
    return outcome
