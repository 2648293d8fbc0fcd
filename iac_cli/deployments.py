"""`iac deployments`: create a deployment from a directory, upload new configuration
versions, list and show them, delete (kept until purged), restore and purge them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from iac_cli.archive import PackedConfig, pack_directory
from iac_cli.client import Api, seg
from iac_cli.context import KeyValue, State, json_option, labels_option, pass_state, to_labels
from iac_cli.errors import EXIT_USAGE, CliError
from iac_cli.output import run_duration, run_waited, show_labels, show_time
from iac_cli.prompts import confirm

dir_option = click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    help="The configuration's root module (.terraform/ and *.tfstate* are left out).",
)


@click.group()
def deployments() -> None:
    """Deployments: a named configuration with its variables, runs and state."""


def upload(api: Api, name: str, packed: PackedConfig) -> dict[str, Any]:
    version: dict[str, Any] = api.json(
        "POST",
        f"/deployments/{seg(name)}/config",
        content=packed.data,
        headers={"Content-Type": "application/gzip"},
    )
    version["files"] = len(packed.files)
    return version


def describe_version(name: str, version: dict[str, Any]) -> str:
    return (
        f"uploaded configuration version {version['version']} of {name} "
        f"({version['files']} files, {version['size']} bytes, sha256 {version['sha256'][:12]})"
    )


@deployments.command("create")
@click.argument("name")
@dir_option
@click.option(
    "--tool", type=click.Choice(["terraform", "tofu"]), default="terraform", show_default=True
)
@labels_option("A label runners must have, e.g. provider=aws (repeatable).")
@click.option(
    "--tag",
    "tags",
    type=KeyValue(),
    multiple=True,
    metavar="KEY=VALUE",
    help="A label of the deployment itself, e.g. team=payments, which token scopes match "
    "(API: labels; repeatable).",
)
@click.option("--priority", type=int, default=0, show_default=True, help="Default run priority.")
@click.option("--version-constraint", help="Tool version constraint, e.g. '>= 1.5'.")
@json_option
@pass_state
def create(
    state: State,
    name: str,
    directory: Path | None,
    tool: str,
    labels: tuple[tuple[str, str], ...],
    tags: tuple[tuple[str, str], ...],
    priority: int,
    version_constraint: str | None,
    as_json: bool,
) -> None:
    """Create the deployment NAME and upload the configuration in --dir."""
    body: dict[str, Any] = {
        "name": name,
        "tool": tool,
        "required_labels": to_labels(labels),
        "labels": to_labels(tags),
        "default_priority": priority,
    }
    if version_constraint:
        body["version_constraint"] = version_constraint
    packed = pack_directory(directory) if directory is not None else None  # fail before creating
    deployment = state.api.json("POST", "/deployments", json=body)
    version = None
    if packed is not None:
        try:
            version = upload(state.api, name, packed)
        except CliError as exc:
            exc.message = (
                f"deployment {name} was created but its configuration was refused: "
                f"{exc.message}; fix it and run: iac deployments upload {name} --dir {directory}"
            )
            raise
    if as_json:
        state.output.json({**deployment, "config_version": version})
        return
    state.output.result(
        f"created deployment {name} ({tool}, runners with {show_labels(body['required_labels'])})"
    )
    if version is not None:
        state.output.result(describe_version(name, version))
    else:
        state.output.note(f"no configuration yet: iac deployments upload {name} --dir DIR")


@deployments.command("upload")
@click.argument("name")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="The configuration's root module (.terraform/ and *.tfstate* are left out).",
)
@json_option
@pass_state
def upload_command(state: State, name: str, directory: Path, as_json: bool) -> None:
    """Upload --dir as a new configuration version of NAME (used by the next run)."""
    version = upload(state.api, name, pack_directory(directory))
    if as_json:
        state.output.json(version)
        return
    state.output.result(describe_version(name, version))


@deployments.command("list")
@click.option("--deleted", is_flag=True, help="List deleted deployments (restorable until purged).")
@json_option
@pass_state
def list_deployments(state: State, deleted: bool, as_json: bool) -> None:
    """List deployments (with --deleted: the deleted ones, and when each is purged)."""
    rows = state.api.get("/deployments", deleted="true" if deleted else None)
    if as_json:
        state.output.json(rows)
        return
    if not rows:
        state.output.note(
            "no deleted deployments"
            if deleted
            else "no deployments: iac deployments create NAME --dir DIR"
        )
        return
    if deleted:
        state.output.table(
            ["NAME", "TOOL", "DELETED", "PURGED AFTER"],
            [
                [d["name"], d["tool"], show_time(d["deleted_at"]), show_time(d["purge_after"])]
                for d in rows
            ],
        )
        return
    state.output.table(
        ["NAME", "TOOL", "RUNNER LABELS", "PRIORITY", "CREATED"],
        [
            [
                d["name"],
                d["tool"],
                show_labels(d["required_labels"]),
                str(d["default_priority"]),
                show_time(d["created_at"]),
            ]
            for d in rows
        ],
    )


@deployments.command("show")
@click.argument("name")
@json_option
@pass_state
def show(state: State, name: str, as_json: bool) -> None:
    """Show a deployment: settings, configuration versions, variables, recent runs."""
    api = state.api
    deployment = api.get(f"/deployments/{seg(name)}")
    versions = api.get(f"/deployments/{seg(name)}/config")
    variables = api.get(f"/deployments/{seg(name)}/variables")
    runs = api.get("/runs", deployment=name, limit=5)
    if as_json:
        state.output.json(
            {**deployment, "config_versions": versions, "variables": variables, "recent_runs": runs}
        )
        return
    latest = versions[-1] if versions else None
    state.output.fields(
        [
            ("name", deployment["name"]),
            ("tool", deployment["tool"]),
            ("version constraint", deployment.get("version_constraint") or "-"),
            ("runner labels", show_labels(deployment["required_labels"])),
            ("default priority", str(deployment["default_priority"])),
            ("created", show_time(deployment["created_at"])),
            ("managed resources", str(deployment.get("managed_resources", "-"))),
            (
                "configuration",
                f"version {latest['version']} of {len(versions)}, {latest['size']} bytes, "
                f"uploaded {show_time(latest['created_at'])}"
                if latest
                else "none uploaded",
            ),
            (
                "variables",
                ", ".join(
                    f"{v['key']}{' (env)' if v['category'] == 'env' else ''}"
                    f"{' (sensitive)' if v['sensitive'] else ''}"
                    for v in variables
                )
                or "-",
            ),
        ]
    )
    if runs:
        state.output.result("")
        state.output.table(
            ["RUN", "OPERATION", "STATUS", "CREATED", "RUNNING", "WAITED"],
            [
                [
                    str(r["id"]),
                    r["operation"],
                    r["status"],
                    show_time(r["created_at"]),
                    run_duration(r),
                    run_waited(r),
                ]
                for r in runs
            ],
        )


@deployments.command("delete")
@click.argument("name")
@click.option(
    "--force",
    is_flag=True,
    help="No confirmation, and delete even if its latest state still manages resources.",
)
@click.option(
    "--purge",
    is_flag=True,
    help="Remove an already deleted deployment for good, with its state versions and runs.",
)
@json_option
@pass_state
def delete(state: State, name: str, force: bool, purge: bool, as_json: bool) -> None:
    """Delete a deployment. It is kept, hidden, with its state versions, runs, logs,
    variables and configurations for the backend's retention period, and can be restored
    until then (iac deployments restore NAME). Asks you to type NAME on a terminal; needs
    --force when stdin is not a terminal or its latest state still manages resources.
    With --purge, remove a deleted deployment for good."""
    if purge:
        if not force:
            confirm(
                "deployment",
                name,
                f"Purging removes the deleted deployment {name} for good, with its state "
                "versions, runs, logs, variables and configuration versions. It cannot be "
                "undone.",
                "purge",
            )
        state.api.request("DELETE", f"/deployments/{seg(name)}", params={"purge": "true"})
        if as_json:
            state.output.json({"name": name, "purged": True})
        else:
            state.output.result(f"purged deployment {name}")
        return
    if not force:
        deployment = state.api.get(f"/deployments/{seg(name)}")
        count = int(deployment.get("managed_resources") or 0)
        if count:
            things = "resource" if count == 1 else "resources"
            raise CliError(
                f"deployment {name} still manages {count} {things} in its latest state; "
                f"destroy them first (iac destroy {name}) or delete with --force",
                EXIT_USAGE,
            )
        confirm(
            "deployment",
            name,
            f"Deleting deployment {name} hides it with its state versions, runs, logs, "
            "variables and configuration versions. The backend keeps them for its retention "
            "period (IAC_DELETED_RETENTION_DAYS, 30 days by default), then purges them; until "
            f"then `iac deployments restore {name}` brings it all back.",
            "delete",
        )
    deleted = state.api.json(
        "DELETE", f"/deployments/{seg(name)}", params={"force": str(force).lower()}
    )
    if as_json:
        state.output.json(deleted)
        return
    state.output.result(
        f"deleted deployment {name}: kept until {show_time(deleted.get('purge_after'))}, then "
        f"purged; restore it with: iac deployments restore {name}"
    )


@deployments.command("restore")
@click.argument("name")
@json_option
@pass_state
def restore(state: State, name: str, as_json: bool) -> None:
    """Bring back a deleted deployment with its state versions, runs, logs, variables and
    configurations."""
    restored = state.api.json("POST", f"/deployments/{seg(name)}/restore")
    if as_json:
        state.output.json(restored)
        return
    state.output.result(f"restored deployment {name}")
