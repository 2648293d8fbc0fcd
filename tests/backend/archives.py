"""Builders of configuration archives (good and hostile) for the tests."""

from __future__ import annotations

import gzip
import io
import tarfile
import zipfile
from collections.abc import Mapping

MAIN_TF = b"""\
resource "terraform_data" "example" {
  input = "hello"
}
"""


def tar_gz(
    files: Mapping[str, bytes | str] | None = None, *, extra: list[tarfile.TarInfo] | None = None
) -> bytes:
    """A tar.gz of ``files`` (default: one main.tf; text is UTF-8) plus raw ``extra`` members."""
    files = {"main.tf": MAIN_TF} if files is None else files
    buf = io.BytesIO()
    # mtime=0: the same files give the same bytes (test ids are stable across processes).
    with (
        gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w") as tar,
    ):
        for name, content in files.items():
            data = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
        for member in extra or []:
            tar.addfile(member)
    return buf.getvalue()


def member(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


def zip_bytes(
    files: dict[str, bytes] | None = None, *, symlinks: dict[str, str] | None = None
) -> bytes:
    files = {"main.tf": MAIN_TF} if files is None else files
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = 0o120777 << 16
            zf.writestr(info, target)
    return buf.getvalue()


def names_in(tar_gz_bytes: bytes) -> dict[str, bytes | None]:
    """The members of a tar.gz: file name → content (None for directories)."""
    out: dict[str, bytes | None] = {}
    with tarfile.open(fileobj=io.BytesIO(tar_gz_bytes), mode="r:gz") as tar:
        for m in tar:
            f = tar.extractfile(m) if m.isreg() else None
            out[m.name] = f.read() if f is not None else None
    return out
