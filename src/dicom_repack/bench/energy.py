"""Energy and CO2 of each run with CodeCarbon, and an honest account of how it was measured.

CodeCarbon reads Intel/AMD RAPL counters when the kernel exposes them *and* they are
readable by the user; otherwise it silently falls back to a model (CPU TDP x load, a
RAM estimate). Since Linux 5.10 the counters are root-only by default, so most users
get the model without knowing it. :func:`detect_rapl` says which case this machine is
in and, when the counters exist but cannot be read, how to enable them; the report
prints it beside every energy figure.

CodeCarbon runs in "machine" mode: it measures the whole machine while a run lasts,
which is the only way to catch every process of a contestant's tree (and why the
bench should run on an otherwise idle machine).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "EnergyMeter",
    "EnergyReading",
    "Method",
    "RaplReader",
    "codecarbon_available",
    "detect_rapl",
    "idle_power_w",
]

RAPL_ROOT = Path("/sys/class/powercap")
RAPL_COUNTER = RAPL_ROOT / "intel-rapl:0" / "energy_uj"

RAPL_HOWTO = (
    "RAPL counters exist but are readable by root only (Linux >= 5.10). To let CodeCarbon "
    "measure instead of estimate: `sudo chmod -R a+r /sys/class/powercap/intel-rapl` (until "
    "reboot), or permanently a udev rule, e.g. /etc/udev/rules.d/99-rapl.rules: "
    'SUBSYSTEM=="powercap", ACTION=="add", RUN+="/bin/chmod -R a+r /sys/class/powercap/%k" '
    "(then `sudo udevadm trigger`). Or run the bench as root."
)


@dataclass(frozen=True, slots=True)
class Method:
    """How energy was obtained on this machine.

    ``rapl``: "readable", "unreadable" (present but permission denied) or "absent".
    ``cpu`` / ``ram``: CodeCarbon's own names for its tracking methods, once known.
    ``source``: "rapl" (read directly, net of ``idle_w``), "codecarbon-rapl" or
    "codecarbon-estimate".
    """

    rapl: str
    cpu: str
    ram: str
    summary: str
    hint: str | None = None
    source: str = "codecarbon-estimate"
    idle_w: float | None = None
    idle_s: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class EnergyReading:
    """One run's energy (kWh) and CO2 (kg). ``source`` says where ``energy_kwh`` comes
    from: "rapl" (the counters read directly, net of the idle baseline) or
    "codecarbon" (its figure: RAPL through CodeCarbon, or its model);
    ``codecarbon_kwh`` is CodeCarbon's own figure either way (also in emissions.csv)."""

    energy_kwh: float
    cpu_kwh: float
    ram_kwh: float
    co2_kg: float
    duration_s: float
    source: str = "codecarbon"
    codecarbon_kwh: float | None = None


class RaplReader:
    """The package-level RAPL energy counters (``intel-rapl:N``; AMD kernels use the same
    names), read directly: cumulative microjoules that wrap at ``max_energy_range_uj``."""

    def __init__(self, root: Path = RAPL_ROOT) -> None:
        zones = sorted(p for p in root.glob("intel-rapl:*") if p.name.count(":") == 1)
        self.counters = [z / "energy_uj" for z in zones]
        self.ranges: list[int] = []
        for z in zones:
            try:
                self.ranges.append(int((z / "max_energy_range_uj").read_text()))
            except (OSError, ValueError):
                self.ranges.append(2**32)

    def read(self) -> list[int]:
        return [int(c.read_text()) for c in self.counters]

    def joules(self, before: list[int], after: list[int]) -> float:
        """Energy between two readings, across a counter wrap."""
        total = 0
        for a, b, r in zip(before, after, self.ranges, strict=True):
            total += (b - a) % (r + 1) if b < a else b - a
        return total / 1e6


def idle_power_w(reader: RaplReader, seconds: float = 10.0) -> float:
    """The machine's power while the bench waits, from RAPL: the baseline subtracted
    from every run (``idle W × run wall``), so that a run is charged its own work only."""
    import time

    before = reader.read()
    t0 = time.perf_counter()
    time.sleep(seconds)
    after = reader.read()
    return reader.joules(before, after) / (time.perf_counter() - t0)


def detect_rapl(root: Path = RAPL_ROOT) -> tuple[str, str | None]:
    """("readable" | "unreadable" | "absent", hint): can RAPL energy counters be read here?"""
    counters = sorted(root.glob("intel-rapl:*/energy_uj")) if root.is_dir() else []
    if not counters:
        return "absent", None
    for counter in counters:
        try:
            with open(counter, encoding="ascii") as fh:
                fh.read()
            return "readable", None
        except PermissionError:
            continue
        except OSError:
            continue
    return "unreadable", RAPL_HOWTO


def codecarbon_available() -> bool:
    try:
        import codecarbon  # noqa: F401
    except ImportError:
        return False
    return True


@contextlib.contextmanager
def _quiet_codecarbon() -> Iterator[None]:
    """CodeCarbon logs at INFO from its constructor on (before its own ``log_level``
    applies) and warns about things the bench reports itself: keep it silent while
    it works, errors only afterwards."""
    logger = logging.getLogger("codecarbon")
    logger.disabled = True
    try:
        with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
            yield
    finally:
        logger.disabled = False
        logger.setLevel(logging.ERROR)


