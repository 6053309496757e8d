"""Where the shipped files are, in a checkout, an installed wheel and the PyInstaller bundle.

``resources/`` (example pipelines and their data, sample ontologies, the console's
stylesheet) installs as the package ``mimir.resources`` and ``packaging/`` (Dockerfiles,
compose files, scripts, systemd units) as ``mimir.packaging`` (pyproject's package-dir and
package-data). Both are found through the import system, never through
``Path(__file__).parent.parent``, which holds only in a checkout: an editable install
(``pip install -e .``) maps them to the checkout's folders, a wheel puts them in
``site-packages/mimir/``, the bundle in ``_internal/mimir/``.

``mimir.resources`` is a regular package (``resources/__init__.py``), reached with
:func:`importlib.resources.files`. ``packaging/`` cannot hold an ``__init__.py``: from the
repository root it would shadow the ``packaging`` distribution that pip and setuptools
import, so ``mimir.packaging`` is a namespace package and its folder comes from its spec.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
from pathlib import Path

from mimir.core.errors import MimirError

__all__ = [
    "ResourceError",
    "example_data_dir",
    "ontologies_dir",
    "packaging_dir",
    "pipelines_dir",
    "resources_dir",
    "source_checkout",
    "stylesheet",
]


class ResourceError(MimirError):
    """A shipped file or folder is not where the installation should have put it."""


def resources_dir() -> Path:
    """The folder of ``mimir.resources`` (``resources/`` in a checkout)."""
    try:
        root = importlib.resources.files("mimir.resources")
    except ModuleNotFoundError as exc:
        raise ResourceError(
            "mimir.resources is not installed: reinstall mimir-aip (pip install mimir-aip)"
        ) from exc
    if not isinstance(root, Path):  # e.g. a zip import: copying and Docker need real files
        raise ResourceError(f"mimir.resources is not a folder on disk ({root!r})")
    return root


def pipelines_dir() -> Path:
    """The example pipelines (``test_pipeline.yaml``, ``sales_report.yaml`` …)."""
    return resources_dir() / "pipelines"


def example_data_dir() -> Path:
    """The files the example pipelines read (``sales.csv``, ``article.md``)."""
    return resources_dir() / "data"


def ontologies_dir() -> Path:
    """The sample ontology (``supply_chain.ttl``) and its twin scenario."""
    return resources_dir() / "ontologies"


def stylesheet() -> Path:
    """The console's Qt stylesheet (``styles/dark.qss``)."""
    return resources_dir() / "styles" / "dark.qss"


def packaging_dir() -> Path:
    """The folder of ``mimir.packaging``: Dockerfiles, compose files, scripts, units."""
    spec = importlib.util.find_spec("mimir.packaging")
    # A namespace package's locations may include a placeholder that is no folder (the
    # editable install's path hook): the first real folder is the one.
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        if Path(location).is_dir():
            return Path(location)
    raise ResourceError(
        "mimir.packaging (the Dockerfiles and compose files) is not installed: "
        "reinstall mimir-aip, or work from a source checkout"
    )


def source_checkout(packaging: Path | None = None) -> Path | None:
    """The root of the source checkout that ``packaging`` (default :func:`packaging_dir`)
    belongs to, or None for an installed wheel or the bundle (no source to build from)."""
    try:
        root = (packaging or packaging_dir()).parent
    except ResourceError:
        return None
    if (root / "pyproject.toml").is_file() and (root / "core" / "__init__.py").is_file():
        return root
    return None
