"""A run's directory: resolved inside the workspace root, made private, unpacked safely,
collected, removed.

What the runner writes is its user's alone: directories 0700, files 0600 (owner's execute
bit kept). A saved plan and a state hold secrets; the tool itself runs with umask 077.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tarfile
from dataclasses import dataclass

from runner_stdio.protocol import RequestError


class WorkspaceError(Exception):
    """A workspace archive or collect path was refused; the message says why."""


class Mismatch(Exception):
    """A file of work_dir is not the one the request names by its digest."""


@dataclass(frozen=True)
class Limits:
    max_archive_bytes: int = 64 * 1024 * 1024  # unpacked size of a workspace archive
    max_archive_files: int = 10_000
    max_artifact_bytes: int = 64 * 1024 * 1024  # all collected files of one run


def work_dir_path(root: str, work_dir: str, default_name: str) -> str:
    """The absolute path of `work_dir` (or root/`default_name`) checked to stay inside root.

    The directory need not exist yet; existing symlinks on the way are followed.
    """
    real_root = os.path.realpath(root)
    path = os.path.realpath(os.path.join(real_root, work_dir or default_name))
    if path == real_root or not path.startswith(real_root + os.sep):
        raise RequestError(
            f"work_dir {work_dir!r} must be a directory inside the workspace root {root!r}"
        )
    if os.path.exists(path) and not os.path.isdir(path):
        raise RequestError(f"work_dir {work_dir!r} is not a directory")
    return path


def make_private_dirs(root: str, path: str) -> None:
    """Create `path` and any missing parents below `root` with mode 0700 (whatever the
    umask); an existing directory is left as it is, and a missing root is created as
    the operator's umask says."""
    real_root = os.path.realpath(root)
    os.makedirs(real_root, exist_ok=True)
    missing: list[str] = []
    current = path
    while not os.path.isdir(current) and current.startswith(real_root + os.sep):
        missing.append(current)
        current = os.path.dirname(current)
    for directory in reversed(missing):
        try:
            os.mkdir(directory, 0o700)
        except FileExistsError:
            if not os.path.isdir(directory):
                raise
            continue
        os.chmod(directory, 0o700)  # mkdir's mode is filtered by the umask


def _private(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo:
    """The "data" filter (no absolute paths, no `..`, no links out, no devices), then
    modes for the owner only: files 0600 (0700 if executable), directories 0700."""
    member = tarfile.data_filter(member, dest)
    if member.isdir():
        return member.replace(mode=0o700, deep=False)
    if member.isfile():
        mode = 0o700 if (member.mode or 0) & 0o100 else 0o600
        return member.replace(mode=mode, deep=False)
    return member


def unpack(archive: bytes, dest: str, limits: Limits) -> int:
    """Unpack a tar.gz (or plain tar) into `dest`. Refuses absolute paths, `..`, links
    that point out, devices, and archives over the size or file-count cap. Returns the
    number of members written."""
    try:
        tar = tarfile.open(fileobj=io.BytesIO(archive), mode="r:*")
    except (tarfile.TarError, EOFError, OSError) as exc:  # EOFError: a truncated gzip
        raise WorkspaceError(f"workspace is not a tar or tar.gz archive: {exc}") from None
    members: list[tarfile.TarInfo] = []
    total = 0
    with tar:
        try:
            # Iterate lazily so a bomb is stopped at the cap, not after decompressing it all.
            for member in tar:
                members.append(member)
                total += member.size
                if len(members) > limits.max_archive_files:
                    raise WorkspaceError(
                        f"workspace archive has more than {limits.max_archive_files} entries"
                    )
                if total > limits.max_archive_bytes:
                    raise WorkspaceError(
                        f"workspace archive unpacks to more than {limits.max_archive_bytes} bytes"
                    )
                if member.isdev() or member.isfifo():
                    raise WorkspaceError(f"workspace archive entry {member.name!r} is a device")
                if member.name.startswith("/") or ".." in member.name.split("/"):
                    raise WorkspaceError(
                        f"workspace archive refused: entry {member.name!r} points outside work_dir"
                    )
            os.makedirs(dest, mode=0o700, exist_ok=True)
            tar.extractall(dest, members=members, filter=_private)
        except tarfile.FilterError as exc:
            raise WorkspaceError(f"workspace archive refused: {exc}") from None
        except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
            if isinstance(exc, WorkspaceError):
                raise
            raise WorkspaceError(f"workspace archive could not be unpacked: {exc}") from None
    return len(members)


def collect(work_dir: str, paths: list[str], limits: Limits) -> tuple[list[tuple[str, bytes]], str]:
    """Read the files named in `paths` (relative to work_dir). Returns the artifacts and
    a message about any that were missing, refused or over the cap ("" when none)."""
    found: list[tuple[str, bytes]] = []
    problems: list[str] = []
    total = 0
    real = os.path.realpath(work_dir)
    for rel in paths:
        path = os.path.realpath(os.path.join(real, rel))
        if os.path.isabs(rel) or not path.startswith(real + os.sep):
            problems.append(f"{rel!r} is outside work_dir")
            continue
        if not os.path.isfile(path):
            problems.append(f"{rel!r} not found")
            continue
        size = os.path.getsize(path)
        if total + size > limits.max_artifact_bytes:
            problems.append(f"{rel!r} is over the {limits.max_artifact_bytes} byte artifact cap")
            continue
        with open(path, "rb") as f:
            found.append((rel, f.read()))
        total += size
    return found, ("collect: " + "; ".join(problems)) if problems else ""


def sha256_of(work_dir: str, rel: str) -> str:
    """The SHA-256 (hex) of a regular file inside work_dir, "" when there is none (missing,
    outside work_dir, or not a regular file)."""
    real = os.path.realpath(work_dir)
    path = os.path.realpath(os.path.join(real, rel))
    if not path.startswith(real + os.sep) or not os.path.isfile(path):
        return ""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def remove(root: str, work_dir: str) -> None:
    """Delete a run's directory (never the root itself)."""
    real_root = os.path.realpath(root)
    path = os.path.realpath(work_dir)
    if path.startswith(real_root + os.sep):
        shutil.rmtree(path, ignore_errors=True)
