"""When the job started, for the wall-clock budget: the process start for `nextai ...` on the command line (imports
and config parsing count), the call of `nextai.main.main` otherwise; unset outside `main`."""

import os
import time

DEFAULT_BUDGET = "24h"  # budget.limit where a config sets none

_started_at: float | None = None


def process_started_at() -> float | None:
    """`time.monotonic()` at which this process started (Linux /proc), or None where that cannot be read."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22, after the command name
        with open("/proc/uptime") as f:
            uptime_s = float(f.read().split()[0])
        age_s = uptime_s - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None
    return time.monotonic() - age_s if 0 <= age_s < 86400 * 365 else None


def mark_job_start(at: float | None = None) -> None:
    global _started_at
    _started_at = time.monotonic() if at is None else at


def clear_job_start() -> None:
    global _started_at
    _started_at = None


def job_started_at() -> float | None:
    return _started_at
