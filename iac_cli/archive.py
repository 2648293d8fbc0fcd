"""A configuration directory packed as tar.gz in memory, ready for upload.

Left out: ``.terraform/`` (providers and modules ``init`` downloaded), ``.git/``, and any
``*.tfstate*`` file (state lives in the backend; a stray local state must never travel).
Symbolic links to files are stored as the files they point to; the archive holds only
regular files and directories, as the backend requires.
"""

from __future__ import annotations

import fnmatch
import gzip
import io
import os
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path

from iac_cli.errors import UsageError

SKIPPED_DIRS = frozenset({".terraform", ".git"})
SKIPPED_FILES = ("*.tfstate", "*.tfstate.*")


@dataclass(frozen=True)
class PackedConfig:
    data: bytes
    files: list[str]


def skipped(relative: str, is_dir: bool) -> bool:
    name = relative.rsplit("/", 1)[-1]
    if is_dir:
        return name in SKIPPED_DIRS
    return any(fnmatch.fnmatch(name, pattern) for pattern in SKIPPED_FILES)


def pack_directory(directory: Path) -> PackedConfig:
    """The directory's files (sorted, so the same tree packs to the same bytes)."""
    root = directory.expanduser()
    if not root.is_dir():
        raise UsageError(f"--dir {directory}: not a directory")
    files: list[str] = []
    raw = io.BytesIO()
    # mtime=0 in the gzip header: the same files give the same archive, hence the same sha256.
    with (
        gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for current, dirnames, filenames in os.walk(root):
            rel_dir = Path(current).relative_to(root).as_posix()
            prefix = "" if rel_dir == "." else rel_dir + "/"
            kept = []
            for name in sorted(dirnames):
                path = Path(current) / name
                if skipped(prefix + name, is_dir=True):
                    continue
                if path.is_symlink():
                    raise UsageError(
                        f"{path} is a symbolic link to a directory; copy the directory instead"
                    )
                kept.append(name)
                _add_dir(tar, prefix + name, path)
            dirnames[:] = kept
            for name in sorted(filenames):
                relative = prefix + name
                if skipped(relative, is_dir=False):
                    continue
                _add_file(tar, relative, Path(current) / name)
                files.append(relative)
    if not files:
        raise UsageError(f"--dir {directory}: no files to upload")
    return PackedConfig(raw.getvalue(), files)


def _add_dir(tar: tarfile.TarFile, name: str, path: Path) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    info.mtime = int(path.stat().st_mtime)
    tar.addfile(info)


def _add_file(tar: tarfile.TarFile, name: str, path: Path) -> None:
    try:
        st = path.stat()  # follows a symbolic link to the file it names
    except FileNotFoundError:
        raise UsageError(f"{path} is a broken symbolic link") from None
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise UsageError(f"{path} is not a regular file (sockets, fifos and devices can't go)")
    info = tarfile.TarInfo(name)
    info.size = st.st_size
    info.mode = 0o755 if st.st_mode & stat.S_IXUSR else 0o644
    info.mtime = int(st.st_mtime)
    try:
        with open(path, "rb") as f:
            tar.addfile(info, f)
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror or exc}") from None
