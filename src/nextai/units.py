"""Durations ("24h", "1d2h", "90m") and memory sizes ("38GiB"), parsed and printed in one place."""

import math
import re

from nextai.errors import NextaiError

_DURATION_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([dhms])")
_MEMORY_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
                 "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_MEMORY = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]*)")


def parse_duration(text: str, what: str = "duration") -> float:
    """Seconds in `text`: unit parts (`24h`, `90m`, `1d2h`, `1h30m`, `45s`, `1.5h`) or `[DD:]HH:MM:SS`."""
    cleaned = str(text).strip().lower()
    seconds = None
    if ":" in cleaned:
        parts = cleaned.split(":")
        if 3 <= len(parts) <= 4 and all(p.isdigit() for p in parts):
            seconds = sum(int(p) * unit for p, unit in zip(reversed(parts), (1, 60, 3600, 86400)))
    else:
        compact = cleaned.replace(" ", "")
        matches = list(_DURATION_PART.finditer(compact))
        if matches and "".join(m.group(0) for m in matches) == compact:
            units = [m.group(2) for m in matches]
            if len(set(units)) == len(units):
                seconds = sum(float(m.group(1)) * _DURATION_UNITS[m.group(2)] for m in matches)
    if seconds is None or not math.isfinite(seconds) or seconds <= 0:
        raise NextaiError(f"{what}: cannot read {text!r} as a positive duration; "
                          "use e.g. 24h, 90m, 1d2h, 45s or 12:00:00")
    return float(seconds)


def format_duration(seconds: float) -> str:
    if seconds < 10:
        return f"{max(seconds, 0.0):.1f}s"  # short budgets and margins: whole seconds would read 0m00s
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def parse_memory(text: str, what: str = "memory size") -> int:
    """Bytes in `text`: `38GiB`, `40GB`, `512MiB` (binary and decimal units; a bare number is bytes)."""
    match = _MEMORY.fullmatch(str(text).strip().lower().replace(" ", ""))
    if match is None or match.group(2) not in _MEMORY_UNITS | {"": 1}:
        raise NextaiError(f"{what}: cannot read {text!r} as a memory size; use e.g. 38GiB, 40GB or 512MiB")
    size = int(float(match.group(1)) * _MEMORY_UNITS.get(match.group(2), 1))
    if size <= 0:
        raise NextaiError(f"{what}: {text!r} must be at least one byte")
    return size


def gib(num_bytes: float) -> float:
    return num_bytes / 2**30
