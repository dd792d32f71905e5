"""Was the machine busy while a contestant ran? (Its figures are then less reliable.)

One run's figures on a shared machine can be off by a factor: other processes take
cores, a hypervisor steals time. The bench records, for every run, what else used
the CPU (all CPU time the kernel counted in ``/proc/stat`` minus the contestant's
own) and the steal time, and the load average when the run started. The load
average alone would not do: a contestant that runs 512 processes at once puts the
load far above the cores by itself; CPU time used by *others* is what disturbs
the measurement.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["BUSY_OTHERS_CORES", "BUSY_STEAL_PCT", "CpuTimes", "cpu_times", "during"]

#: other processes using at least this many cores on average make a run "busy"
BUSY_OTHERS_CORES = 0.5
#: at least this share of the CPU time stolen (virtual machines) makes a run "busy"
BUSY_STEAL_PCT = 2.0


@dataclass(frozen=True)
class CpuTimes:
    """The machine's CPU time so far (seconds, all cores) and the 1-minute load."""

    busy_s: float
    steal_s: float
    total_s: float
    load1: float


def cpu_times() -> CpuTimes | None:
    """Now, from ``/proc/stat`` (None where there is none)."""
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            fields = fh.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    ticks = [int(x) for x in fields[1:]]
    # user nice system idle iowait irq softirq steal (guest time is inside user)
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
    steal = ticks[7] if len(ticks) > 7 else 0
    total = sum(ticks[:8])
    return CpuTimes((total - idle - steal) / hz, steal / hz, total / hz, os.getloadavg()[0])


def cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def during(
    before: CpuTimes | None, after: CpuTimes | None, own_cpu_s: float | None, wall_s: float
) -> dict[str, object] | None:
    """What else ran during one run: ``others_cores`` (CPU used by other processes,
    in cores), ``steal_pct``, ``load1_at_start``, ``cores`` and ``busy`` (a bool)."""
    if before is None or after is None or wall_s <= 0:
        return None
    n = cores()
    others = max(0.0, (after.busy_s - before.busy_s) - (own_cpu_s or 0.0)) / wall_s
    total = after.total_s - before.total_s
    steal = 100.0 * (after.steal_s - before.steal_s) / total if total > 0 else 0.0
    return {
        "others_cores": round(others, 2),
        "steal_pct": round(steal, 1),
        "load1_at_start": round(before.load1, 2),
        "cores": n,
        "busy": others >= BUSY_OTHERS_CORES or steal >= BUSY_STEAL_PCT,
    }
