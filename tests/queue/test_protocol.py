"""The queue's protocol, declared once (``core/queue/protocol.py``), agrees with the Lua
scripts and with the Python models that read what they write."""

from __future__ import annotations

import re

import pytest

from mimir.core.queue import scripts
from mimir.core.queue.models import JobRecord
from mimir.core.queue.protocol import (
    DELIVERY_FIELDS,
    INTERNAL_FIELDS,
    RECORD_FIELDS,
    SCRIPTS,
    ScriptSpec,
)

_NAMED = re.compile(r"^local (\w+) = (tonumber\()?(KEYS|ARGV)\[(\d+)\]\)?$")
_EACH = re.compile(r"^-- (KEYS|ARGV)\[(\d+)\.\.\]: ([\w, ]+) per \w+$")


def _lines(source: str) -> list[str]:
    """The script's lines after its flag line (``--!df flags=…``, Dragonfly's), if any."""
    lines = source.strip().splitlines()
    return lines[1:] if lines and lines[0].startswith("--!") else lines


def _header(source: str) -> dict[str, list[tuple[str, ...]]]:
    """The script's own header: its leading ``local name = KEYS[n]``/``ARGV[n]`` lines and
    ``-- KEYS[n..]: a, b per job`` comments, until the first other line."""
    found: dict[str, list[tuple[str, ...]]] = {"KEYS": [], "ARGV": [], "each": []}
    for line in _lines(source):
        if named := _NAMED.match(line):
            name, number, table, index = named.group(1, 2, 3, 4)
            found[table].append((name, index, "number" if number else "text"))
        elif each := _EACH.match(line):
            table, start, names = each.group(1, 2, 3)
            found["each"].append((table, start, *(n.strip() for n in names.split(","))))
        else:
            break
    return found


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_script_header_matches_its_declaration(name: str) -> None:
    spec: ScriptSpec = SCRIPTS[name]
    header = _header(scripts.SOURCES[name])
    assert [(n, int(i)) for n, i, _ in header["KEYS"]] == [
        (key, i) for i, key in enumerate(spec.keys, start=1)
    ]
    assert [(n, int(i)) for n, i, _ in header["ARGV"]] == [
        (arg, i) for i, (arg, _) in enumerate(spec.argv, start=1)
    ]
    # Numbers are read as numbers, everything else as text.
    for (_, _, read_as), (arg, encoding) in zip(header["ARGV"], spec.argv, strict=True):
        assert read_as == ("number" if encoding in ("int", "float") else "text"), arg
    expected_each = []
    if spec.keys_each:
        expected_each.append(("KEYS", str(len(spec.keys) + 1), *spec.keys_each))
    if spec.argv_each:
        names = [arg for arg, _ in spec.argv_each]
        expected_each.append(("ARGV", str(len(spec.argv) + 1), *names))
    assert header["each"] == expected_each
    # Nothing after the header reads KEYS or ARGV by a literal position.
    body = _lines(scripts.SOURCES[name])[
        len(header["KEYS"]) + len(header["ARGV"]) + len(header["each"]) :
    ]
    assert not [line for line in body if re.search(r"(KEYS|ARGV)\[\d+\]", line)]


def test_every_script_has_a_declaration_and_the_same_source() -> None:
    assert set(scripts.SOURCES) == set(SCRIPTS)
    for name, source in scripts.SOURCES.items():
        script = getattr(scripts, f"{name}_SCRIPT")
        assert script.spec is SCRIPTS[name] and script.source == source


def test_record_fields_are_the_models_fields() -> None:
    assert set(RECORD_FIELDS) == set(JobRecord.model_fields)
    assert not set(RECORD_FIELDS) & set(INTERNAL_FIELDS)
    assert set(DELIVERY_FIELDS) <= set(RECORD_FIELDS) | set(INTERNAL_FIELDS)


_HASH_CALL = re.compile(r"redis\.call\('(HSET|HINCRBY|HMGET|HGET|HDEL)', (\w+), ")


def _hash_calls(source: str) -> list[tuple[str, str, list[str]]]:
    """Each job-hash call's command, key variable and remaining arguments, split at the
    call's own commas (a nested call such as ``iso(o.due)`` is one argument)."""
    calls = []
    for match in _HASH_CALL.finditer(source):
        depth, args, current = 0, [], ""
        for char in source[match.end() :]:
            if char == "(":
                depth += 1
            elif char == ")":
                if depth == 0:
                    break
                depth -= 1
            if char == "," and depth == 0:
                args.append(current.strip())
                current = ""
            else:
                current += char
        args.append(current.strip())
        calls.append((match.group(1), match.group(2), args))
    return calls


def test_every_job_field_the_scripts_touch_is_declared() -> None:
    """Each field name a script writes or reads on a job record is a declared record or
    internal field, and every record field a script writes is one the model reads."""
    declared = set(RECORD_FIELDS) | set(INTERNAL_FIELDS)
    job_keys = {"jk", "job"}
    written: set[str] = set()
    touched: set[str] = set()
    for name, source in scripts.SOURCES.items():
        for command, key, args in _hash_calls(source):
            if key not in job_keys:
                continue
            literals = [a.strip("'") for a in args if re.fullmatch(r"'\w+'", a)]
            if command == "HSET":
                # field, value pairs: the fields are every other argument
                fields = [a.strip("'") for a in args[::2] if re.fullmatch(r"'\w+'", a)]
                written.update(fields)
                touched.update(fields)
            else:
                touched.update(literals[:1] if command in ("HINCRBY", "HGET") else literals)
        assert touched, name
    assert touched <= declared, touched - declared
    assert written & set(RECORD_FIELDS) <= set(JobRecord.model_fields)
    assert {"status", "worker_id", "started_at", "finished_at", "error"} <= written


def test_a_call_must_name_exactly_the_declared_values() -> None:
    with pytest.raises(TypeError):
        scripts.RETRY_DEAD_SCRIPT.call(keys={"job": "j", "done": "d"}, argv={})
    keys, args = SCRIPTS["RENEW"].call(
        keys={}, argv={"group": "g", "worker": "w"}, each=[(["job", "stream"], ["1-0", 2])]
    )
    assert keys == ["job", "stream"] and args == ["g", "w", "1-0", "2"]
    # No key at all: a Redis Cluster would run it on a random node; refused.
    with pytest.raises(TypeError, match="names no key"):
        SCRIPTS["RENEW"].call(keys={}, argv={"group": "g", "worker": "w"})


_BUILT_KEY = re.compile(r"local \w+ = \w+_prefix \.\. ")
_FIELD_KEY = re.compile(r"redis\.p?call\('\w+', (t\.stream|f\[\d\])")
#: The scripts that touch keys they learn as they run (listed in protocol.py's docstring).
UNDECLARED = {"FETCH", "MOVE_DUE"}


def test_only_the_scripts_with_undeclared_keys_carry_dragonflys_flag() -> None:
    for name, source in scripts.SOURCES.items():
        flagged = source.startswith(scripts.UNDECLARED_KEYS_FLAG)
        assert flagged == (name in UNDECLARED), name
        # No Redis shebang (#!lua would change the OOM and cross-slot rules).
        assert not source.lstrip().startswith("#!"), name
    # Keys built inside a script come from a prefix argument (``local jk = job_prefix ..
    # id``) or a record field (``t.stream``, ``f[2]``) used as a command's key: the
    # flagged scripts do that, the others never (a field is only compared there).
    for name, source in scripts.SOURCES.items():
        builds = _BUILT_KEY.search(source) or _FIELD_KEY.search(source)
        assert bool(builds) == (name in UNDECLARED), name