class EnergyMeter:
    """One CodeCarbon tracker per run, all rows appended to ``out_dir/emissions.csv``.

    A fresh tracker per run keeps runs apart in CodeCarbon's own file; building it
    (hardware detection) happens in :meth:`prepare`, outside the timed part.
    """

    def __init__(
        self, out_dir: Path, country: str = "USA", measure_power_secs: float = 1.0
    ) -> None:
        self.out_dir = out_dir
        self.country = country
        self.measure_power_secs = measure_power_secs
        self._tracker: Any = None
        self.cpu_method = "unknown"
        self.ram_method = "unknown"
        self.country_name = country
        self.rapl: RaplReader | None = None
        self.idle_w: float | None = None
        self.idle_s = 0.0
        self._rapl_start: list[int] | None = None
        self._t0 = 0.0

    def calibrate(self, seconds: float = 10.0) -> bool:
        """Read RAPL directly from now on, when it is readable here: measure the idle
        baseline first (``seconds`` of waiting). Returns whether RAPL is in use."""
        if detect_rapl()[0] != "readable":
            return False
        try:
            reader = RaplReader()
            if not reader.counters:
                return False
            self.idle_w = idle_power_w(reader, seconds)
        except (OSError, ValueError):
            return False
        self.rapl = reader
        self.idle_s = seconds
        return True

    def prepare(self, label: str) -> None:
        """Build (but do not start) the tracker for the next run."""
        with _quiet_codecarbon():
            from codecarbon import OfflineEmissionsTracker

            self._tracker = OfflineEmissionsTracker(
                country_iso_code=self.country,
                project_name=label,
                output_dir=str(self.out_dir),
                output_file="emissions.csv",
                measure_power_secs=self.measure_power_secs,
                log_level="error",
                tracking_mode="machine",
                allow_multiple_runs=True,
            )

    def start(self) -> None:
        import time

        if self._tracker is not None:
            with _quiet_codecarbon():
                self._tracker.start()
        if self.rapl is not None:
            self._rapl_start = self.rapl.read()
            self._t0 = time.perf_counter()

    def stop(self) -> EnergyReading | None:
        import time

        rapl_j: float | None = None
        if self.rapl is not None and self._rapl_start is not None:
            with contextlib.suppress(OSError, ValueError):
                wall = time.perf_counter() - self._t0
                gross = self.rapl.joules(self._rapl_start, self.rapl.read())
                rapl_j = max(0.0, gross - (self.idle_w or 0.0) * wall)
            self._rapl_start = None
        tracker, self._tracker = self._tracker, None
        if tracker is None:
            return None
        with _quiet_codecarbon():
            tracker.stop()
        self._note_methods(tracker)
        data = tracker.final_emissions_data
        if data is None:
            return None
        self.country_name = getattr(data, "country_name", self.country)
        cc_kwh = float(data.energy_consumed)
        co2 = float(data.emissions)
        if rapl_j is not None:
            kwh = rapl_j / 3.6e6
            intensity = co2 / cc_kwh if cc_kwh > 0 else 0.0
            return EnergyReading(
                energy_kwh=kwh,
                cpu_kwh=kwh,
                ram_kwh=0.0,
                co2_kg=kwh * intensity,
                duration_s=float(data.duration),
                source="rapl",
                codecarbon_kwh=cc_kwh,
            )
        return EnergyReading(
            energy_kwh=cc_kwh,
            cpu_kwh=float(data.cpu_energy),
            ram_kwh=float(data.ram_energy),
            co2_kg=co2,
            duration_s=float(data.duration),
            source="codecarbon",
            codecarbon_kwh=cc_kwh,
        )

    def _note_methods(self, tracker: Any) -> None:
        """CodeCarbon sets its hardware up on start(); read back which method it chose."""
        for hw in getattr(tracker, "_hardware", []):
            kind = hw.__class__.__name__
            if kind == "CPU":
                self.cpu_method = str(getattr(hw, "_mode", "unknown"))
            elif kind == "RAM":
                self.ram_method = (
                    "RAPL DRAM"
                    if getattr(hw, "_mode", "") == "intel_rapl"
                    else "model (by RAM size)"
                )

    def method(self) -> Method:
        """What to print beside the energy figures."""
        rapl, hint = detect_rapl()
        cpu = self.cpu_method
        source = "codecarbon-estimate"
        if self.rapl is not None:
            source = "rapl"
            summary = (
                "measured: RAPL package counters read directly (/sys/class/powercap), minus "
                f"an idle baseline of {self.idle_w or 0:.2f} W measured over {self.idle_s:.0f} s "
                "before the runs (idle power × each run's wall time); CodeCarbon's own figures "
                "are in emissions.csv"
            )
        elif cpu == "intel_rapl":
            source = "codecarbon-rapl"
            summary = (
                "measured: RAPL energy counters (CPU package; DRAM when exposed), via CodeCarbon"
            )
        elif cpu == "cpu_load":
            summary = (
                "ESTIMATE: CodeCarbon's model (CPU TDP x measured CPU load, RAM by size); "
                "no readable RAPL counters"
            )
        elif cpu in ("constant", "unknown"):
            summary = "ESTIMATE: CodeCarbon's constant CPU power model; no readable RAPL counters"
        else:
            summary = f"CodeCarbon method {cpu!r}"
        if rapl == "absent" and source != "rapl" and cpu != "intel_rapl":
            summary += " (this machine exposes no RAPL: a VM, or a CPU/kernel without powercap)"
        return Method(
            rapl=rapl,
            cpu=cpu,
            ram=self.ram_method,
            summary=summary,
            hint=hint,
            source=source,
            idle_w=self.idle_w,
            idle_s=self.idle_s or None,
        )
