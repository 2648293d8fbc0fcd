"""Configuration archives: safe validation of an uploaded tar.gz or zip, and its normal form.

Whatever comes in, what gets stored is a fresh tar.gz holding only regular files and
directories with plain permissions, so a runner unpacks exactly what was checked here. The
checks: no absolute paths, no ``..``, no links, devices or fifos, no duplicate names, caps on
the number of entries and on the unpacked size (counted while reading, so a compression bomb
is stopped early), and at least one ``*.tf`` / ``*.tofu`` file at the top level. An archive
whose files all sit in one top-level folder (``tar czf c.tgz myconfig/``) is unwrapped.

Pure and blocking: the API calls it in a worker thread.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import stat
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import IO

from backend.errors import Invalid, TooLarge

CONFIG_SUFFIXES = (".tf", ".tofu", ".tf.json", ".tofu.json")
_READ_BLOCK = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    max_files: int
    max_unpacked_bytes: int


@dataclass(frozen=True)
class NormalizedArchive:
    data: bytes  # tar.gz
    sha256: str
    files: int


@dataclass
class _Entry:
    path: str
    is_dir: bool
    data: bytes
    executable: bool


def _clean_path(raw: str) -> str:
    """The entry's relative path, or Invalid saying what is wrong with it."""
    if "\x00" in raw:
        raise Invalid(f"archive entry {raw!r} has a NUL byte in its name")
    if "\\" in raw:
        raise Invalid(f"archive entry {raw!r} uses backslashes; use '/' as the separator")
    if raw.startswith("/"):
        raise Invalid(f"archive entry {raw!r} is an absolute path; entries must be relative")
    parts = [p for p in PurePosixPath(raw).parts if p != "."]
    if ".." in parts:
        raise Invalid(f"archive entry {raw!r} contains '..'; entries must stay inside the archive")
    return "/".join(parts)


class _Budget:
    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.files = 0
        self.bytes = 0

    def entry(self) -> None:
        self.files += 1
        if self.files > self.limits.max_files:
            raise TooLarge(f"archive has more than {self.limits.max_files} entries")

    def grow(self, n: int) -> None:
        self.bytes += n
        if self.bytes > self.limits.max_unpacked_bytes:
            raise TooLarge(f"archive unpacks to more than {self.limits.max_unpacked_bytes} bytes")


def _read_capped(stream: IO[bytes], budget: _Budget) -> bytes:
    out = bytearray()
    while True:
        block = stream.read(_READ_BLOCK)
        if not block:
            return bytes(out)
        budget.grow(len(block))
        out += block


def _tar_entries(data: bytes, budget: _Budget) -> list[_Entry]:
    entries = []
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            for member in tar:
                budget.entry()
                path = _clean_path(member.name)
                if member.isdir():
                    entries.append(_Entry(path, True, b"", False))
                elif member.isreg():
                    if member.size > budget.limits.max_unpacked_bytes:
                        raise TooLarge(
                            f"archive entry {member.name!r} is larger than "
                            f"{budget.limits.max_unpacked_bytes} bytes"
                        )
                    f = tar.extractfile(member)
                    content = _read_capped(f, budget) if f is not None else b""
                    entries.append(_Entry(path, False, content, bool(member.mode & 0o111)))
                elif member.issym() or member.islnk():
                    raise Invalid(
                        f"archive entry {member.name!r} is a link; only regular files and "
                        "directories are allowed"
                    )
                else:
                    raise Invalid(
                        f"archive entry {member.name!r} is a device, fifo or other special "
                        "file; only regular files and directories are allowed"
                    )
    except (tarfile.TarError, EOFError, gzip.BadGzipFile, OSError) as exc:
        raise Invalid(f"not a valid tar.gz archive: {exc}") from None
    return entries


def _zip_entries(data: bytes, budget: _Budget) -> list[_Entry]:
    entries = []
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            for info in zf.infolist():
                budget.entry()
                path = _clean_path(info.filename)
                mode = info.external_attr >> 16
                if info.flag_bits & 0x1:
                    raise Invalid(f"archive entry {info.filename!r} is encrypted")
                if stat.S_ISLNK(mode):
                    raise Invalid(
                        f"archive entry {info.filename!r} is a link; only regular files and "
                        "directories are allowed"
                    )
                # Many zip writers leave the file-type bits at 0; only a type that is set counts.
                if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
                    raise Invalid(
                        f"archive entry {info.filename!r} is a special file; only regular "
                        "files and directories are allowed"
                    )
                if info.is_dir():
                    entries.append(_Entry(path, True, b"", False))
                    continue
                # The header's file_size may lie; the budget counts what actually comes out.
                with zf.open(info) as f:
                    content = _read_capped(f, budget)
                entries.append(_Entry(path, False, content, bool(mode & 0o111)))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError) as exc:
        raise Invalid(f"not a valid zip archive: {exc}") from None
    return entries


def _unwrap_single_folder(entries: list[_Entry]) -> list[_Entry]:
    files = [e for e in entries if not e.is_dir]
    if any("/" not in e.path and e.path.endswith(CONFIG_SUFFIXES) for e in files):
        return entries
    tops = {e.path.split("/", 1)[0] for e in entries if e.path}
    if len(tops) != 1:
        return entries
    (top,) = tops
    if not any(e.path == top and e.is_dir for e in entries) and not all(
        e.path.startswith(top + "/") for e in files
    ):
        return entries
    prefix = top + "/"
    return [
        _Entry(e.path[len(prefix) :], e.is_dir, e.data, e.executable)
        for e in entries
        if e.path.startswith(prefix)
    ]


def _pack(entries: list[_Entry]) -> bytes:
    buf = io.BytesIO()
    # mtime=0 in the gzip header and sorted entries: the same files give the same sha256.
    with (
        gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for e in sorted(entries, key=lambda e: e.path):
            info = tarfile.TarInfo(e.path)
            info.mtime = 0
            if e.is_dir:
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
            else:
                info.mode = 0o755 if e.executable else 0o644
                info.size = len(e.data)
                tar.addfile(info, io.BytesIO(e.data))
    return buf.getvalue()


def normalize(data: bytes, limits: Limits) -> NormalizedArchive:
    """Validate an uploaded tar.gz or zip and return it as a normalised tar.gz."""
    budget = _Budget(limits)
    if data[:2] == b"\x1f\x8b":
        entries = _tar_entries(data, budget)
    elif data[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        entries = _zip_entries(data, budget)
    else:
        raise Invalid("the configuration must be a tar.gz or zip archive")
    entries = [e for e in entries if e.path]
    seen: dict[str, bool] = {}
    for e in entries:
        if e.path in seen and not (e.is_dir and seen[e.path]):
            raise Invalid(f"archive has {e.path!r} twice")
        seen[e.path] = e.is_dir
    entries = _unwrap_single_folder(entries)
    files = [e for e in entries if not e.is_dir]
    if not any("/" not in e.path and e.path.endswith(CONFIG_SUFFIXES) for e in files):
        raise Invalid(
            "archive has no *.tf or *.tofu file at its top level; put the root module's "
            "files at the archive's root"
        )
    packed = _pack(entries)
    return NormalizedArchive(packed, hashlib.sha256(packed).hexdigest(), len(files))
