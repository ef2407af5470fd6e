"""CPU time and peak memory of this machine's processes, read from ``/proc``, for the
benches: what each part of a pipeline (a worker, a gateway, PostgreSQL, a Kafka broker)
spent of the machine while it carried a measured load.

A process that is gone counts 0 (it ended between two readings, or never started).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from pathlib import Path

_CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name, or None if it is gone."""
    try:
        # The command name is in parentheses and may hold spaces and parentheses itself.
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def cpu_s(pids: Iterable[int]) -> float:
    """User and system CPU the processes (every thread of each) have used so far, s."""
    ticks = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / _CLOCK_TICKS_PER_S


def tree_cpu_s(pid: int) -> float:
    """CPU of a process and of its children, those still running and those it has reaped,
    s: PostgreSQL's postmaster and its backends (a backend's time moves to the postmaster's
    ``cutime`` when it ends, so a difference of two readings counts each second once)."""
    ticks = 0
    own = _stat_fields(pid)
    if own is None:
        return 0.0
    ticks += sum(int(f) for f in own[11:15])  # utime, stime, cutime, cstime
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None and int(fields[1]) == pid:  # ppid
                ticks += sum(int(f) for f in fields[11:15])
    return ticks / _CLOCK_TICKS_PER_S


def peak_rss_kb(pid: int) -> int:
    """A running process's peak resident memory (``VmHWM``), kB; 0 if it is gone."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


__all__ = ["cpu_s", "peak_rss_kb", "tree_cpu_s"]
