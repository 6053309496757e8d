"""The queue's protocol between Python and Lua, declared once.

- :data:`RECORD_FIELDS`: the job hash's record fields (what :class:`JobRecord` reads) and
  the encoding of each; :data:`INTERNAL_FIELDS`: the hash's other fields (the payload and
  where the job's stream entry is), never shown as part of the record;
- :data:`DELIVERY_FIELDS`: what ``FETCH`` answers for each job it starts (by name);
- one :class:`ScriptSpec` per Lua script: its ``KEYS`` and ``ARGV`` by name, in order,
  each argument with its encoding, plus the repeated group at the end (``KEYS[n..]``: one
  group per job or stream). Each script's source starts with the same names as locals
  (``local stream = KEYS[1]`` …); ``tests/queue/test_protocol.py`` checks the two agree.

Encodings (everything in Redis is text): ``text`` as is; ``int`` decimal; ``float``
Python's ``repr``; ``iso`` ISO 8601 UTC with a ``Z``; ``json`` compact JSON; ``flag``
``"1"`` for true (absent for false).

Every key a caller can name before the call is passed in ``KEYS`` (a call that names none
is refused: a Redis Cluster would run it on a random node). ``CANCEL``, ``RETRY_DEAD``,
``DELETE_DEAD`` and ``RECONCILE`` declare the job's stream / idempotency key, read from the
record just before; the script answers ``moved`` if the record names another (it never
does: neither changes; the caller reads again, the reconcile leaves such a job alone). A
script also touches keys it learns only from Redis as it runs, built from the
``job_prefix``/``done_prefix`` arguments or read from the record; exactly these, and no
others:

- ``FETCH``: the job record and done list of each entry it delivers or reclaims (the ids
  come from the stream entries it reads in the same step);
- ``MOVE_DUE``: the record of each due job (ids from the scheduled set) and the stream it
  goes back to (the record's ``stream`` field).

Those two scripts start with Dragonfly's ``--!df flags=allow-undeclared-keys`` line
(:data:`mimir.core.queue.scripts.UNDECLARED_KEYS_FLAG`; a Lua comment for Redis and
Valkey, which let a script without a ``#!`` line touch the undeclared keys of the slot it
runs in). On a Redis Cluster every key of a prefix must be in one slot: the settings give
a ``redis+cluster://`` URL's prefix a hash tag (``mimir:`` -> ``{mimir}:``, see
:func:`mimir.core.queue.keys.hash_tagged`), so the undeclared keys are in the declared
keys' slot by construction.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "DELIVERY_FIELDS",
    "INTERNAL_FIELDS",
    "RECORD_FIELDS",
    "SCRIPTS",
    "Encoding",
    "JSONText",
    "ScriptSpec",
    "decode_field",
    "encode",
]

Encoding = Literal["text", "int", "float", "iso", "json", "flag"]

#: The job record's fields in the job hash, and how each is written.
RECORD_FIELDS: dict[str, Encoding] = {
    "job_id": "text",
    "type": "text",
    "status": "text",
    "priority": "text",
    "queue": "text",
    "attempts": "int",
    "max_retries": "int",
    "timeout": "float",
    "worker_id": "text",
    "pipeline": "text",
    "enqueued_at": "iso",
    "scheduled_for": "iso",
    "started_at": "iso",
    "finished_at": "iso",
    "progress": "json",
    "result": "json",
    "error": "text",
    "idempotency_key": "text",
    "cancel_requested": "flag",
    "origin": "json",
    "version": "int",
    #: W3C trace context of the enqueue (absent when tracing is off): every attempt's
    #: job span continues this trace.
    "traceparent": "text",
}

#: The job hash's other fields: not part of the record (never in events or answers).
INTERNAL_FIELDS: dict[str, Encoding] = {
    "payload": "json",
    "retry_backoff": "float",
    "stream": "text",
    "entry": "text",
    "dead_entry": "text",
}

#: What ``FETCH`` answers (as name/value pairs) for each job it starts.
DELIVERY_FIELDS: tuple[str, ...] = (
    "job_id",
    "attempts",
    "type",
    "payload",
    "timeout",
    "max_retries",
    "retry_backoff",
    "pipeline",
    "queue",
    "priority",
    "traceparent",
    "enqueued_at",
)

#: Record fields a ``job`` event leaves out (the result may be large; the version is
#: set by the event itself).
_NOT_IN_EVENTS = ("job_id", "result", "version")


class JSONText(str):
    """Text that is JSON already: :func:`encode` sends it as it is for a ``json`` value."""

    __slots__ = ()


def encode(encoding: Encoding, value: Any) -> str:
    """``value`` as stored in Redis (or sent as a script argument)."""
    if encoding == "json":
        if isinstance(value, JSONText):
            return value
        return json.dumps(value, separators=(",", ":"), default=str)
    if encoding == "int":
        return str(int(value))
    if encoding == "float":
        return repr(float(value))
    if encoding == "flag":
        return "1" if value else ""
    return str(value)


def decode_field(name: str, text: str) -> Any:
    """A job hash field's stored text as the Python value the record model takes
    (``None`` for an empty text; ints, floats and times stay text for the model)."""
    encoding = RECORD_FIELDS.get(name) or INTERNAL_FIELDS.get(name, "text")
    if encoding == "flag":
        return text == "1"
    if text == "":
        return None
    if encoding == "json":
        return json.loads(text)
    return text


@dataclass(frozen=True)
class ScriptSpec:
    """One script's calling convention: ``KEYS`` and ``ARGV`` by name.

    ``keys_each``/``argv_each`` name the groups repeated at the end of ``KEYS`` and
    ``ARGV`` (one per job, stream …), after the fixed names.
    """

    name: str
    keys: tuple[str, ...]
    argv: tuple[tuple[str, Encoding], ...]
    keys_each: tuple[str, ...] = ()
    argv_each: tuple[tuple[str, Encoding], ...] = ()

    def call(
        self,
        keys: Mapping[str, str],
        argv: Mapping[str, Any],
        each: Sequence[tuple[Sequence[str], Sequence[Any]]] = (),
    ) -> tuple[list[str], list[Any]]:
        """``(KEYS, ARGV)`` for a call: ``keys`` and ``argv`` by name (exactly the
        declared names), ``each`` one ``(keys, args)`` group per repetition, in the
        declared order of ``keys_each``/``argv_each``."""
        if len(keys) != len(self.keys) or len(argv) != len(self.argv):
            raise TypeError(
                f"{self.name}: keys {sorted(keys)} / argv {sorted(argv)} are not the declared "
                f"{list(self.keys)} / {[name for name, _ in self.argv]}"
            )
        key_list = [keys[name] for name in self.keys]
        arg_list = [encode(enc, argv[name]) for name, enc in self.argv]
        for group_keys, group_args in each:
            if len(group_keys) != len(self.keys_each) or len(group_args) != len(self.argv_each):
                raise TypeError(f"{self.name}: a repeated group does not match its declaration")
            key_list.extend(group_keys)
            arg_list.extend(
                encode(enc, value)
                for (_, enc), value in zip(self.argv_each, group_args, strict=True)
            )
        if not key_list:  # a Redis Cluster would run it on a random node
            raise TypeError(f"{self.name}: a call names no key (nothing to do, or a bug)")
        return key_list, arg_list


_TIME: tuple[tuple[str, Encoding], ...] = (("now_ms", "int"), ("ttl", "int"))

#: Every script's convention, by script name.
SCRIPTS: dict[str, ScriptSpec] = {
    spec.name: spec
    for spec in (
        ScriptSpec(
            "ENQUEUE",
            keys=("index", "scheduled", "queues"),
            argv=(*_TIME, ("events", "text"), ("jobs", "json")),
            keys_each=("job", "stream", "idem"),
        ),
        ScriptSpec(
            "FETCH",
            keys=("dead", "totals", "rate", "outcomes"),
            argv=(
                *_TIME,
                ("group", "text"),
                ("worker", "text"),
                ("events", "text"),
                ("job_prefix", "text"),
                ("done_prefix", "text"),
                ("mode", "text"),
                ("count", "int"),
                ("min_idle_ms", "int"),
            ),
            keys_each=("stream",),
            argv_each=(("cap", "int"),),
        ),
        ScriptSpec(
            "FINISH",
            keys=("scheduled", "duration", "dead", "totals", "rate", "outcomes"),
            argv=(
                *_TIME,
                ("group", "text"),
                ("worker", "text"),
                ("events", "text"),
                ("entries", "json"),
            ),
            keys_each=("job", "done", "stream"),
        ),
        ScriptSpec(
            "PROGRESS",
            keys=("job",),
            argv=(
                ("worker", "text"),
                ("attempt", "int"),
                ("progress", "text"),
                ("events", "text"),
                ("job_id", "text"),
            ),
        ),
        ScriptSpec(
            "RENEW",
            keys=(),
            argv=(("group", "text"), ("worker", "text")),
            keys_each=("job", "stream"),
            argv_each=(("entry", "text"), ("attempt", "int")),
        ),
        ScriptSpec(
            "MOVE_DUE",
            keys=("scheduled",),
            argv=(
                ("now_ms", "int"),
                ("limit", "int"),
                ("job_prefix", "text"),
                ("events", "text"),
            ),
        ),
        ScriptSpec(
            "CANCEL",
            keys=("job", "done", "scheduled", "dead", "totals", "rate", "outcomes", "stream"),
            argv=(*_TIME, ("events", "text"), ("cancel", "text"), ("job_id", "text")),
        ),
        ScriptSpec(
            "RETRY_DEAD",
            keys=("job", "done", "dead", "stream"),
            argv=(("ttl", "int"), ("events", "text"), ("job_id", "text")),
        ),
        ScriptSpec(
            "DELETE_DEAD",
            keys=("job", "done", "dead", "index", "idem"),
            argv=(("events", "text"), ("idem_prefix", "text"), ("job_id", "text")),
        ),
        ScriptSpec(
            "RECONCILE",
            keys=("scheduled", "dead"),
            argv=(*_TIME, ("group", "text"), ("events", "text")),
            keys_each=("job", "done", "stream"),
            argv_each=(("job_id", "text"), ("final", "text")),
        ),
        ScriptSpec(
            "RELEASE",
            keys=("index",),
            argv=(),
            keys_each=("job", "done", "log"),
            argv_each=(("job_id", "text"),),
        ),
    )
}


def event_fields() -> list[str]:
    """The record fields a ``job`` event carries besides ``job_id`` and ``version``."""
    return [name for name in RECORD_FIELDS if name not in _NOT_IN_EVENTS]
