"""Whether a plot can be written where a flag asks, found out before any training: matplotlib importable, a
format it writes, a folder that exists or can be made and can be written."""
from __future__ import annotations

import os
from pathlib import Path

from .. import plots
from .errors import RunFolderError


def check_plot_path(path, flag: str = "--plot") -> None:
    """RunFolderError unless matplotlib can write a plot to ``path``: installed, a format it knows, a writable
    folder, and no folder of that name."""
    path = Path(path)
    try:
        plots._pyplot()
    except RuntimeError as exc:
        raise RunFolderError(f"{flag} {path}: {exc}") from None
    formats = plots.supported_formats()
    if path.suffix and path.suffix[1:].lower() not in formats:
        raise RunFolderError(f"{flag} {path}: matplotlib cannot write {path.suffix} files; use one of "
                             f"{', '.join('.' + f for f in sorted(formats))}")
    if path.exists() and not path.is_file():
        raise RunFolderError(f"{flag} {path}: exists and is not a file")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunFolderError(f"{flag} {path}: cannot create its folder {path.parent} ({exc.strerror or exc})") from None
    require_writable_folder(path.parent, flag)


def require_writable_folder(folder: Path, flag: str) -> None:
    """Create and remove a probe file in ``folder`` (permission bits alone do not tell: root, read-only mounts)."""
    probe = folder / f".gpunet-probe.{os.getpid()}.tmp"
    try:
        probe.unlink(missing_ok=True)  # left by an earlier process of this pid that was killed here
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.unlink(probe)
    except OSError as exc:
        raise RunFolderError(f"{flag} {folder}: cannot write there ({exc.strerror or exc})") from None
