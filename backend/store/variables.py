"""Deployment variables: terraform variables (``TF_VAR_<key>``) and environment variables.

Sensitive values are encrypted at rest and never leave the backend except in a run's
environment, where their names go into ``sensitive_env`` so the runner masks them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from backend.crypto import Cipher
from backend.errors import Invalid, NotFound
from backend.models import Deployment, RetiredSecret, Variable, VariableCategory

_TF_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,127}$")
_ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
# The backend sets these itself for every run (state access, per-run credentials).
RESERVED_ENV_PREFIXES = ("TF_HTTP_", "IAC_")
# Linux refuses to exec a process with an environment entry ("NAME=value" and its NUL)
# over MAX_ARG_STRLEN, 32 pages: the run would fail at its start, so refuse it here.
MAX_ENV_ENTRY_BYTES = 32 * 4096
# Runners refuse these (they would inject code into the tool): refuse them here, at once.
LOADER_HOOKS = ("LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT")


@dataclass
class RunEnvironment:
    """A deployment's variables as a runner receives them."""

    env_vars: dict[str, str] = field(default_factory=dict)
    sensitive_env: list[str] = field(default_factory=list)
    # Values sensitive variables held before: masked too (state and plans still hold them).
    mask_values: list[str] = field(default_factory=list)

    def secrets(self) -> list[str]:
        """Every value to keep out of what is shown: current and past sensitive values."""
        return [self.env_vars[name] for name in self.sensitive_env] + self.mask_values


def check_category(category: str) -> str:
    if category not in {c.value for c in VariableCategory}:
        raise Invalid(f"variable category {category!r} is invalid: use 'terraform' or 'env'")
    return category


def check_key(key: str, category: str) -> str:
    if category == VariableCategory.TERRAFORM.value:
        if not _TF_KEY_RE.match(key):
            raise Invalid(
                f"terraform variable name {key!r} is invalid: start with a letter or '_', "
                "then letters, digits, '_' or '-' (at most 128)"
            )
    else:
        if not _ENV_KEY_RE.match(key):
            raise Invalid(
                f"environment variable name {key!r} is invalid: start with a letter or '_', "
                "then letters, digits or '_' (at most 128)"
            )
        if key in LOADER_HOOKS:
            raise Invalid(
                f"environment variable {key!r} is not allowed: runners refuse loader hooks "
                f"({', '.join(LOADER_HOOKS)})"
            )
        if key.upper().startswith(RESERVED_ENV_PREFIXES):
            raise Invalid(
                f"environment variable {key!r} is reserved: the backend sets TF_HTTP_* and "
                "IAC_* itself"
            )
    return key


async def set_variable(
    session: AsyncSession,
    cipher: Cipher,
    deployment: Deployment,
    key: str,
    value: str,
    *,
    sensitive: bool = False,
    category: str = VariableCategory.TERRAFORM.value,
) -> tuple[Variable, bool]:
    """Create or replace a variable; returns it and whether it was created."""
    check_category(category)
    check_key(key, category)
    name = f"TF_VAR_{key}" if category == VariableCategory.TERRAFORM.value else key
    size = len(name) + 1 + len(value.encode("utf-8", "surrogatepass")) + 1
    if size > MAX_ENV_ENTRY_BYTES:
        raise Invalid(
            f"variable {key!r} is too large: {name}=<value> takes {size} bytes and an "
            f"environment entry holds at most {MAX_ENV_ENTRY_BYTES} (Linux MAX_ARG_STRLEN); "
            "put large data in a file of the configuration instead"
        )
    if "\x00" in value:
        raise Invalid(f"variable {key!r} contains a NUL character, which no environment can hold")
    row = await session.scalar(
        select(Variable).where(
            Variable.deployment_id == deployment.id,
            Variable.key == key,
            Variable.category == category,
        )
    )
    created = row is None
    if row is None:
        row = Variable(deployment_id=deployment.id, key=key, category=category)
        session.add(row)
    elif row.sensitive and row.value_encrypted is not None:
        if not sensitive or cipher.decrypt(row.value_encrypted) != value:
            retire(session, deployment, row.value_encrypted)
        elif sensitive:
            return row, created  # the same secret again: nothing changes
    encrypted = cipher.encrypt(value, f"sensitive variable {key!r}") if sensitive else None
    row.sensitive = sensitive
    row.value = None if sensitive else value
    row.value_encrypted = encrypted
    await session.flush()
    return row, created


async def list_variables(session: AsyncSession, deployment: Deployment) -> Sequence[Variable]:
    rows = await session.scalars(
        select(Variable)
        .where(Variable.deployment_id == deployment.id)
        .order_by(Variable.category, Variable.key)
    )
    return rows.all()


async def delete_variable(
    session: AsyncSession,
    deployment: Deployment,
    key: str,
    category: str = VariableCategory.TERRAFORM.value,
) -> None:
    check_category(category)
    row = await session.scalar(
        select(Variable).where(
            Variable.deployment_id == deployment.id,
            Variable.key == key,
            Variable.category == category,
        )
    )
    if row is None:
        raise NotFound(f"deployment {deployment.name!r} has no {category} variable {key!r}")
    if row.sensitive and row.value_encrypted is not None:
        retire(session, deployment, row.value_encrypted)
    await session.delete(row)


def retire(session: AsyncSession, deployment: Deployment, value_encrypted: bytes) -> None:
    """Keep a sensitive value that is being replaced or deleted, to mask it forever."""
    session.add(RetiredSecret(deployment_id=deployment.id, value_encrypted=value_encrypted))


def env_name(variable: Variable) -> str:
    if variable.category == VariableCategory.TERRAFORM.value:
        return f"TF_VAR_{variable.key}"
    return variable.key


async def run_environment(
    session: AsyncSession, cipher: Cipher, deployment: Deployment
) -> RunEnvironment:
    """The deployment's variables as env vars, sensitive ones decrypted and named for
    masking, with the values its sensitive variables held before."""
    result = RunEnvironment()
    for variable in await list_variables(session, deployment):
        name = env_name(variable)
        if variable.sensitive:
            assert variable.value_encrypted is not None
            result.env_vars[name] = cipher.decrypt(variable.value_encrypted)
            result.sensitive_env.append(name)
        else:
            result.env_vars[name] = variable.value or ""
    current = {result.env_vars[name] for name in result.sensitive_env}
    retired = await session.scalars(
        select(RetiredSecret.value_encrypted)
        .where(RetiredSecret.deployment_id == deployment.id)
        .order_by(RetiredSecret.id)
    )
    for encrypted in retired:
        value = cipher.decrypt(encrypted)
        if value and value not in current and value not in result.mask_values:
            result.mask_values.append(value)
    return result
