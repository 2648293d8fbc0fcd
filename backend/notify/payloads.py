"""What a destination is sent for an event: a webhook gets the event's JSON (the outbox
payload with the delivery's id and the run's absolute link), signed with its secret; a
Slack-compatible incoming webhook gets a message a person reads (`text` for
notifications, `blocks` for the channel).

The payload was written without secrets or log lines (`backend.store.outbox`); nothing
here adds any, and the signing secret only signs.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from backend.models import DestinationKind, NotifyEvent

# Each event as a line of a message: an emoji shortcode and what happened.
HEADLINES = {
    NotifyEvent.RUN_CREATED.value: (":arrow_forward:", "was queued"),
    NotifyEvent.AWAITING_APPROVAL.value: (":hourglass_flowing_sand:", "awaits approval"),
    NotifyEvent.RUN_SUCCEEDED.value: (":white_check_mark:", "succeeded"),
    NotifyEvent.RUN_FAILED.value: (":x:", "failed"),
    NotifyEvent.RUN_CANCELED.value: (":no_entry_sign:", "was canceled"),
    NotifyEvent.DRIFT_DETECTED.value: (":warning:", "has drifted from its state"),
    NotifyEvent.DRIFT_CHECK_FAILED.value: (":x:", "could not be checked for drift"),
    NotifyEvent.TEST.value: (":bell:", "test notification"),
}
MAX_LISTED = 10  # drifted resources named in a message


def _part(payload: dict[str, Any], key: str) -> dict[str, Any]:
    """A part of the payload that is an object ({} when absent)."""
    value = payload.get(key)
    return value if isinstance(value, dict) else {}


def link(payload: dict[str, Any], public_url: str) -> str:
    """The absolute URL of what the event is about: its run's page, else the page the
    payload names, else the backend's front page."""
    path = _part(payload, "run").get("path") or payload.get("path") or "/"
    return public_url.rstrip("/") + str(path)


def webhook_document(payload: dict[str, Any], delivery_id: int, public_url: str) -> dict[str, Any]:
    return {**payload, "delivery_id": delivery_id, "url": link(payload, public_url)}


def _escape(text: object) -> str:
    """Text shown as is in Slack's mrkdwn (its three control characters escaped)."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def counts_text(changes: dict[str, Any] | None) -> str:
    if not changes:
        return ""
    parts = [
        f"{changes.get('add', 0)} to add",
        f"{changes.get('change', 0)} to change",
        f"{changes.get('destroy', 0)} to destroy",
    ]
    if changes.get("replace"):
        parts.append(f"{changes['replace']} to replace")
    return ", ".join(parts)


def _drifted(payload: dict[str, Any]) -> list[str]:
    """What drifted, as a drift event names it: resource addresses (with terraform's
    action) and outputs."""
    drift = payload.get("drift")
    if not isinstance(drift, dict):
        return []
    found = [
        f"{r['address']} ({r.get('action', 'drifted')})"
        for r in drift.get("resources") or []
        if isinstance(r, dict) and "address" in r
    ]
    return found + [f"output.{name}" for name in drift.get("outputs") or []]


def slack_message(payload: dict[str, Any], delivery_id: int, public_url: str) -> dict[str, Any]:
    """A Slack message (Block Kit) of the event: what happened to which deployment's run,
    its changes and a link to its page."""
    event = str(payload.get("event", ""))
    emoji, happened = HEADLINES.get(event, (":bell:", event))
    url = link(payload, public_url)
    deployment = _part(payload, "deployment").get("name")
    run = _part(payload, "run")
    if event == NotifyEvent.TEST.value:
        subject = "iac-runner"
        destination = _part(payload, "destination").get("name")
        headline = f"{subject}: test notification" + (f" to {destination}" if destination else "")
    elif run and run.get("id") is not None:
        subject = f"{run.get('operation', 'run')} run {run['id']}"
        headline = f"{deployment}: {subject} {happened}" if deployment else f"{subject} {happened}"
    else:
        headline = f"{deployment} {happened}" if deployment else happened
    text = f"{emoji} {headline}"
    linked = f"{emoji} *<{url}|{_escape(headline)}>*"
    fields = []
    if deployment:
        fields.append(f"*Deployment*\n{_escape(deployment)}")
    if run.get("id") is not None:
        fields.append(f"*Run*\n<{url}|#{run['id']}> ({_escape(run.get('operation', ''))})")
    if run.get("status"):
        fields.append(f"*Status*\n{_escape(str(run['status']).replace('_', ' '))}")
    drift = _part(payload, "drift")
    if drift.get("reason"):
        fields.append(f"*Why*\n{_escape(str(drift['reason']))}")
    changes = counts_text(run.get("changes")) if "drift" not in payload else ""
    if changes:
        fields.append(f"*Changes*\n{changes}")
        text += f" ({changes})"
    blocks: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn", "text": linked}}]
    if fields:
        blocks.append(
            {"type": "section", "fields": [{"type": "mrkdwn", "text": f} for f in fields]}
        )
    drifted = _drifted(payload)
    if drifted:
        shown = "\n".join(f"• `{_escape(a)}`" for a in drifted[:MAX_LISTED])
        more = len(drifted) - MAX_LISTED
        if more > 0:
            shown += f"\n… and {more} more"
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": shown}})
    context = [f"event `{_escape(event)}`", f"delivery {delivery_id}"]
    if run.get("created_by"):
        context.append(f"started by {_escape(run['created_by'])}")
    if payload.get("occurred_at"):
        context.append(_escape(payload["occurred_at"]))
    blocks.append(
        {"type": "context", "elements": [{"type": "mrkdwn", "text": " · ".join(context)}]}
    )
    return {"text": text + f" {url}", "blocks": blocks}


def body(kind: str, payload: dict[str, Any], delivery_id: int, public_url: str) -> bytes:
    """The exact bytes sent (and signed)."""
    if kind == DestinationKind.SLACK.value:
        document = slack_message(payload, delivery_id, public_url)
    else:
        document = webhook_document(payload, delivery_id, public_url)
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def signature(secret: str, timestamp: int, data: bytes) -> str:
    """`sha256=` and the hex HMAC-SHA256, keyed with the secret, of "<timestamp>.<body>"."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + data, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def headers(
    event: str, delivery_id: int, timestamp: int, data: bytes, secret: str | None
) -> dict[str, str]:
    out = {
        "Content-Type": "application/json",
        "User-Agent": "iac-runner-notifications",
        "X-Iac-Event": event,
        "X-Iac-Delivery": str(delivery_id),
        "X-Iac-Timestamp": str(timestamp),
    }
    if secret is not None:
        out["X-Iac-Signature"] = signature(secret, timestamp, data)
    return out
