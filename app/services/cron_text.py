"""Cron expressions and intervals in words, for the Schedules editor: ``*/5 * * * *`` →
"every 5 minutes", ``30 2 * * *`` → "at 02:30 every day", ``0 9 * * 1-5`` → "at 09:00 on
Monday-Friday". The common forms only: anything else comes back as the expression itself
(the server's cron library, not this module, decides what a schedule runs at; this only
explains it). No Qt here.
"""

from __future__ import annotations

import re

__all__ = ["describe_cron", "describe_interval", "describe_when"]

#: Between the ends of a range of days or months (an en dash).
_DASH = "\u2013"
_DAYS = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]
_DAY_NAMES = {name[:3].lower(): index for index, name in enumerate(_DAYS)}
_MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]
_MONTH_NAMES = {name[:3].lower(): index + 1 for index, name in enumerate(_MONTHS)}
_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_UNITS = {"s": "second", "m": "minute", "h": "hour", "d": "day", "w": "week"}


class _Complex(Exception):
    """The expression is beyond the forms this module words."""


def _number(text: str, names: dict[str, int] | None = None) -> int:
    if text.isdigit():
        return int(text)
    if names and text.lower() in names:
        return names[text.lower()]
    raise _Complex(text)


def _values(field: str, names: dict[str, int] | None = None) -> list[tuple[int, int]]:
    """``1,3-5`` → ``[(1, 1), (3, 5)]``; steps and wildcards are not values."""
    ranges = []
    for part in field.split(","):
        if "/" in part or part in ("*", "?"):
            raise _Complex(field)
        low, _, high = part.partition("-")
        ranges.append((_number(low, names), _number(high, names) if high else _number(low, names)))
    return ranges


def _step(field: str) -> int | None:
    """``*/5`` → 5; ``*`` → 1; anything else → None."""
    if field in ("*", "?"):
        return 1
    match = re.fullmatch(r"[*0]/(\d+)", field)
    return int(match.group(1)) if match and int(match.group(1)) > 0 else None


def _plural(count: int, unit: str) -> str:
    return f"every {unit}" if count == 1 else f"every {count} {unit}s"


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _day_of_week(field: str) -> str:
    words = []
    for low, high in _values(field, _DAY_NAMES):
        if not (0 <= low <= 7 and 0 <= high <= 7):
            raise _Complex(field)
        first, last = _DAYS[low % 7], _DAYS[high % 7]
        words.append(first if low == high else f"{first}{_DASH}{last}")
    return _join(words)


def _ordinal(day: int) -> str:
    suffix = "th" if 10 <= day % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
    return f"{day}{suffix}"


def _day_of_month(field: str) -> str:
    words = []
    for low, high in _values(field):
        if not (1 <= low <= 31 and 1 <= high <= 31):
            raise _Complex(field)
        words.append(_ordinal(low) if low == high else f"{_ordinal(low)}{_DASH}{_ordinal(high)}")
    return _join(words)


def _months(field: str) -> str:
    words = []
    for low, high in _values(field, _MONTH_NAMES):
        if not (1 <= low <= 12 and 1 <= high <= 12):
            raise _Complex(field)
        first, last = _MONTHS[low - 1], _MONTHS[high - 1]
        words.append(first if low == high else f"{first}{_DASH}{last}")
    return _join(words)


def _days_part(dom: str, month: str, dow: str) -> str:
    """`` every day``, `` on Monday-Friday``, `` on the 1st of every month`` …"""
    any_dom, any_month, any_dow = dom in ("*", "?"), month in ("*", "?"), dow in ("*", "?")
    if any_dom and any_month and any_dow:
        return " every day"
    text = ""
    if not any_dom and not any_dow:
        raise _Complex("day of month and day of week")  # cron ORs them: say it raw
    if not any_dow:
        text = f" on {_day_of_week(dow)}"
    elif not any_dom:
        text = f" on the {_day_of_month(dom)}" + ("" if not any_month else " of every month")
    if not any_month:
        text += f" in {_months(month)}" if text else f" every day in {_months(month)}"
    return text


def _times(minute: str, hour: str, second: str) -> str:
    """``at 09:00``, ``at 09:00 and 17:30``: each listed hour at each listed minute."""
    hours = [h for low, high in _values(hour) for h in range(low, high + 1)]
    minutes = [m for low, high in _values(minute) for m in range(low, high + 1)]
    seconds = [s for low, high in _values(second) for s in range(low, high + 1)]
    if not (all(0 <= h <= 23 for h in hours) and all(0 <= m <= 59 for m in minutes)):
        raise _Complex("time")
    if not all(0 <= s <= 59 for s in seconds) or len(hours) * len(minutes) * len(seconds) > 6:
        raise _Complex("time")
    times = [
        f"{h:02d}:{m:02d}" + (f":{s:02d}" if s else "")
        for h in hours
        for m in minutes
        for s in seconds
    ]
    return "at " + _join(times)


def _describe(fields: list[str]) -> str:
    second, minute, hour, dom, month, dow = fields
    days = _days_part(dom, month, dow)
    suffix = "" if days == " every day" else days
    each_second, each_minute, each_hour = _step(second), _step(minute), _step(hour)
    if second != "0" and each_second is not None and minute == "*" and hour == "*":
        return _plural(each_second, "second") + suffix
    if second == "0" and each_minute is not None and hour == "*":
        return _plural(each_minute, "minute") + suffix
    if second == "0" and each_hour is not None and each_minute is None:
        minutes = [m for low, high in _values(minute) for m in range(low, high + 1)]
        if not all(0 <= m <= 59 for m in minutes) or len(minutes) > 6:
            raise _Complex("minute")
        at = _join([f":{m:02d}" for m in minutes])
        return _plural(each_hour, "hour") + f" at {at}" + suffix
    if each_minute is None and each_hour is None and _step(second) is None:
        return _times(minute, hour, second) + days
    raise _Complex("form")


def describe_cron(expression: str, *, seconds_first: bool = True) -> str:
    """Words for a 5-field cron expression (or 6 with seconds: first, as Mimir's schedules
    take it, or last with ``seconds_first=False``); the expression itself when its form is
    not one of the common ones."""
    text = " ".join(expression.split())
    if not text:
        return ""
    fields = _MACROS.get(text.lower(), text).split()
    if len(fields) == 5:
        fields = ["0", *fields]
    elif len(fields) == 6:
        if not seconds_first:
            fields = [fields[5], *fields[:5]]
    else:
        return text
    try:
        return _describe(fields)
    except (_Complex, ValueError, IndexError):
        return text


def describe_interval(interval: str) -> str:
    """``30s`` → "every 30 seconds", ``5m`` → "every 5 minutes", ``1h30m`` → "every 1 hour
    30 minutes" (Go durations); else the text itself."""
    text = (interval or "").strip()
    parts = re.findall(r"(\d+)(ms|[smhdw])", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return text
    if len(parts) == 1 and parts[0][1] != "ms":
        return _plural(int(parts[0][0]), _UNITS[parts[0][1]])
    words = []
    for number, unit in parts:
        name = "millisecond" if unit == "ms" else _UNITS[unit]
        words.append(f"{int(number)} {name}" + ("" if int(number) == 1 else "s"))
    return "every " + " ".join(words)


def describe_when(cron: str | None, interval: str | None, *, seconds_first: bool = True) -> str:
    """A schedule's timing in words: its cron expression or its interval."""
    if cron:
        return describe_cron(cron, seconds_first=seconds_first)
    return describe_interval(interval or "")
