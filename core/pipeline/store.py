"""Pipeline YAML files in ``MIMIR_PIPELINES_DIR``: list, get, save and delete by name.

A stored pipeline's *name* is its file name without ``.yaml``/``.yml``
(``sales-report`` ↔ ``sales-report.yaml``); looking up a name also finds a file whose
pipeline declares that ``name:``. Names are safe file names (letters, digits, ``.``,
``_``, ``-``), so no name reaches outside the directory. ``pipeline_file`` references
(the seed's ``"test_pipeline.yaml"``) are resolved inside the directory only: ``..``,
absolute paths elsewhere and symlinks out are refused.

Parsed pipelines are cached by file path, size and modification time, so resolving the
same file for every request costs a ``stat``, not a parse.
"""

from __future__ import annotations

import os
import re
import stat
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

from mimir.core.durable import sync_directory
from mimir.core.errors import (
    PathEscapeError,
    PipelineExistsError,
    PipelineNotFoundError,
    PipelineValidationError,
)
from mimir.core.pipeline.issues import ValidationIssue
from mimir.core.pipeline.loader import load_pipeline
from mimir.core.pipeline.models import Pipeline
from mimir.core.plugins.registry import PluginRegistry

__all__ = [
    "PIPELINE_NAME_PATTERN",
    "PipelineStore",
    "PipelineSummary",
    "StoredPipeline",
    "load_pipeline_text",
]

#: A stored pipeline's name: a safe file name without its extension.
PIPELINE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
_NAME = re.compile(PIPELINE_NAME_PATTERN)
#: Names that are API paths of their own (``POST /api/v1/pipelines/execute``).
RESERVED_NAMES = frozenset({"execute", "validate"})


def _valid_name(bare: str) -> bool:
    # fullmatch: with match, "$" also matches before a trailing newline ("abc\n").
    return (
        bool(_NAME.fullmatch(bare))
        and bare not in {".", ".."}
        and (bare.lower() not in RESERVED_NAMES)
    )


_SUFFIXES = (".yaml", ".yml")
#: Parsed pipelines kept in memory per store.
_CACHE_SIZE = 256


def load_pipeline_text(
    text: str,
    *,
    source: str | None = None,
    registry: PluginRegistry | None = None,
    strict: bool = False,
    context_keys: frozenset[str] | set[str] | None = None,
) -> Pipeline:
    """A validated pipeline from YAML ``text`` (never read as a file path).

    :func:`load_pipeline` takes a one-line ``str`` ending in ``.yaml`` for a path; text
    from a request must never be, so it always gets a newline. ``source`` names the text
    in error messages; ``strict`` and ``context_keys`` are :func:`load_pipeline`'s.
    """
    if not text.endswith("\n"):
        text += "\n"
    try:
        return load_pipeline(text, registry=registry, strict=strict, context_keys=context_keys)
    except PipelineValidationError as exc:
        if source is None:
            raise
        raise PipelineValidationError(
            exc.errors, source, warnings=exc.warnings, notes=exc.notes
        ) from None


@dataclass(frozen=True)
class PipelineSummary:
    """One line of the pipeline list."""

    #: The name used in URLs and ``pipeline_name`` (the file name without extension).
    name: str
    #: The file name inside the pipelines directory.
    file: str
    #: The name the YAML declares (``name:``); may differ from ``name``.
    pipeline_name: str | None
    description: str
    #: Number of steps (0 when the file does not validate).
    steps: int
    #: Why the file does not validate, or ``None``.
    error: str | None = None

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {
            "name": self.name,
            "file": self.file,
            "pipeline_name": self.pipeline_name,
            "description": self.description,
            "steps": self.steps,
            "valid": self.error is None,
            "error": self.error,
        }


@dataclass(frozen=True)
class StoredPipeline:
    """A stored pipeline: its name, file, YAML text and validated model."""

    name: str
    file: str
    yaml: str
    pipeline: Pipeline


def _publish_new(temporary: str, target: Path) -> bool:
    """Give the complete file ``temporary`` the name ``target`` unless that name exists
    (then ``False``). ``temporary`` stays: the caller removes it."""
    try:
        os.link(temporary, target)
        return True
    except FileExistsError:
        return False
    except OSError:
        pass  # no hard links on this file system: claim the name, then fill it
    try:
        os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        return False
    os.replace(temporary, target)  # an empty file for a moment, never a partial one
    return True


