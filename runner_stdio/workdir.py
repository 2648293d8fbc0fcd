"""Where a run may execute: `work_dir` confined to the workspace root."""

from __future__ import annotations

import os

from runner_stdio.protocol import RequestError


def resolve_work_dir(work_dir: str | None, root: str | None) -> str | None:
    """The real path of `work_dir`, checked to be an existing directory inside `root`.

    A relative `work_dir` is taken relative to `root` (or the current directory when
    there is no root). Symlinks are followed before the check, so a link that points
    out of the root is refused. None means "use a temporary directory".
    """
    if work_dir is None:
        return None
    base = root if root else os.getcwd()
    path = os.path.realpath(os.path.join(base, work_dir))
    if root:
        real_root = os.path.realpath(root)
        if path != real_root and not path.startswith(real_root.rstrip(os.sep) + os.sep):
            raise RequestError(f"work_dir {work_dir!r} is outside the workspace root {root!r}")
    if not os.path.exists(path):
        raise RequestError(f"work_dir {work_dir!r} does not exist")
    if not os.path.isdir(path):
        raise RequestError(f"work_dir {work_dir!r} is not a directory")
    return path
