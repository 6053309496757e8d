"""Run the benchmarks and print their figures: ``python -m benchmarks [NAME ...]``.

Each module in this package (``engine``, ``server``, ``queue``, ``cluster``, ``console``,
``ontology``) has ``main(argv) -> int`` and can also run alone
(``python -m benchmarks.queue``). Without names, every module found runs in turn; a module
whose optional parts are missing says so and the others still run. This machine is noisy:
the modules print medians and side-by-side ratios measured in the same run.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import time
from pathlib import Path

ORDER = ["engine", "server", "queue", "ontology", "cluster", "console"]


def available() -> list[str]:
    """Benchmark modules in this package, in a sensible order."""
    found = [m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)])]
    found = [name for name in found if not name.startswith("_")]
    return sorted(found, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))


def main(argv: list[str] | None = None) -> int:
    names = available()
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help=f"benchmarks to run (default: {', '.join(names)})"
    )
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(names))
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(names)}")
    failures = 0
    for name in args.names or names:
        print(f"\n=== benchmarks.{name} ===", flush=True)
        started = time.perf_counter()
        try:
            module = importlib.import_module(f"benchmarks.{name}")
            code = module.main([])
        except Exception as exc:  # report and go on with the others
            print(f"benchmarks.{name} failed: {type(exc).__name__}: {exc}", flush=True)
            code = 1
        print(
            f"--- benchmarks.{name}: exit {code}, {time.perf_counter() - started:.1f} s", flush=True
        )
        failures += bool(code)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
