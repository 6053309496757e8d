"""``python -m mimir.server``: the same as ``mimir server``."""

from __future__ import annotations

import sys

from mimir.server.cli import main

if __name__ == "__main__":
    sys.exit(main())
