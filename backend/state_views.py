"""What a state shows people without its values: the outputs (sensitive ones, and any
holding a secret of the platform's, as a marker) and the resource instances it records.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from backend.plans import SENSITIVE, redact


@dataclass
class Output:
    name: str
    value: Any
    type: Any
    sensitive: bool


@dataclass
class Resource:
    address: str
    mode: str  # managed | data
    type: str
    name: str
    module: str | None
    provider: str


def _document(state: bytes) -> dict[str, Any]:
    doc = json.loads(state) if state else {}
    return doc if isinstance(doc, dict) else {}


def outputs(state: bytes, secrets: list[str], *, reveal: bool = False) -> list[Output]:
    """The state's outputs, by name; a sensitive output's value is shown only with
    `reveal` (for whoever may read state content)."""
    found = []
    for name, item in sorted((_document(state).get("outputs") or {}).items()):
        sensitive = bool(item.get("sensitive"))
        if reveal:
            value = item.get("value")
        else:
            value = SENSITIVE if sensitive else redact(item.get("value"), None, secrets)
        found.append(Output(name, value, item.get("type"), sensitive))
    return found


def _index(key: Any) -> str:
    if key is None:
        return ""
    return f"[{json.dumps(key)}]"


def resources(state: bytes) -> list[Resource]:
    """One entry per resource instance, in terraform's own `state list` address form."""
    found = []
    for item in _document(state).get("resources") or []:
        module = item.get("module")
        mode = item.get("mode", "managed")
        base = ("data." if mode == "data" else "") + f"{item.get('type')}.{item.get('name')}"
        if module:
            base = f"{module}.{base}"
        for instance in item.get("instances") or [{}]:
            found.append(
                Resource(
                    address=base + _index(instance.get("index_key")),
                    mode=mode,
                    type=str(item.get("type")),
                    name=str(item.get("name")),
                    module=module,
                    provider=str(item.get("provider", "")),
                )
            )
    return sorted(found, key=lambda r: r.address)
