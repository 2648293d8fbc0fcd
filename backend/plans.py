"""A plan as a reviewer reads it: counts, resource changes with their changed attributes,
output changes and drift, read from terraform's `show -json` of the saved plan.

Nothing sensitive survives the reading: a value terraform marks sensitive
(`before_sensitive`/`after_sensitive`), and any string holding a value a sensitive
variable has, or ever had, becomes `SENSITIVE`; the plan's `variables`, `prior_state`,
`planned_values` and `configuration` (which hold every value in the clear) are never
kept. What is kept is stored encrypted like the state.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from runner_stdio.output import mask_forms

SENSITIVE = "(sensitive value)"
UNKNOWN = "(known after apply)"
# Plans terraform writes are small documents; a bigger one is refused, not parsed.
MAX_PLAN_JSON_BYTES = 64 * 1024 * 1024


class PlanUnreadable(ValueError):
    """The document is not a plan terraform wrote."""


@dataclass
class Counts:
    add: int = 0
    change: int = 0
    destroy: int = 0
    replace: int = 0
    read: int = 0
    import_: int = 0
    move: int = 0

    def line(self) -> str:
        """What `iac plan` prints when the plan ends."""
        return (
            f"Plan: {self.add} to add, {self.change} to change, {self.destroy} to destroy; "
            f"{self.replace} to replace"
        )

    def out(self) -> dict[str, int]:
        data = asdict(self)
        data["import"] = data.pop("import_")
        return data


@dataclass
class ResourceChange:
    address: str
    module: str | None
    type: str
    name: str
    action: str  # create | update | delete | replace | read | no-op
    reason: str | None  # terraform's action_reason (replace_by_triggers, ...)
    changed: list[str] = field(default_factory=list)  # attribute paths that change
    forces_replacement: list[str] = field(default_factory=list)
    before: Any = None
    after: Any = None
    imported: bool = False
    moved_from: str | None = None


@dataclass
class OutputChange:
    name: str
    action: str
    before: Any
    after: Any
    sensitive: bool


@dataclass
class Plan:
    counts: Counts
    resource_changes: list[ResourceChange]
    output_changes: list[OutputChange]
    resource_drift: list[ResourceChange]
    errored: bool = False

    def has_changes(self, refresh_only: bool) -> bool:
        """What `plan -detailed-exitcode` said (2): something to apply, or for a
        refresh-only plan, something that drifted."""
        return bool(
            self.resource_changes or self.output_changes or (refresh_only and self.resource_drift)
        )

    def out(self) -> dict[str, Any]:
        data = asdict(self)
        data["counts"] = self.counts.out()
        return data


def _action(actions: list[str]) -> str:
    if sorted(actions) == ["create", "delete"]:
        return "replace"
    return actions[0] if len(actions) == 1 else "+".join(actions)


def _path(parts: list[str | int]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _redact(value: Any, sensitive: Any, unknown: Any, secrets: list[str]) -> Any:
    """`value` with each sensitive part (terraform's mask, or holding a secret) and each
    unknown part replaced by its marker."""
    if sensitive is True:
        return SENSITIVE
    if unknown is True:
        return UNKNOWN
    if isinstance(value, dict):
        s_map = sensitive if isinstance(sensitive, dict) else {}
        u_map = unknown if isinstance(unknown, dict) else {}
        keys = set(value) | set(u_map)
        return {
            scrub(k, secrets): _redact(value.get(k), s_map.get(k), u_map.get(k), secrets)
            for k in sorted(keys)
        }
    if isinstance(value, list):
        s_list = sensitive if isinstance(sensitive, list) else []
        u_list = unknown if isinstance(unknown, list) else []
        return [
            _redact(
                item,
                s_list[i] if i < len(s_list) else None,
                u_list[i] if i < len(u_list) else None,
                secrets,
            )
            for i, item in enumerate(value)
        ]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, str | int | float) and any(s in str(value) for s in secrets):
        return SENSITIVE  # a number a sensitive variable held is as secret as a string
    return value


def scrub(text: str, secrets: list[str]) -> str:
    """`text` (a map key, an address) with every secret in it replaced by SENSITIVE."""
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, SENSITIVE)
    return text


def every_form(secrets: Iterable[str]) -> list[str]:
    """Each secret as terraform may print it inside a string (JSON-escaped, HTML-safe,
    escaped twice, ...: the runner's masking forms), longest first."""
    forms = {form for secret in secrets if secret for form in mask_forms(secret)}
    forms |= {secret for secret in secrets if secret}
    return sorted(forms, key=len, reverse=True)


def redact(value: Any, sensitive: Any, secrets: list[str]) -> Any:
    """`value` with what terraform marks sensitive, and every value holding one of
    `secrets` (in any form terraform prints), replaced by SENSITIVE."""
    return _redact(value, sensitive, None, every_form(secrets))


def _marked(value: Any, sensitive: Any, found: set[str]) -> None:
    """Collect the strings of `value` that terraform's `sensitive` mask covers."""
    if sensitive is True:
        if isinstance(value, str):
            found.add(value)
        elif isinstance(value, dict):
            for item in value.values():
                _marked(item, True, found)
        elif isinstance(value, list):
            for item in value:
                _marked(item, True, found)
    elif isinstance(value, dict) and isinstance(sensitive, dict):
        for key, item in value.items():
            _marked(item, sensitive.get(key), found)
    elif isinstance(value, list) and isinstance(sensitive, list):
        for item, mask in zip(value, sensitive, strict=False):
            _marked(item, mask, found)


def _sensitive_values(doc: dict[str, Any]) -> set[str]:
    """Every string terraform itself calls sensitive anywhere in the plan: a sensitive
    variable's value, a sensitive output's, a sensitive attribute's. An attribute derived
    from one (terraform_data's `output` from its `input`) is not always marked: these
    values are redacted wherever they appear."""
    found: set[str] = set()
    variables = doc.get("variables") or {}
    declared = ((doc.get("configuration") or {}).get("root_module") or {}).get("variables") or {}
    for name, spec in declared.items():
        value = (variables.get(name) or {}).get("value")
        if isinstance(spec, dict) and spec.get("sensitive"):
            _marked(value, True, found)
    for item in [*(doc.get("resource_changes") or []), *(doc.get("resource_drift") or [])]:
        change = item.get("change") or {}
        _marked(change.get("before"), change.get("before_sensitive"), found)
        _marked(change.get("after"), change.get("after_sensitive"), found)
    for change in (doc.get("output_changes") or {}).values():
        _marked(change.get("before"), change.get("before_sensitive"), found)
        _marked(change.get("after"), change.get("after_sensitive"), found)
    return {value for value in found if value}


def _changed(before: Any, after: Any, prefix: list[str | int]) -> list[str]:
    """The attribute paths whose value differs (leaves, or a whole value that appears or
    goes)."""
    if isinstance(before, dict) and isinstance(after, dict):
        found = []
        for key in sorted(set(before) | set(after)):
            found += _changed(before.get(key), after.get(key), [*prefix, key])
        return found
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        found = []
        for i, (b, a) in enumerate(zip(before, after, strict=True)):
            found += _changed(b, a, [*prefix, i])
        return found
    return [] if before == after else [_path(prefix) or "(whole value)"]


def _resource(item: dict[str, Any], secrets: list[str]) -> ResourceChange:
    change = item.get("change") or {}
    actions = change.get("actions") or ["no-op"]
    action = _action(actions)
    before = _redact(change.get("before"), change.get("before_sensitive"), None, secrets)
    after = _redact(
        change.get("after"), change.get("after_sensitive"), change.get("after_unknown"), secrets
    )
    changed: list[str] = []
    if action in ("update", "replace"):
        # Compared before redaction (a rotated secret is a change), shown after it.
        raw_after = change.get("after")
        unknown = change.get("after_unknown")
        paths = _changed(change.get("before"), _with_unknown(raw_after, unknown), [])
        changed = [scrub(path, secrets) for path in paths]
    forces = [
        scrub(_path(p), secrets) for p in change.get("replace_paths") or [] if isinstance(p, list)
    ]
    previous = item.get("previous_address")
    return ResourceChange(
        address=scrub(str(item.get("address", "")), secrets),
        module=item.get("module_address"),
        type=str(item.get("type", "")),
        name=str(item.get("name", "")),
        action=action,
        reason=item.get("action_reason"),
        changed=changed,
        forces_replacement=forces,
        before=before,
        after=after,
        imported=bool(change.get("importing")),
        moved_from=scrub(previous, secrets) if isinstance(previous, str) else None,
    )


def _with_unknown(after: Any, unknown: Any) -> Any:
    """`after` with its unknown parts as UNKNOWN (so "x" -> unknown is a change)."""
    if unknown is True:
        return UNKNOWN
    if isinstance(after, dict) or isinstance(unknown, dict):
        a = after if isinstance(after, dict) else {}
        u = unknown if isinstance(unknown, dict) else {}
        return {k: _with_unknown(a.get(k), u.get(k)) for k in set(a) | set(u)}
    if isinstance(after, list) and isinstance(unknown, list):
        return [
            _with_unknown(v, unknown[i] if i < len(unknown) else None) for i, v in enumerate(after)
        ]
    return after


def read_plan(data: bytes, secrets: list[str]) -> Plan:
    """The review of a plan JSON document; PlanUnreadable when it is not one."""
    if len(data) > MAX_PLAN_JSON_BYTES:
        raise PlanUnreadable(f"the plan's JSON is larger than {MAX_PLAN_JSON_BYTES} bytes")
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PlanUnreadable(f"the plan's JSON does not parse: {exc}") from None
    if not isinstance(doc, dict) or "format_version" not in doc:
        raise PlanUnreadable("the document is not terraform's plan JSON (no format_version)")
    secrets = every_form(set(secrets) | _sensitive_values(doc))
    counts = Counts()
    changes = []
    for item in doc.get("resource_changes") or []:
        rc = _resource(item, secrets)
        if rc.imported:
            counts.import_ += 1
        if rc.moved_from:
            counts.move += 1
        if rc.action == "no-op":
            continue
        attribute = {"create": "add", "update": "change", "delete": "destroy"}.get(rc.action)
        name = attribute or rc.action
        if name in ("add", "change", "destroy", "replace", "read"):
            setattr(counts, name, getattr(counts, name) + 1)
        changes.append(rc)
    # Replacements and deletions first: what a reviewer must not miss.
    order = {"replace": 0, "delete": 1, "update": 2, "create": 3, "read": 4}
    changes.sort(key=lambda c: (order.get(c.action, 5), c.address))
    outputs = []
    for name, change in sorted((doc.get("output_changes") or {}).items()):
        actions = change.get("actions") or ["no-op"]
        if actions == ["no-op"]:
            continue
        hidden = bool(change.get("before_sensitive")) or bool(change.get("after_sensitive"))
        outputs.append(
            OutputChange(
                name=name,
                action=_action(actions),
                before=_redact(change.get("before"), change.get("before_sensitive"), None, secrets),
                after=_redact(
                    change.get("after"),
                    change.get("after_sensitive"),
                    change.get("after_unknown"),
                    secrets,
                ),
                sensitive=hidden,
            )
        )
    drift = [_resource(item, secrets) for item in doc.get("resource_drift") or []]
    return Plan(counts, changes, outputs, drift, errored=bool(doc.get("errored")))
