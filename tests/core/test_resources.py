"""mimir.core.resources finds the shipped files through the import system.

Here (an editable install) they are the checkout's folders; tests/test_wheel.py checks the
same functions in an installed wheel, tests/app/test_bundle.py in the bundle.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from mimir.core import resources

ROOT = Path(__file__).resolve().parents[2]


def test_an_editable_install_maps_them_to_the_checkout() -> None:
    assert resources.resources_dir() == ROOT / "resources"
    assert resources.packaging_dir() == ROOT / "packaging"
    assert resources.source_checkout() == ROOT
    assert (resources.pipelines_dir() / "test_pipeline.yaml").is_file()
    assert (resources.example_data_dir() / "sales.csv").is_file()
    assert (resources.ontologies_dir() / "supply_chain.ttl").is_file()
    assert resources.stylesheet().read_text().strip()
    assert (resources.packaging_dir() / "Dockerfile.backend").is_file()


def test_they_are_found_from_any_working_directory(tmp_path: Path) -> None:
    code = "from mimir.core import resources as r;print(r.stylesheet()); print(r.packaging_dir())"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [
        str(ROOT / "resources" / "styles" / "dark.qss"),
        str(ROOT / "packaging"),
    ]


def test_a_folder_of_no_checkout_is_no_source(tmp_path: Path) -> None:
    (tmp_path / "packaging").mkdir()
    assert resources.source_checkout(tmp_path / "packaging") is None
