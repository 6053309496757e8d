"""Entry point of the PyInstaller bundle: the ``mimir`` dispatcher, console by default.

``mimir`` (no arguments) or ``mimir --smoke`` opens the console; ``mimir server``,
``mimir worker``, ``mimir cluster …`` run headless. ``mimir -m mimir.server …`` runs a
module as ``python -m`` would, which is how the local-process cluster backend starts its
children from a bundle (there ``sys.executable`` is this program).
"""

from __future__ import annotations

import multiprocessing
import runpy
import sys
import warnings

# mimir.spec leaves Pillow out: fpdf2 only needs it to embed images, which Output.pdf never
# does, and says so on import without it.
warnings.filterwarnings("ignore", message="Pillow could not be imported")


def main() -> int:
    args = sys.argv[1:]
    if len(args) >= 2 and args[0] == "-m":
        sys.argv = [args[1], *args[2:]]
        runpy.run_module(args[1], run_name="__main__", alter_sys=True)
        return 0
    from mimir.core.cli import main as dispatch

    if not args or (args[0].startswith("--") and args[0] not in ("--help", "--version")):
        args = ["console", *args]
    return dispatch(args)


if __name__ == "__main__":
    multiprocessing.freeze_support()
    sys.exit(main())