def _umask() -> int:
    """The process's umask (read from ``/proc`` where there is one: setting it to read it
    back would race with other threads creating files)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _mode_for(existing: Path | None) -> int:
    """A saved file's mode: the file's own when it replaces one, else 0666 less the umask
    (what any editor's new file gets), never mkstemp's 0600."""
    if existing is not None:
        try:
            return stat.S_IMODE(existing.stat().st_mode)
        except OSError:
            pass
    return 0o666 & ~_umask()


class PipelineStore:
    """The pipeline files of one directory. Safe to share between threads."""

    def __init__(self, directory: Path, registry: PluginRegistry | None = None) -> None:
        self.directory = Path(directory).expanduser()
        self._registry = registry
        self._cache: dict[Path, tuple[int, int, int, str, Pipeline]] = {}
        self._lock = threading.Lock()

    # -- names and paths -------------------------------------------------------------

    @staticmethod
    def check_name(name: str) -> str:
        """``name`` without a ``.yaml``/``.yml`` suffix; :class:`PathEscapeError` if unsafe."""
        bare = name
        for suffix in _SUFFIXES:
            if bare.lower().endswith(suffix):
                bare = bare[: -len(suffix)]
                break
        if bare.lower() in RESERVED_NAMES:
            raise PathEscapeError(
                f"invalid pipeline name {name!r}: {', '.join(sorted(RESERVED_NAMES))} are "
                "reserved (they are API paths under /api/v1/pipelines/)"
            )
        if not _valid_name(bare):
            raise PathEscapeError(
                f"invalid pipeline name {name!r}: use letters, digits, '.', '_' and '-' "
                f"(starting with a letter or digit, at most 128 characters)"
            )
        return bare

    def _root(self) -> Path:
        return self.directory.resolve()

    def _existing_file(self, name: str) -> Path | None:
        bare = self.check_name(name)
        root = self._root()
        for suffix in _SUFFIXES:
            path = root / f"{bare}{suffix}"
            if path.is_file():
                return self._inside(path, name)
        return None

    def _inside(self, path: Path, given: str) -> Path:
        root = self._root()
        resolved = path.resolve()
        if not resolved.is_relative_to(root):
            raise PathEscapeError(
                f"pipeline file {given!r} leads (through a symlink) outside the pipelines directory"
            )
        return resolved

    def resolve_file(self, file: str) -> Path:
        """The path of ``pipeline_file`` ``file`` inside the directory (``.yaml`` optional).

        Raises :class:`PathEscapeError` for ``..``, an absolute path elsewhere or a
        symlink out, :class:`PipelineNotFoundError` when there is no such file.
        """
        if not isinstance(file, str) or not file.strip():
            raise PathEscapeError("pipeline_file is empty")
        if "\x00" in file:
            raise PathEscapeError("pipeline_file contains a NUL byte")
        if ".." in PurePosixPath(file).parts or ".." in PureWindowsPath(file).parts:
            raise PathEscapeError(
                f"pipeline_file {file!r} contains '..'; it must name a file inside the "
                f"pipelines directory"
            )
        root = self._root()
        given = Path(file)
        if given.is_absolute() and not given.absolute().is_relative_to(root):
            raise PathEscapeError(
                f"pipeline_file {file!r} is outside the pipelines directory; give a name "
                f"relative to it, such as 'test_pipeline.yaml'"
            )
        candidate = given if given.is_absolute() else root / given
        options = [candidate]
        if candidate.suffix.lower() not in _SUFFIXES:
            options += [candidate.with_name(candidate.name + suffix) for suffix in _SUFFIXES]
        for option in options:
            if option.is_file():
                return self._inside(option, file)
        raise PipelineNotFoundError(
            f"pipeline file {file!r} not found in the pipelines directory "
            f"(available: {self._available()})"
        )

    def _available(self) -> str:
        names = [path.name for path in self._files()][:20]
        return ", ".join(names) or "none"

    def _files(self) -> list[Path]:
        root = self._root()
        if not root.is_dir():
            return []
        return sorted(
            path
            for path in root.iterdir()
            if path.suffix.lower() in _SUFFIXES and path.is_file() and _valid_name(path.stem)
        )

    # -- reading ---------------------------------------------------------------------

    def load_file(self, path: Path, *, label: str | None = None) -> tuple[str, Pipeline]:
        """The text and validated pipeline of ``path`` (cached while the file is unchanged)."""
        try:
            stat = path.stat()
        except FileNotFoundError:
            raise PipelineNotFoundError(f"pipeline file {label or path.name!r} not found") from None
        # The inode too: a file replaced (os.replace) within one mtime tick, same size.
        key = (stat.st_size, stat.st_mtime_ns, stat.st_ino)
        with self._lock:
            cached = self._cache.get(path)
        if cached is not None and cached[:3] == key:
            return cached[3], cached[4]
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise PipelineNotFoundError(
                f"cannot read pipeline file {label or path.name!r}: {exc}"
            ) from None
        pipeline = load_pipeline_text(text, source=label or path.name, registry=self._registry)
        with self._lock:
            if len(self._cache) >= _CACHE_SIZE:
                self._cache.pop(next(iter(self._cache)))
            self._cache[path] = (*key, text, pipeline)
        return text, pipeline

    def list(self) -> list[PipelineSummary]:
        """Every pipeline file in the directory, valid or not (``error`` says why not)."""
        summaries = []
        for path in self._files():
            try:
                _, pipeline = self.load_file(path)
            except (PipelineValidationError, PipelineNotFoundError) as exc:
                summaries.append(PipelineSummary(path.stem, path.name, None, "", 0, error=str(exc)))
                continue
            summaries.append(
                PipelineSummary(
                    path.stem, path.name, pipeline.name, pipeline.description, len(pipeline.steps)
                )
            )
        return summaries

    def get(self, name: str, *, declared: bool = True) -> StoredPipeline:
        """The pipeline called ``name``: its file's stem, else (with ``declared``) the
        ``name:`` a file declares."""
        path = self._existing_file(name)
        if path is None and declared:
            path = self._declared(name)
        if path is None:
            raise PipelineNotFoundError(
                f"no pipeline named {name!r} in the pipelines directory "
                f"(available: {', '.join(s.name for s in self.list()[:20]) or 'none'})"
            )
        text, pipeline = self.load_file(path)
        return StoredPipeline(path.stem, path.name, text, pipeline)

    def _declared(self, name: str) -> Path | None:
        for path in self._files():
            try:
                _, pipeline = self.load_file(path)
            except (PipelineValidationError, PipelineNotFoundError):
                continue
            if pipeline.name == name:
                return path
        return None

    def read_text(self, name: str) -> tuple[str, str]:
        """The file name and text of ``name`` (by file name), valid or not: for editing."""
        path = self._existing_file(name)
        if path is None:
            raise PipelineNotFoundError(f"no pipeline file named {name!r}")
        try:
            return path.name, path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise PipelineNotFoundError(f"cannot read pipeline file {path.name!r}: {exc}") from None

    def exists(self, name: str) -> bool:
        """True when a file for ``name`` exists (by file name only)."""
        return self._existing_file(name) is not None

    # -- writing ---------------------------------------------------------------------

    def save(
        self, name: str, text: str, *, create: bool = False, strict: bool = False
    ) -> tuple[StoredPipeline, bool]:
        """Validate ``text`` and write it as ``<name>.yaml`` (atomically).

        With ``create``, an existing name is a :class:`PipelineExistsError`; with ``strict``,
        fields the pipeline model does not know are errors, not warnings. Returns the
        stored pipeline and whether it was new. Nothing is written when validation fails.

        The text goes to a temporary file in the directory, flushed to disk, then takes
        its name in one step: readers see the old file or the new one, never a part.
        A new name is published exclusively (a hard link, which fails if the name exists
        by then): of concurrent creates of one name exactly one wins, the others get
        :class:`PipelineExistsError` (without ``create``: they replace it, as updates).
        """
        bare = self.check_name(name)
        pipeline = load_pipeline_text(
            text, source=f"{bare}.yaml", registry=self._registry, strict=strict
        )
        existing = self._existing_file(bare)
        if existing is not None and create:
            raise PipelineExistsError(f"a pipeline named {bare!r} already exists ({existing.name})")
        root = self._root()
        root.mkdir(parents=True, exist_ok=True)
        target = existing or root / f"{bare}.yaml"
        if not text.endswith("\n"):
            text += "\n"
        handle, temporary = tempfile.mkstemp(dir=root, prefix=f".{bare}.", suffix=".tmp")
        try:
            # mkstemp makes the file 0600: give it the mode a plain write would have.
            if hasattr(os, "fchmod"):  # not on Windows (before Python 3.13)
                os.fchmod(handle, _mode_for(existing))
            with os.fdopen(handle, "w", encoding="utf-8") as stream:
                stream.write(text)
                stream.flush()
                os.fsync(stream.fileno())
            created = existing is None and _publish_new(temporary, target)
            if not created:
                if create:
                    raise PipelineExistsError(
                        f"a pipeline named {bare!r} already exists ({target.name})"
                    )
                os.replace(temporary, target)
            sync_directory(root)
        finally:
            Path(temporary).unlink(missing_ok=True)
        with self._lock:
            self._cache.pop(target, None)
        return StoredPipeline(bare, target.name, text, pipeline), created

    def delete(self, name: str) -> None:
        """Remove the file of ``name``; :class:`PipelineNotFoundError` if there is none."""
        path = self._existing_file(name)
        if path is None:
            raise PipelineNotFoundError(f"no pipeline file named {name!r} to delete")
        path.unlink()
        with self._lock:
            self._cache.pop(path, None)

    @staticmethod
    def name_for(pipeline: Pipeline) -> str:
        """A safe stored name derived from the name a pipeline declares."""
        slug = re.sub(r"[^A-Za-z0-9._-]+", "-", pipeline.name).strip("-._")[:128]
        if not slug:
            raise PipelineValidationError(
                [
                    ValidationIssue(
                        message="cannot derive a file name from the pipeline's name; "
                        "give 'name' in the request",
                        field="name",
                    )
                ]
            )
        return slug
