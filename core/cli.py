"""The ``mimir`` command: a dispatcher over the ``mimir.commands`` entry-point group.

Each package registers its own subcommands as entry points whose value is a
``main(argv: list[str]) -> int`` function. Only the chosen command's module is
imported, so ``mimir worker`` never pulls in Qt or FastAPI.
"""

from __future__ import annotations

import sys
from importlib.metadata import EntryPoint, entry_points

from mimir.core import __version__

#: One-line descriptions shown by ``mimir --help`` without importing the commands.
DESCRIPTIONS: dict[str, str] = {
    "run": "run a pipeline file locally and print its result",
    "validate": "validate a pipeline file without running it",
    "plugins": "list the available plugins",
    "migrate": "rewrite the original Go platform's pipeline files in this project's form",
    "enqueue": "put pipeline jobs on the Redis queue",
    "server": "start the REST API server",
    "worker": "start a worker that drains the job queue",
    "cluster": "start, scale and stop a cluster (Docker or local processes)",
    "console": "open the desktop operator console",
    "runs": "the run history kept by the server: list, show, logs, export, stats",
    "keys": "API keys with roles (viewer, operator, admin): create, list, revoke",
}


def _commands() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group="mimir.commands")}


def _usage(commands: dict[str, EntryPoint]) -> str:
    width = max((len(name) for name in commands), default=8)
    lines = ["usage: mimir COMMAND [ARGS...]", "", "commands:"]
    order = list(DESCRIPTIONS)
    for name in sorted(commands, key=lambda n: (order.index(n) if n in order else len(order), n)):
        lines.append(f"  {name:<{width}}  {DESCRIPTIONS.get(name, '')}".rstrip())
    lines += ["", "Run 'mimir COMMAND --help' for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``mimir COMMAND ...`` to the command's own ``main``."""
    args = list(sys.argv[1:] if argv is None else argv)
    commands = _commands()
    if not args or args[0] in {"-h", "--help", "help"}:
        print(_usage(commands))
        return 0
    if args[0] in {"-V", "--version"}:
        print(f"mimir {__version__}")
        return 0
    name, rest = args[0], args[1:]
    entry = commands.get(name)
    if entry is None:
        print(f"mimir: unknown command {name!r}\n\n{_usage(commands)}", file=sys.stderr)
        return 2
    try:
        command = entry.load()
    except ImportError as exc:
        print(
            f"mimir {name}: cannot load ({exc}). "
            f"Is the package installed with the extras this command needs?",
            file=sys.stderr,
        )
        return 2
    try:
        return int(command(rest) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
