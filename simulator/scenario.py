"""Scenario files: what the simulated fleet does, read from TOML and validated up front.

Every key, its unit, range and default is declared once in :data:`SECTIONS` and
:data:`FAULTS`; ``simulator/SCENARIOS.md`` documents the same table for people. A scenario
that names an unknown key, gives an impossible value or misses a required field is refused
by :func:`load_scenario` before anything runs, with the key path in the message.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from registry.model import BUILDING_TYPES


class ScenarioError(ValueError):
    """A scenario file that cannot be simulated; the message names the key path."""


_REQUIRED: Final = object()


@dataclass(frozen=True)
class Key:
    """One scenario key: its type, default (or required), bounds and meaning."""

    kind: type
    default: Any
    lo: float | None = None
    hi: float | None = None
    doc: str = ""
    choices: tuple[str, ...] | None = None


def _k(
    kind: type,
    default: Any,
    lo: float | None = None,
    hi: float | None = None,
    doc: str = "",
    choices: tuple[str, ...] | None = None,
) -> Key:
    return Key(kind, default, lo, hi, doc, choices)


#: Stuck-sensor columns: the numeric sample columns a frozen sensor can affect.
STUCK_COLUMNS: Final = ("speed_mps", "accel_mps2", "position_m", "load_kg", "leveling_offset_mm")
MALFORMED_VARIANTS: Final = ("truncated", "wrong_type", "missing_field")

#: Peak calls per hour per car by building type, before ``traffic.intensity``.
DEFAULT_PEAK_CALLS_PER_HOUR: Final = {
    "residential": 30.0,
    "office": 60.0,
    "hospital": 50.0,
    "school": 40.0,
    "mall": 45.0,
    "station": 40.0,
    "government": 35.0,
}

SECTIONS: Final[dict[str, dict[str, Key]]] = {
    "scenario": {
        "name": _k(str, _REQUIRED, doc="scenario name, part of the run id"),
        "seed": _k(int, _REQUIRED, 0, 2**63 - 1, "seed of the random generator"),
        "description": _k(str, "", doc="free text"),
        "duration_s": _k(
            float,
            3600.0,
            1.0,
            366 * 86400.0,
            "default simulated duration for a command line that names none",
        ),
    },
    "sampling": {
        "sample_hz": _k(int, 10, 1, 100, "samples per second; must divide 1000"),
        "heartbeat_s": _k(float, 30.0, 1.0, 3600.0, "heartbeat period while idle"),
        "timezone_offset_h": _k(
            float, 8.0, -12.0, 14.0, "local time minus UTC, for the time-of-day traffic"
        ),
    },
    "physics": {
        "floor_height_m": _k(float, 3.0, 2.0, 10.0, "landing-to-landing height"),
        "accel_min_mps2": _k(float, 0.6, 0.1, 2.0, "per-car acceleration limit, lower bound"),
        "accel_max_mps2": _k(float, 0.9, 0.1, 2.0, "per-car acceleration limit, upper bound"),
        "jerk_min_mps3": _k(float, 1.0, 0.2, 5.0, "per-car jerk limit, lower bound"),
        "jerk_max_mps3": _k(float, 1.6, 0.2, 5.0, "per-car jerk limit, upper bound"),
        "door_zone_m": _k(
            float,
            0.2,
            0.05,
            0.35,
            "half-height of a landing's unlocking zone (EN 81-20 5.12.1.4: 0.2 m)",
        ),
        "relevel_speed_mps": _k(float, 0.3, 0.05, 1.0, "speed of a rescue or re-levelling move"),
        "brake_decel_mps2": _k(float, 1.5, 0.2, 9.81, "deceleration of an emergency stop"),
    },
    "doors": {
        "opening_min_s": _k(float, 2.0, 0.5, 20.0, "door opening time, lower bound"),
        "opening_max_s": _k(float, 3.0, 0.5, 20.0, "door opening time, upper bound"),
        "closing_min_s": _k(float, 2.0, 0.5, 20.0, "door closing time, lower bound"),
        "closing_max_s": _k(float, 3.0, 0.5, 20.0, "door closing time, upper bound"),
        "dwell_min_s": _k(float, 3.0, 0.0, 120.0, "doors fully open, lower bound"),
        "dwell_max_s": _k(float, 6.0, 0.0, 120.0, "doors fully open, upper bound"),
        "reopen_probability": _k(
            float, 0.03, 0.0, 1.0, "chance a closing door reopens once (normal obstruction)"
        ),
    },
    "leveling": {
        "stop_sigma_mm": _k(float, 3.0, 0.0, 20.0, "spread of the stopping offset"),
        "stop_limit_mm": _k(
            float, 9.0, 0.0, 20.0, "offsets are clipped to ±this (stopping accuracy ±10 mm)"
        ),
    },
    "noise": {
        "speed_sigma_mps": _k(float, 0.005, 0.0, 0.5, "speed sensor noise while moving"),
        "accel_sigma_mps2": _k(float, 0.02, 0.0, 1.0, "accelerometer noise"),
        "position_sigma_m": _k(float, 0.001, 0.0, 0.1, "position encoder noise"),
        "load_sigma_kg": _k(float, 3.0, 0.0, 100.0, "load cell noise"),
        "leveling_sigma_mm": _k(float, 0.3, 0.0, 10.0, "leveling sensor noise"),
    },
    "traffic": {
        "intensity": _k(float, 1.0, 0.0, 20.0, "multiplies every building type's call rate"),
        "local_hour": _k(
            int,
            -1,
            -1,
            23,
            "every call follows this local hour's traffic, whatever the clock; -1 follows it",
        ),
        "passenger_kg": _k(float, 75.0, 30.0, 150.0, "mean mass of a passenger"),
        "passenger_sigma_kg": _k(float, 12.0, 0.0, 50.0, "spread of a passenger's mass"),
        "passengers_mean_peak": _k(float, 2.5, 1.0, 30.0, "mean passengers per call at peaks"),
        "passengers_mean_offpeak": _k(float, 1.3, 1.0, 30.0, "mean passengers per call otherwise"),
    },
    "traffic.peak_calls_per_hour": {
        b: _k(
            float,
            DEFAULT_PEAK_CALLS_PER_HOUR[b],
            0.0,
            600.0,
            f"calls per car per hour at the {b} peak",
        )
        for b in BUILDING_TYPES
    },
}

_DURATION = {
    "duration_min_s": _k(float, 600.0, 1.0, 7 * 86400.0, "how long it lasts, lower bound"),
    "duration_max_s": _k(float, 1800.0, 1.0, 7 * 86400.0, "how long it lasts, upper bound"),
}
_RATE = {"rate_per_day": _k(float, _REQUIRED, 0.0, 1e5, "expected occurrences per elevator-day")}


def _prob(what: str) -> dict[str, Key]:
    return {"probability": _k(float, _REQUIRED, 0.0, 1.0, f"probability per {what}")}


def _dur(lo: float, hi: float) -> dict[str, Key]:
    return {
        k: dataclasses.replace(v, default=d)
        for (k, v), d in zip(_DURATION.items(), (lo, hi), strict=True)
    }


_TRAP = {
    "code_probability": _k(float, 0.8, 0.0, 1.0, "chance the terminal raises the GB codes"),
    "alarm_probability": _k(float, 0.6, 0.0, 1.0, "chance a passenger presses the alarm"),
}
_OVERTRAVEL = {
    "overtravel_min_m": _k(float, 0.3, 0.05, 2.0, "distance beyond the terminal landing, lower"),
    "overtravel_max_m": _k(float, 0.8, 0.05, 2.0, "distance beyond the terminal landing, upper"),
}

#: Fault sections: ``[faults.<name>]``. A missing section means the fault is off.
FAULTS: Final[dict[str, dict[str, Key]]] = {
    "trapped_between_levels": {**_RATE, **_dur(600.0, 2400.0), **_TRAP},
    "trapped_at_level": {**_RATE, **_dur(300.0, 1800.0), **_TRAP},
    "overtravel_top": {**_RATE, **_OVERTRAVEL, **_dur(300.0, 1800.0)},
    "overtravel_bottom": {**_RATE, **_OVERTRAVEL, **_dur(300.0, 1800.0)},
    "overspeed": {
        **_prob("trip long enough to exceed 116% of rated speed"),
        "factor_min": _k(float, 1.16, 1.16, 2.0, "peak speed / rated speed, lower bound"),
        "factor_max": _k(float, 1.35, 1.16, 2.0, "peak speed / rated speed, upper bound"),
    },
    "door_open_while_running": {**_prob("trip")},
    "unintended_movement": {
        **_RATE,
        **_dur(300.0, 1800.0),
        "creep_speed_min_mps": _k(float, 0.1, 0.01, 1.0, "creep speed, lower bound"),
        "creep_speed_max_mps": _k(float, 0.3, 0.01, 1.0, "creep speed, upper bound"),
        "distance_min_m": _k(float, 0.4, 0.05, 5.0, "distance the car creeps, lower bound"),
        "distance_max_m": _k(float, 1.2, 0.05, 5.0, "distance the car creeps, upper bound"),
    },
    "stop_outside_door_zone": {**_RATE, **_dur(20.0, 180.0)},
    "runtime_limiter": {**_RATE, **_dur(300.0, 1800.0)},
    "overload": {
        **_prob("boarding"),
        **_dur(10.0, 60.0),
        "factor_min": _k(float, 1.12, 1.11, 2.0, "load / rated load, lower bound"),
        "factor_max": _k(float, 1.4, 1.11, 2.0, "load / rated load, upper bound"),
    },
    "leveling_drift": {
        **_RATE,
        "mm_per_day_min": _k(float, 2.0, 0.01, 5000.0, "growth of the stopping offset, lower"),
        "mm_per_day_max": _k(float, 10.0, 0.01, 5000.0, "growth of the stopping offset, upper"),
    },
    "door_degradation": {
        **_RATE,
        "slowdown_per_day_min": _k(
            float, 0.02, 0.0001, 100.0, "door time growth, fraction per day, lower"
        ),
        "slowdown_per_day_max": _k(
            float, 0.1, 0.0001, 100.0, "door time growth, fraction per day, upper"
        ),
    },
    "door_reopening": {
        **_prob("door cycle"),
        "reopens_min": _k(int, 3, 2, 20, "reopenings in the episode, lower bound"),
        "reopens_max": _k(int, 8, 2, 20, "reopenings in the episode, upper bound"),
    },
    "power_loss": {**_RATE, **_dur(60.0, 1800.0)},
    "alarm_nuisance": {
        **_prob("trip with passengers"),
        "press_min_s": _k(float, 1.0, 0.1, 60.0, "how long the button is held, lower bound"),
        "press_max_s": _k(float, 5.0, 0.1, 60.0, "how long the button is held, upper bound"),
    },
    "dropout": {**_RATE, **_dur(60.0, 1800.0)},
    "stuck_sensor": {
        **_RATE,
        **_dur(300.0, 3600.0),
        "columns": _k(
            list, list(STUCK_COLUMNS), doc="columns that may freeze", choices=STUCK_COLUMNS
        ),
    },
    "clock_skew": {
        **_RATE,
        **_dur(300.0, 3600.0),
        "skew_min_s": _k(float, 1.0, 0.001, 86400.0, "clock offset magnitude, lower bound"),
        "skew_max_s": _k(float, 600.0, 0.001, 86400.0, "clock offset magnitude, upper bound"),
    },
    "duplicate": {**_prob("message")},
    "out_of_order": {
        **_prob("message"),
        "hold_min": _k(int, 1, 1, 10, "messages sent before the held one, lower bound"),
        "hold_max": _k(int, 3, 1, 10, "messages sent before the held one, upper bound"),
    },
    "malformed": {
        **_prob("message"),
        "variants": _k(
            list,
            list(MALFORMED_VARIANTS),
            doc="ways a message is broken",
            choices=MALFORMED_VARIANTS,
        ),
    },
}

#: GB/T 24476 terminal fault codes without a rule of their own: the terminal reports them and
#: takes the car out of service (mode 0); detectors see them only as ``terminal_fault``.
TERMINAL_CODES: Final = ("01", "02", "07", "08")
FAULTS["terminal_code"] = {
    **_RATE,
    **_dur(60.0, 600.0),
    "codes": _k(
        list,
        list(TERMINAL_CODES),
        doc="codes drawn from: 01 safety circuit open while running, 02 door-close fault, "
        "07 floor position lost, 08 other fault preventing re-run",
        choices=TERMINAL_CODES,
    ),
}

#: Service-mode episodes, ``[service.<name>]``: the service mode the car reports during one
#: (``foundation.contract``: 0 stopped, 2 inspection, 3 fire recall, 4 firefighter,
#: 5 emergency power, 6 earthquake, 7 unknown) and the GB/T 24476 event that announces it
#: (42 out of service, 43 inspection, 44 fire recall, 45 firefighter operation, 46 emergency
#: power, 47 earthquake; none for an unknown mode). Event 40 (back to normal) ends each.
SERVICE_MODES: Final[dict[str, tuple[int, str | None]]] = {
    "maintenance_visit": (2, "43"),
    "out_of_service": (0, "42"),
    "fire_recall": (3, "44"),
    "firefighter": (4, "45"),
    "emergency_power": (5, "46"),
    "earthquake": (6, "47"),
    "unknown_mode": (7, None),
}
#: Service sections: ``[service.<name>]``. A missing section means the episode never happens.
SERVICE: Final[dict[str, dict[str, Key]]] = {
    "maintenance_visit": {
        **_RATE,
        # TSG T5002-2017's half-monthly items take a technician about an hour.
        **_dur(1800.0, 5400.0),
        "inspection_speed_mps": _k(
            float,
            0.3,
            0.05,
            0.63,
            "speed of inspection runs (EN 81-20 5.12.1.5.2.1: at most 0.63 m/s)",
        ),
        "runs_per_hour": _k(float, 6.0, 0.0, 120.0, "inspection runs per hour of the visit"),
    },
    "out_of_service": {**_RATE, **_dur(300.0, 3600.0)},
    "fire_recall": {**_RATE, **_dur(300.0, 1800.0)},
    "firefighter": {**_RATE, **_dur(300.0, 1800.0)},
    "emergency_power": {**_RATE, **_dur(300.0, 1800.0)},
    "earthquake": {**_RATE, **_dur(300.0, 1800.0)},
    "unknown_mode": {**_RATE, **_dur(60.0, 600.0)},
}
for _spec in (*FAULTS.values(), *SERVICE.values()):
    _spec["enabled"] = _k(bool, True, doc="false keeps the section but injects nothing")


def _check_value(path: str, key: Key, value: Any) -> Any:
    if key.kind is bool:
        if not isinstance(value, bool):
            raise ScenarioError(f"{path}: {value!r} is not true or false")
        return value
    if key.kind is str:
        if not isinstance(value, str):
            raise ScenarioError(f"{path}: {value!r} is not a string")
        return value
    if key.kind is list:
        if not isinstance(value, list) or not value:
            raise ScenarioError(f"{path}: {value!r} is not a non-empty list")
        assert key.choices is not None
        for v in value:
            if v not in key.choices:
                raise ScenarioError(f"{path}: {v!r} is not one of {', '.join(key.choices)}")
        return list(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ScenarioError(f"{path}: {value!r} is not a number")
    if key.kind is int and not isinstance(value, int):
        raise ScenarioError(f"{path}: {value!r} is not a whole number")
    if value != value:  # NaN
        raise ScenarioError(f"{path}: nan is not a number")
    if key.lo is not None and value < key.lo:
        raise ScenarioError(f"{path}: {value!r} is below {key.lo!r}")
    if key.hi is not None and value > key.hi:
        raise ScenarioError(f"{path}: {value!r} is above {key.hi!r}")
    return key.kind(value)


def _read_table(
    path: str, spec: Mapping[str, Key], table: Any, subtables: tuple[str, ...] = ()
) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise ScenarioError(f"{path}: expected a table, got {table!r}")
    for name in table:
        if name not in spec and name not in subtables:
            known = ", ".join(sorted([*spec, *subtables]))
            raise ScenarioError(f"{path}.{name}: unknown key (known keys: {known})")
    out: dict[str, Any] = {}
    for name, key in spec.items():
        if name in table:
            out[name] = _check_value(f"{path}.{name}", key, table[name])
        elif key.default is _REQUIRED:
            raise ScenarioError(f"{path}.{name}: required field is missing")
        else:
            out[name] = list(key.default) if isinstance(key.default, list) else key.default
    return out


def _check_ordered(path: str, values: Mapping[str, Any]) -> None:
    for name, lo in values.items():
        for suffix in ("_min", "min_"):
            if suffix in name:
                hi_name = name.replace(suffix, suffix.replace("min", "max"))
                if hi_name in values and lo > values[hi_name]:
                    raise ScenarioError(
                        f"{path}.{name}: {lo!r} is above {path}.{hi_name} ({values[hi_name]!r})"
                    )


@dataclass(frozen=True)
class FaultConfig:
    """One enabled fault type: its rate (or probability) and parameters."""

    name: str
    params: Mapping[str, Any]

    @property
    def rate_per_day(self) -> float:
        return float(self.params.get("rate_per_day", 0.0))

    @property
    def probability(self) -> float:
        return float(self.params.get("probability", 0.0))

    def __getitem__(self, key: str) -> Any:
        return self.params[key]


@dataclass(frozen=True)
class Scenario:
    """A validated scenario. Build with :func:`load_scenario` or :meth:`from_dict`.

    Attributes
    ----------
    name, seed, description, duration_s
        From ``[scenario]``.
    sections
        Every other section's values, defaults filled in, keyed ``"physics"``, ``"doors"``…
    faults
        Enabled fault types by name (a section with ``enabled = false`` or a zero rate is
        left out).
    service
        Enabled service-mode episodes by name (``[service.<name>]``, :data:`SERVICE`), the
        same way.
    """

    name: str
    seed: int
    description: str
    duration_s: float
    sections: Mapping[str, Mapping[str, Any]]
    faults: Mapping[str, FaultConfig] = field(default_factory=dict)
    service: Mapping[str, FaultConfig] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "scenario") -> Scenario:
        """Validate a parsed TOML document; raise :class:`ScenarioError` naming the key."""
        if not isinstance(data, Mapping):
            raise ScenarioError(f"{source}: expected a table")
        top_known = {
            "scenario",
            "sampling",
            "physics",
            "doors",
            "leveling",
            "noise",
            "traffic",
            "faults",
            "service",
        }
        for name in data:
            if name not in top_known:
                raise ScenarioError(
                    f"{name}: unknown section (known sections: {', '.join(sorted(top_known))})"
                )
        if "scenario" not in data:
            raise ScenarioError("scenario: required section is missing (it holds name and seed)")
        sections: dict[str, dict[str, Any]] = {}
        for name, spec in SECTIONS.items():
            if name == "traffic.peak_calls_per_hour":
                raw = data.get("traffic", {}).get("peak_calls_per_hour", {})
                sections[name] = _read_table("traffic.peak_calls_per_hour", spec, raw)
                continue
            subtables = ("peak_calls_per_hour",) if name == "traffic" else ()
            sections[name] = _read_table(name, spec, data.get(name, {}), subtables)
            _check_ordered(name, sections[name])
        sampling = sections["sampling"]
        if 1000 % sampling["sample_hz"]:
            raise ScenarioError(
                f"sampling.sample_hz: {sampling['sample_hz']} does not divide 1000 "
                "(sample times are whole milliseconds)"
            )
        faults_raw = data.get("faults", {})
        if not isinstance(faults_raw, dict):
            raise ScenarioError("faults: expected a table of [faults.<type>] sections")
        faults: dict[str, FaultConfig] = {}
        for name, table in faults_raw.items():
            if name not in FAULTS:
                raise ScenarioError(
                    f"faults.{name}: unknown fault type (known: {', '.join(sorted(FAULTS))})"
                )
            values = _read_table(f"faults.{name}", FAULTS[name], table)
            _check_ordered(f"faults.{name}", values)
            if name in ("overtravel_top", "overtravel_bottom"):
                zone = sections["physics"]["door_zone_m"]
                if values["overtravel_min_m"] <= zone:
                    raise ScenarioError(
                        f"faults.{name}.overtravel_min_m: {values['overtravel_min_m']!r} is not "
                        f"beyond the door zone (physics.door_zone_m = {zone!r})"
                    )
            rate = values.get("rate_per_day", values.get("probability", 0.0))
            if values["enabled"] and rate > 0:
                faults[name] = FaultConfig(name, values)
        service_raw = data.get("service", {})
        if not isinstance(service_raw, dict):
            raise ScenarioError("service: expected a table of [service.<episode>] sections")
        service: dict[str, FaultConfig] = {}
        for name, table in service_raw.items():
            if name not in SERVICE:
                raise ScenarioError(
                    f"service.{name}: unknown service episode (known: {', '.join(SERVICE)})"
                )
            values = _read_table(f"service.{name}", SERVICE[name], table)
            _check_ordered(f"service.{name}", values)
            if values["enabled"] and values["rate_per_day"] > 0:
                service[name] = FaultConfig(name, values)
        meta = sections.pop("scenario")
        return cls(
            name=meta["name"],
            seed=meta["seed"],
            description=meta["description"],
            duration_s=meta["duration_s"],
            sections=sections,
            faults={k: faults[k] for k in FAULTS if k in faults},
            service={k: service[k] for k in SERVICE if k in service},
        )

    def with_seed(self, seed: int) -> Scenario:
        """The same scenario with another seed (what a ``--seed`` option overrides)."""
        _check_value("scenario.seed", SECTIONS["scenario"]["seed"], seed)
        return dataclasses.replace(self, seed=seed)

    def fingerprint(self) -> str:
        """A short hash of every value, for deterministic run ids."""
        doc = {
            "name": self.name,
            "seed": self.seed,
            "sections": self.sections,
            "faults": {k: dict(v.params) for k, v in self.faults.items()},
        }
        if self.service:  # absent when none, so older scenarios keep their run ids
            doc["service"] = {k: dict(v.params) for k, v in self.service.items()}
        blob = json.dumps(doc, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:10]

    def __getitem__(self, section: str) -> Mapping[str, Any]:
        return self.sections[section]


def load_scenario(path: str | Path, seed: int | None = None) -> Scenario:
    """Read and validate a scenario file.

    Parameters
    ----------
    path
        A TOML file in the format of ``simulator/SCENARIOS.md``.
    seed
        Overrides ``scenario.seed`` when given.

    Raises
    ------
    ScenarioError
        For unreadable TOML, unknown keys, impossible values and missing fields; the
        message starts with the key path, e.g. ``faults.overspeed.factor_max: 3.0 is above 2.0``.
    """
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ScenarioError(f"{p}: no such scenario file") from None
    except tomllib.TOMLDecodeError as e:
        raise ScenarioError(f"{p}: not valid TOML ({e})") from e
    scenario = Scenario.from_dict(data, source=str(p))
    return scenario if seed is None else scenario.with_seed(seed)


#: The scenarios shipped with the package, by name (``default``, ``no_faults``…).
SCENARIO_DIR: Final = Path(__file__).resolve().parent / "scenarios"
