"""``python -m mimir.worker``: the same as ``mimir worker``."""

from __future__ import annotations

import sys

from mimir.worker.cli import main

if __name__ == "__main__":
    sys.exit(main())
