"""Keep plugin file access inside the data directory.

A path given in a pipeline is relative to the data directory. It is refused when it
contains ``..``, is absolute and outside the directory, or resolves (through symlinks)
to somewhere outside it.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath, PureWindowsPath

from mimir.core.errors import PathEscapeError

__all__ = ["resolve_data_path"]


def resolve_data_path(data_dir: Path, path: str, *, for_write: bool = False) -> Path:
    """The real path of ``path`` inside ``data_dir``; raise :class:`PathEscapeError` if not.

    With ``for_write`` the missing parent directories are created (inside ``data_dir``).
    """
    if not isinstance(path, str) or not path.strip():
        raise PathEscapeError("file path is empty")
    if "\x00" in path:
        raise PathEscapeError(f"file path {path!r} contains a NUL byte")
    if ".." in PurePosixPath(path).parts or ".." in PureWindowsPath(path).parts:
        raise PathEscapeError(
            f"file path {path!r} contains '..'; paths must stay inside the data directory"
        )
    root = data_dir.expanduser().resolve()
    given = Path(path).expanduser() if path.startswith("~") else Path(path)
    candidate = given if given.is_absolute() else root / given
    resolved = candidate.resolve()
    if not resolved.is_relative_to(root):
        if given.is_absolute() and not candidate.absolute().is_relative_to(root):
            reason = "is outside"
        else:  # '..' is refused above, so only a symlink can lead out from here
            reason = "leads (through a symlink) outside"
        raise PathEscapeError(f"file path {path!r} {reason} the data directory {str(root)!r}")
    if for_write:
        resolved.parent.mkdir(parents=True, exist_ok=True)
    return resolved
