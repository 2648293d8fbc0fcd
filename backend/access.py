"""Who may do what: a token's role and its scope.

Roles, each including the ones before it:

    viewer    read deployments, runs, logs, plans, outputs, the runner pool; never a
              variable's value or a state version's content
    planner   start plan runs
    operator  start apply and destroy runs, approve, discard, cancel, force-unlock
    admin     runners, tokens, deployments (create, change, delete, restore, purge),
              variables, state content

A scope limits a token to deployments whose name matches one of its patterns (fnmatch:
`team-a-*`) and whose labels include all of its labels (`team=payments`); a deployment
outside it does not exist for the token (404, never 403, so names do not leak). An empty
scope is every deployment. Runners are shared by every deployment, so only an unscoped
admin may register or remove one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from fnmatch import fnmatchcase
from typing import Any


class Role(StrEnum):
    VIEWER = "viewer"
    PLANNER = "planner"
    OPERATOR = "operator"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return list(Role).index(self)

    def includes(self, other: Role) -> bool:
        return self.rank >= other.rank


@dataclass(frozen=True)
class Scope:
    names: tuple[str, ...] = ()  # fnmatch patterns; empty: any name
    labels: dict[str, str] = field(default_factory=dict)  # all must match

    @classmethod
    def of(cls, data: dict[str, Any] | None) -> Scope:
        data = data or {}
        return cls(tuple(data.get("names") or ()), dict(data.get("labels") or {}))

    def out(self) -> dict[str, Any] | None:
        if self.unscoped:
            return None
        return {"names": list(self.names), "labels": dict(self.labels)}

    @property
    def unscoped(self) -> bool:
        return not self.names and not self.labels

    def covers(self, name: str, labels: dict[str, str] | None) -> bool:
        """Whether a deployment of this name and these labels is inside the scope."""
        if self.names and not any(fnmatchcase(name, pattern) for pattern in self.names):
            return False
        labels = labels or {}
        return all(labels.get(key) == value for key, value in self.labels.items())

    def within(self, outer: Scope) -> bool:
        """Whether every deployment this scope covers is covered by `outer` too: each of
        its patterns is one of outer's (or a plain name outer covers), and it requires
        at least outer's labels."""
        if outer.unscoped:
            return True
        if outer.names:
            if not self.names:
                return False
            for pattern in self.names:
                plain = not any(c in pattern for c in "*?[")
                if pattern not in outer.names and not (
                    plain and any(fnmatchcase(pattern, p) for p in outer.names)
                ):
                    return False
        return all(self.labels.get(key) == value for key, value in outer.labels.items())

    def describe(self) -> str:
        if self.unscoped:
            return "every deployment"
        parts = []
        if self.names:
            parts.append("names " + ", ".join(self.names))
        if self.labels:
            parts.append("labels " + ", ".join(f"{k}={v}" for k, v in self.labels.items()))
        return " and ".join(parts)
