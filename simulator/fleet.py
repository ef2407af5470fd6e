"""The fleet engine: every car's state as numpy arrays, advanced one sample tick at a time.

Continuous quantities (position, speed, acceleration along an S-curve or an emergency stop)
are evaluated for all travelling cars in one vectorised call per tick. Discrete transitions
(a door finishes opening, a trip ends, a call arrives, a fault is due) are rare — a few per
car per minute — and run as small per-car steps at the tick they fall due. Samples are
buffered per second; at the end of each second the active cars' samples are encoded as one
message each and idle cars send a heartbeat every ``heartbeat_s``. When every car is idle
the engine jumps straight to the next call or fault, so days of quiet nights cost little.

Fault labels record the tick at which the fault's condition first holds in the samples
(``onset``) and the last tick at which it still holds (``ended``; ``None`` if it still
held when the run ended).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec
import numpy as np

from foundation.contract import COLUMNS, SCHEMA_NAME
from registry.model import Elevator

from .motion import SCurve, eval_one, eval_scurve, plan_scurve
from .scenario import SERVICE_MODES, FaultConfig, Scenario
from .traffic import FROM_LOBBY, PEAK_SHARE, SHAPE, TO_LOBBY, local_hour, next_call_s

# Car phases.
IDLE, OPENING, OPEN, CLOSING, MOVING, HALTED, BRAKING = range(7)
# Progress of the call a car is serving.
NO_CALL, TO_ORIGIN, BOARDING, TO_DEST, ALIGHTING = range(5)
# Reported door states (foundation.contract.DoorState).
DOOR_CLOSED, DOOR_OPENING, DOOR_OPEN, DOOR_CLOSING = range(4)

#: Overspeed as the governor sees it: ≥ 115% of rated speed (GB/T 7588.1-2020 5.6.2.2.1.1).
OVERSPEED_RATIO: Final = 1.15
#: Overload: above 110% of rated load the car must not start (GB/T 7588.1-2020 5.12.1.2).
OVERLOAD_RATIO: Final = 1.10
#: Run-time limiter: the lesser of 45 s and full travel + 10 s, at least 20 s
#: (GB/T 7588.1-2020 5.9.2.7).
LIMITER_MAX_S: Final = 45.0
LIMITER_MARGIN_S: Final = 10.0
LIMITER_MIN_S: Final = 20.0
#: Platforms call a car with people inside and no way out "trapped" after about 30 s
#: (MISSION.md); terminals that raise code 11 do so then.
TRAPPED_CODE_AFTER_S: Final = 30.0

#: Per-elevator-day faults, in the order they are drawn (fixed, for determinism).
PER_DAY: Final = (
    "trapped_between_levels",
    "trapped_at_level",
    "overtravel_top",
    "overtravel_bottom",
    "unintended_movement",
    "stop_outside_door_zone",
    "runtime_limiter",
    "leveling_drift",
    "door_degradation",
    "power_loss",
    "dropout",
    "stuck_sensor",
    "clock_skew",
    # Appended, so that scenarios without them draw exactly as before.
    "terminal_code",
    *SERVICE_MODES,
)
#: Per-day episodes that take a car standing idle in normal service out of it for a while.
EPISODES: Final = frozenset({"terminal_code", *SERVICE_MODES})
#: Faults injected at the next opportunity after they fall due (a suitable trip or stop).
WAITS_FOR_OPPORTUNITY: Final = frozenset(
    {
        "trapped_between_levels",
        "trapped_at_level",
        "overtravel_top",
        "overtravel_bottom",
        "unintended_movement",
        "stop_outside_door_zone",
        "runtime_limiter",
    }
)
#: GB/T 24476 code of each fault type's label, where the table has one.
GB_CODE: Final[dict[str, str]] = {
    "trapped_between_levels": "11",
    "trapped_at_level": "11",
    "overtravel_top": "09",
    "overtravel_bottom": "10",
    "unintended_movement": "05",
    "stop_outside_door_zone": "04",
    "runtime_limiter": "06",
    "power_loss": "41",
    "alarm_nuisance": "90",
    "alarm_true": "90",
}
_EPS: Final = 1e-9
_INF: Final = math.inf


@dataclass
class FaultLabel:
    """Ground truth for one injected fault.

    Attributes
    ----------
    label_id
        1, 2, … in order of injection within the run.
    elevator_id
        Registration code of the car.
    fault_type
        A ``[faults.<type>]`` name, or ``alarm_true`` for an alarm pressed during a trapping.
    gb_code
        The GB/T 24476 code that names it, where one exists.
    onset_ms, ended_ms
        First and last sample time (Unix ms) at which the condition holds in the signals;
        ``ended_ms`` is None if it still held when the run ended.
    params
        What was injected (durations, factors, codes the terminal raised, seq numbers…).
    """

    label_id: int
    elevator_id: str
    fault_type: str
    gb_code: str | None
    onset_ms: int
    ended_ms: int | None
    params: dict[str, Any] = field(default_factory=dict)

    def as_dict(self, run_id: str) -> dict[str, Any]:
        return {
            "run_id": run_id,
            "label_id": self.label_id,
            "elevator_id": self.elevator_id,
            "fault_type": self.fault_type,
            "gb_code": self.gb_code,
            "onset_ms": self.onset_ms,
            "ended_ms": self.ended_ms,
            "params": self.params,
        }


#: Called with (car index, message bytes, the message as a dict, or None if malformed).
Sink = Callable[[int, bytes, "dict[str, Any] | None"], None]


class FleetEngine:
    """Simulates ``elevators`` under ``scenario`` from ``start_ms`` for ``duration_s``.

    Parameters
    ----------
    scenario
        A validated :class:`~simulator.scenario.Scenario`; its seed seeds everything.
    elevators
        The cars, in the order their state is kept (and ties are broken).
    start_ms
        Unix time of the first sample tick, ms.
    duration_s
        Simulated time; ticks run over ``[0, duration_s)``.
    """

    def __init__(
        self, scenario: Scenario, elevators: Sequence[Elevator], start_ms: int, duration_s: float
    ) -> None:
        if not elevators:
            raise ValueError("elevators: at least one elevator is needed to simulate")
        self.sc = scenario
        self.rng = np.random.default_rng(scenario.seed)
        rng = self.rng
        n = self.n = len(elevators)
        self.start_ms = start_ms
        self.start_epoch_s = start_ms / 1000.0
        self.hz = int(scenario["sampling"]["sample_hz"])
        self.period_ms = 1000 // self.hz
        self.end_tick = math.ceil(duration_s * self.hz)
        self.duration_s = self.end_tick / self.hz
        self.heartbeat_every = max(1, round(scenario["sampling"]["heartbeat_s"]))
        phys, doors = scenario["physics"], scenario["doors"]
        self.h = float(phys["floor_height_m"])
        self.zone_m = float(phys["door_zone_m"])

        self.ids = [e.registration_code for e in elevators]
        self.buildings = [e.building_type for e in elevators]
        self.floors = np.array([max(2, e.floors) for e in elevators], dtype=np.int64)
        self.rated_v = np.array([e.rated_speed_mps for e in elevators], dtype=float)
        self.rated_kg = np.array([e.rated_load_kg for e in elevators], dtype=float)
        self.a_max = rng.uniform(phys["accel_min_mps2"], phys["accel_max_mps2"], n)
        self.j_max = rng.uniform(phys["jerk_min_mps3"], phys["jerk_max_mps3"], n)
        self.open_s = rng.uniform(doors["opening_min_s"], doors["opening_max_s"], n)
        self.close_s = rng.uniform(doors["closing_min_s"], doors["closing_max_s"], n)
        self.limiter_s = np.array(
            [
                min(
                    LIMITER_MAX_S,
                    max(
                        LIMITER_MIN_S,
                        plan_scurve(
                            (self.floors[i] - 1) * self.h,
                            self.rated_v[i],
                            self.a_max[i],
                            self.j_max[i],
                        ).duration_s
                        + LIMITER_MARGIN_S,
                    ),
                )
                for i in range(n)
            ]
        )
        calls = scenario["traffic.peak_calls_per_hour"]
        intensity = scenario["traffic"]["intensity"]
        self.peak_calls = [calls[b] * intensity for b in self.buildings]

        # Dynamic state.
        self.phase = np.full(n, IDLE, dtype=np.int8)
        self.phase_end = np.full(n, _INF)
        landing = rng.integers(0, self.floors)
        self.pos = landing * self.h + self._stop_offsets_mm(n) / 1000.0
        self.speed = np.zeros(n)
        self.accel = np.zeros(n)
        self.door = np.zeros(n, dtype=np.int8)
        #: The tick the doors last closed: doors that reopen on that very tick (a call at
        #: the landing) show no closed sample, so the signals see a reopening.
        self.closed_tick = np.full(n, -1, dtype=np.int64)
        #: The stop's unplanned reopenings when they closed, and the first one's tick: a
        #: reopening on that very tick continues the count.
        self.closed_reopens = np.zeros(n, dtype=np.int64)
        self.closed_reopens_first = np.zeros(n, dtype=np.int64)
        self.load = np.zeros(n)
        self.passengers = np.zeros(n, dtype=bool)
        self.mode = np.ones(n, dtype=np.int8)
        self.direction = np.zeros(n, dtype=np.int8)
        self.alarm_on = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
        self.alarm_off = np.zeros(n, dtype=np.int64)
        # Trip (S-curve) and emergency-stop parameters.
        self.tr_t0, self.tr_x0, self.tr_sign = np.zeros(n), np.zeros(n), np.ones(n)
        self.tr_d, self.tr_T, self.tr_tj = np.zeros(n), np.zeros(n), np.zeros(n)
        self.tr_ta, self.tr_j, self.tr_vp = np.zeros(n), np.ones(n), np.zeros(n)
        self.br_t0, self.br_x0, self.br_v0 = np.zeros(n), np.zeros(n), np.zeros(n)
        self.br_sign = np.ones(n)
        # Per-car bookkeeping touched only by transitions: plain lists are faster.
        self.trip_kind: list[str] = ["normal"] * n
        self.trip_flags: list[dict[str, Any]] = [{} for _ in range(n)]
        self.stage = [NO_CALL] * n
        self.origin = [0] * n
        self.dest = [0] * n
        self.n_pass = [0] * n
        self.halt: list[dict[str, Any] | None] = [None] * n
        #: The service-mode episode (or terminal fault) a car is in, see _begin_episode.
        self.episode: list[dict[str, Any] | None] = [None] * n
        #: An episode that fell due while the car was busy: it begins when the car is free.
        self.episode_pending: list[str | None] = [None] * n
        self.door_ctx: list[dict[str, Any]] = [{} for _ in range(n)]
        self.pending: list[set[str]] = [set() for _ in range(n)]
        self.codes: list[list[tuple[int, str, bool]]] = [[] for _ in range(n)]
        self.code_next_tick = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
        self.drift = [(0.0, _INF)] * n  # (mm per day, start s)
        self.door_slow = [(0.0, _INF)] * n  # (fraction per day, start s)
        self.labels: list[FaultLabel] = []
        self.next_call = np.array(
            [
                next_call_s(
                    rng,
                    self.buildings[i],
                    self.peak_calls[i],
                    0.0,
                    self.start_epoch_s,
                    self._tz,
                    self.duration_s,
                    self._fixed_hour,
                )
                for i in range(n)
            ]
        )
        f = scenario.faults
        self.per_day_cfg: dict[str, FaultConfig] = {**f, **scenario.service}
        self.per_day = [name for name in PER_DAY if name in self.per_day_cfg]
        self.fault_next = {
            name: rng.exponential(86400.0 / self.per_day_cfg[name].rate_per_day, n)
            for name in self.per_day
        }
        self.fault_due = np.full(n, _INF)
        for name in self.per_day:
            np.minimum(self.fault_due, self.fault_next[name], out=self.fault_due)

        # Message-level state (see _send).
        self.seq = [0] * n
        self.last_msg_sec = (-rng.integers(0, self.heartbeat_every, n)).tolist()
        self.device: list[dict[str, Any] | None] = [None] * n
        self.next_special = {
            name: [self._geometric(f[name].probability) for _ in range(n)]
            for name in ("malformed", "duplicate", "out_of_order")
            if name in f
        }
        self.special_seq = [
            min((v[i] for v in self.next_special.values()), default=_INF) for i in range(n)
        ]
        self.held: list[list[tuple[int, int, bytes, dict[str, Any] | None]]] = [
            [] for _ in range(n)
        ]
        self.messages = 0
        self.samples = 0
        self.malformed = 0
        self._encode = msgspec.json.Encoder().encode
        self._sink: Sink = lambda i, b, m: None

        k = self.hz
        self.buf_pos, self.buf_speed, self.buf_accel, self.buf_load = (
            np.zeros((k, n)),
            np.zeros((k, n)),
            np.zeros((k, n)),
            np.zeros((k, n)),
        )
        self.buf_door = np.zeros((k, n), dtype=np.int8)
        self.buf_dir = np.zeros((k, n), dtype=np.int8)
        self.buf_mode = np.zeros((k, n), dtype=np.int8)
        self.buf_pass = np.zeros((k, n), dtype=bool)
        self.buf_alarm = np.zeros((k, n), dtype=bool)
        self.act = np.zeros(n, dtype=bool)

    # ------------------------------------------------------------------ helpers
    @property
    def _tz(self) -> float:
        return float(self.sc["sampling"]["timezone_offset_h"])

    @property
    def _fixed_hour(self) -> int:
        return int(self.sc["traffic"]["local_hour"])

    def _geometric(self, p: float) -> float:
        return float(self.rng.geometric(p)) - 1 if p > 0 else _INF

    def _u(self, lo: float, hi: float) -> float:
        return float(self.rng.uniform(lo, hi)) if hi > lo else float(lo)

    def _tick_at_or_after(self, t: float) -> int:
        return math.ceil(t * self.hz - 1e-6)

    def _ms(self, tick: int) -> int:
        return self.start_ms + tick * self.period_ms

    def _stop_offsets_mm(self, size: int) -> Any:
        lev = self.sc["leveling"]
        return np.clip(
            self.rng.normal(0.0, lev["stop_sigma_mm"], size)
            if lev["stop_sigma_mm"]
            else np.zeros(size),
            -lev["stop_limit_mm"],
            lev["stop_limit_mm"],
        )

    def _label(
        self, i: int, fault_type: str, onset_tick: int, ended_tick: int | None = None, **params: Any
    ) -> FaultLabel:
        label = FaultLabel(
            len(self.labels) + 1,
            self.ids[i],
            fault_type,
            GB_CODE.get(fault_type),
            self._ms(onset_tick),
            None if ended_tick is None else self._ms(ended_tick),
            params,
        )
        self.labels.append(label)
        return label

    def _end_label(self, label: FaultLabel | None, tick: int) -> None:
        if label is not None:
            label.ended_ms = self._ms(max(tick, 0))

    def _raise(self, i: int, tick: int, code: str, event: bool = False) -> bool:
        """Queue a GB/T 24476 fault (or event) code for the message holding ``tick``."""
        if tick >= self.end_tick:
            return False
        self.codes[i].append((tick, code, event))
        self.code_next_tick[i] = min(int(self.code_next_tick[i]), tick)
        return True

    def _landing(self, i: int) -> int:
        return int(min(max(round(self.pos[i] / self.h), 0), self.floors[i] - 1))

    def _in_zone(self, i: int) -> bool:
        return abs(self.pos[i] - self._landing(i) * self.h) <= self.zone_m

    def _door_factor(self, i: int, t: float) -> float:
        rate, since = self.door_slow[i]
        return 1.0 + rate * max(0.0, t - since) / 86400.0

    def _offset_m(self, i: int, t: float) -> float:
        rate, since = self.drift[i]
        return float(self._stop_offsets_mm(1)[0] + rate * max(0.0, t - since) / 86400.0) / 1000

    # ------------------------------------------------------------------ motion
    def _plan(self, i: int, t: float, target_m: float, vmax: float) -> SCurve:
        d = target_m - self.pos[i]
        plan = plan_scurve(abs(d), vmax, self.a_max[i], self.j_max[i])
        self.tr_t0[i], self.tr_x0[i] = t, self.pos[i]
        self.tr_sign[i] = 1.0 if d >= 0 else -1.0
        self.tr_d[i], self.tr_T[i] = plan.distance_m, plan.duration_s
        self.tr_tj[i], self.tr_ta[i] = plan.jerk_time_s, plan.accel_time_s
        self.tr_j[i], self.tr_vp[i] = plan.jerk_mps3, plan.peak_speed_mps
        self.phase[i] = MOVING
        self.phase_end[i] = t + plan.duration_s
        self.direction[i] = 1 if d >= 0 else 2
        return plan

    def _plan_ticks(self, i: int, plan: SCurve) -> tuple[Any, Any, Any]:
        """Tick numbers of a just-planned trip, with the car's position and speed at each."""
        t0_tick = round(self.tr_t0[i] * self.hz)
        ticks = np.arange(t0_tick, self._tick_at_or_after(self.tr_t0[i] + plan.duration_s) + 1)
        x, v, _ = eval_one(plan, ticks / self.hz - self.tr_t0[i])
        return ticks, self.tr_x0[i] + self.tr_sign[i] * x, v

    def _motion(self, t: float) -> None:
        self.speed[:] = 0.0
        self.accel[:] = 0.0
        mv = np.flatnonzero(self.phase == MOVING)
        if mv.size:
            x, v, a = eval_scurve(
                t - self.tr_t0[mv],
                self.tr_d[mv],
                self.tr_T[mv],
                self.tr_tj[mv],
                self.tr_ta[mv],
                self.tr_j[mv],
                self.tr_vp[mv],
            )
            self.pos[mv] = self.tr_x0[mv] + self.tr_sign[mv] * x
            self.speed[mv] = v
            self.accel[mv] = a
        bk = np.flatnonzero(self.phase == BRAKING)
        if bk.size:
            dec = float(self.sc["physics"]["brake_decel_mps2"])
            tau = np.minimum(t - self.br_t0[bk], self.br_v0[bk] / dec)
            v = self.br_v0[bk] - dec * tau
            self.pos[bk] = self.br_x0[bk] + self.br_sign[bk] * (
                self.br_v0[bk] * tau - dec * tau * tau / 2
            )
            self.speed[bk] = v
            self.accel[bk] = np.where(v > 0, -dec, 0.0)

    # ------------------------------------------------------------------ calls and doors
    def _start_call(self, i: int, t: float) -> None:
        arrived = float(self.next_call[i])
        b = self.buildings[i]
        hour = (
            self._fixed_hour
            if self._fixed_hour >= 0
            else local_hour(self.start_epoch_s + t, self._tz)
        )
        top = int(self.floors[i]) - 1
        u = self.rng.random()
        if u < FROM_LOBBY[b][hour]:
            origin, dest = 0, int(self.rng.integers(1, top + 1))
        elif u < FROM_LOBBY[b][hour] + TO_LOBBY[b][hour]:
            origin, dest = int(self.rng.integers(1, top + 1)), 0
        else:
            origin = int(self.rng.integers(0, top + 1))
            dest = int(self.rng.integers(0, top))
            dest += dest >= origin
        traffic = self.sc["traffic"]
        mean = traffic[
            "passengers_mean_peak" if SHAPE[b][hour] >= PEAK_SHARE else "passengers_mean_offpeak"
        ]
        capacity = max(1, int(self.rated_kg[i] // traffic["passenger_kg"]))
        self.n_pass[i] = min(capacity, 1 + int(self.rng.poisson(mean - 1.0)))
        self.origin[i], self.dest[i] = origin, dest
        self.next_call[i] = next_call_s(
            self.rng,
            b,
            self.peak_calls[i],
            arrived,
            self.start_epoch_s,
            self._tz,
            self.duration_s,
            self._fixed_hour,
        )
        if self._landing(i) == origin:
            self.stage[i] = BOARDING
            self._open_doors(i, t)
        else:
            self.stage[i] = TO_ORIGIN
            self._leg(i, t, origin, loaded=False)

    def _open_doors(self, i: int, t: float) -> None:
        self.direction[i] = 0
        if self.door[i] == DOOR_OPEN:  # already open (door-open-while-running trip)
            self._doors_open(i, t)
            return
        # A call at this landing reverses doors still closing, or shut this very tick.
        if self.door[i] == DOOR_CLOSING:
            self._count_reopening(i, round(t * self.hz) - 1)
        elif self.closed_tick[i] == round(t * self.hz):
            if 0 < self.closed_reopens[i] < CHANCE_REOPENING_EPISODE:  # (else labelled)
                ctx = self.door_ctx[i]
                ctx["chance_reopens"] = int(self.closed_reopens[i])
                ctx["chance_first"] = int(self.closed_reopens_first[i])
            self._count_reopening(i, round(t * self.hz) - 1)
        self.phase[i], self.door[i] = OPENING, DOOR_OPENING
        self.phase_end[i] = t + self.open_s[i] * self._door_factor(i, t)

    def _doors_open(self, i: int, t: float) -> None:
        self.phase[i], self.door[i] = OPEN, DOOR_OPEN
        doors, traffic = self.sc["doors"], self.sc["traffic"]
        dwell = self._u(doors["dwell_min_s"], doors["dwell_max_s"])
        ctx = self.door_ctx[i]
        tick = round(t * self.hz)
        if ctx.get("reopens_left"):
            dwell = self._u(0.5, 1.5)
        elif self.stage[i] == BOARDING and not self.passengers[i]:
            n = self.n_pass[i]
            kg = n * traffic["passenger_kg"] + math.sqrt(n) * traffic["passenger_sigma_kg"] * float(
                self.rng.standard_normal()
            )
            self.load[i] = max(kg, 20.0)
            self.passengers[i] = True
            over = self.sc.faults.get("overload")
            if over is not None and self.rng.random() < over.probability:
                factor = self._u(over["factor_min"], over["factor_max"])
                normal_kg = float(self.load[i])
                self.load[i] = factor * self.rated_kg[i]
                hold = self._u(over["duration_min_s"], over["duration_max_s"])
                ctx["overload"] = (
                    self._label(
                        i,
                        "overload",
                        tick,
                        factor=round(factor, 3),
                        load_kg=round(float(self.load[i]), 1),
                        rated_load_kg=float(self.rated_kg[i]),
                    ),
                    normal_kg,
                )
                dwell = hold
        elif self.stage[i] == ALIGHTING and self.passengers[i]:
            self.load[i] = 0.0
            self.passengers[i] = False
        if (
            self.stage[i] in (ALIGHTING, NO_CALL)
            and "unintended_movement" in self.pending[i]
            and not self.passengers[i]
        ):
            self.pending[i].discard("unintended_movement")
            self._start_creep(i, t)
            return
        self.phase_end[i] = t + dwell

    def _start_creep(self, i: int, t: float) -> None:
        cfg = self.sc.faults["unintended_movement"]
        landing = self._landing(i)
        sign = 1.0 if self.rng.random() < 0.5 else -1.0
        if landing == 0:
            sign = 1.0
        elif landing == self.floors[i] - 1:
            sign = -1.0
        dist = self._u(cfg["distance_min_m"], cfg["distance_max_m"])
        dist = max(dist, self.zone_m + 0.1)
        speed = self._u(cfg["creep_speed_min_mps"], cfg["creep_speed_max_mps"])
        plan = self._plan(i, t, landing * self.h + sign * dist, speed)
        self.trip_kind[i] = "creep"
        ticks, x, _ = self._plan_ticks(i, plan)
        out = ticks[np.abs(x - landing * self.h) > self.zone_m]
        label = self._label(
            i,
            "unintended_movement",
            int(out[0]),
            None,
            distance_m=round(dist, 3),
            creep_speed_mps=round(speed, 3),
            direction="up" if sign > 0 else "down",
            # The creep began in the door zone, before the onset (leaving it).
            creep_started_ms=self._ms(round(t * self.hz)),
        )
        self._raise(i, int(out[0]), "05")
        self.trip_flags[i] = {
            "label": label,
            "duration": self._u(cfg["duration_min_s"], cfg["duration_max_s"]),
        }

    def _start_closing(self, i: int, t: float) -> None:
        ctx = self.door_ctx[i]
        over = ctx.pop("overload", None)
        if over is not None:  # the excess passengers step out; then the doors close
            label, normal_kg = over
            self.load[i] = normal_kg
            self._end_label(label, round(t * self.hz) - 1)
            self.phase_end[i] = t + self._u(1.0, 3.0)
            return
        self.phase[i], self.door[i] = CLOSING, DOOR_CLOSING
        close_s = self.close_s[i] * self._door_factor(i, t)
        self.phase_end[i] = t + close_s
        ctx["closing_from"] = t
        reopening = self.sc.faults.get("door_reopening")
        if not ctx.get("reopens_left"):
            if reopening is not None and self.rng.random() < reopening.probability:
                count = int(
                    self.rng.integers(reopening["reopens_min"], reopening["reopens_max"] + 1)
                )
                ctx["reopens_left"] = count
                # One label per stop: reopenings earlier in it (chance ones, an episode
                # drawn before) are the episode's beginning.
                before, first = ctx.get(
                    "reopen_label",
                    (ctx.get("chance_reopens", 0), ctx.get("chance_first", round(t * self.hz))),
                )
                ctx["reopen_label"] = (before + count, first)
            elif self.rng.random() < self.sc["doors"]["reopen_probability"]:
                ctx["reopens_left"] = 1
                self._count_reopening(i, round(t * self.hz))
        if ctx.get("reopens_left"):
            self.phase_end[i] = t + close_s * self._u(0.2, 0.8)
            ctx["reopen_now"] = True

    def _count_reopening(self, i: int, closing_tick: int) -> None:
        """A reopening no fault planned (a chance obstruction, a call at this landing while
        the doors close), of doors closing at ``closing_tick``: part of the stop's
        ``door_reopening`` label if it has one, else counted towards
        :data:`CHANCE_REOPENING_EPISODE`."""
        ctx = self.door_ctx[i]
        if "reopen_label" in ctx:
            before, first = ctx["reopen_label"]
            ctx["reopen_label"] = (before + 1, first)
        else:
            ctx["chance_reopens"] = ctx.get("chance_reopens", 0) + 1
            ctx.setdefault("chance_first", closing_tick)

    def _end_closing(self, i: int, t: float) -> None:
        ctx = self.door_ctx[i]
        if ctx.pop("reopen_now", False):
            ctx["reopens_left"] -= 1
            self.phase[i], self.door[i] = OPENING, DOOR_OPENING
            self.phase_end[i] = t + max(
                0.3, (t - ctx["closing_from"]) / self.close_s[i] * self.open_s[i]
            )
            return
        self.door[i] = DOOR_CLOSED
        self.closed_tick[i] = round(t * self.hz)
        self.closed_reopens[i] = ctx.get("chance_reopens", 0)
        self.closed_reopens_first[i] = ctx.get("chance_first", 0)
        if "reopen_label" in ctx:
            count, first_closing = ctx.pop("reopen_label")
            self._label(i, "door_reopening", first_closing, round(t * self.hz), reopenings=count)
        elif ctx.get("chance_reopens", 0) >= CHANCE_REOPENING_EPISODE:
            self._label(
                i,
                "door_reopening",
                ctx["chance_first"],
                round(t * self.hz),
                reopenings=ctx["chance_reopens"],
                by_chance=True,
            )
        ctx.clear()
        if self.stage[i] == BOARDING:
            self.stage[i] = TO_DEST
            self._leg(i, t, self.dest[i], loaded=True)
        else:
            self._go_idle(i)

    def _go_idle(self, i: int) -> None:
        self.stage[i] = NO_CALL
        self.phase[i] = IDLE
        self.phase_end[i] = _INF
        self.direction[i] = 0

    # ------------------------------------------------------------------ trips and faults
    def _leg(self, i: int, t: float, dest: int, loaded: bool) -> None:
        """Start a trip to landing ``dest``; inject a pending or per-trip fault on it."""
        faults, pend = self.sc.faults, self.pending[i]
        here, top = self._landing(i), int(self.floors[i]) - 1
        vmax = float(self.rated_v[i])
        self.trip_kind[i], self.trip_flags[i] = "normal", {}
        target = dest * self.h + self._offset_m(i, t)
        halt = None
        if loaded and "trapped_between_levels" in pend:
            halt = "trapped_between_levels"
        elif not loaded and "stop_outside_door_zone" in pend:
            halt = "stop_outside_door_zone"
        elif not loaded and "runtime_limiter" in pend:
            halt = "runtime_limiter"
        if halt is not None:
            pend.discard(halt)
            lo, hi = sorted((here, dest))
            gap = here if halt == "runtime_limiter" else int(self.rng.integers(lo, hi))
            if halt == "runtime_limiter" and dest < here:
                gap = here - 1
            self._plan(i, t, (gap + self._u(0.35, 0.65)) * self.h, vmax)
            self.trip_kind[i] = "halt"
            self.trip_flags[i] = {"halt": halt}
            return
        if loaded and "trapped_at_level" in pend:
            pend.discard("trapped_at_level")
            self.trip_flags[i] = {"trap_at_level": True}
        for name, terminal, sign in (("overtravel_top", top, 1.0), ("overtravel_bottom", 0, -1.0)):
            if dest == terminal and name in pend:
                pend.discard(name)
                cfg = faults[name]
                beyond = self._u(cfg["overtravel_min_m"], cfg["overtravel_max_m"])
                plan = self._plan(i, t, terminal * self.h + sign * beyond, vmax)
                ticks, x, _ = self._plan_ticks(i, plan)
                out = ticks[sign * (x - terminal * self.h) > self.zone_m]
                self.trip_kind[i] = "halt"
                self.trip_flags[i] = {
                    "halt": name,
                    "onset_tick": int(out[0]),
                    "overtravel_m": round(beyond, 3),
                }
                return
        if "trap_at_level" not in self.trip_flags[i]:
            over = faults.get("overspeed")
            if over is not None and self.rng.random() < over.probability:
                factor = self._u(over["factor_min"], over["factor_max"])
                plan = plan_scurve(
                    abs(target - self.pos[i]), factor * vmax, self.a_max[i], self.j_max[i]
                )
                if plan.peak_speed_mps > (OVERSPEED_RATIO + 0.01) * vmax:
                    plan = self._plan(i, t, target, factor * vmax)
                    ticks, _, v = self._plan_ticks(i, plan)
                    over_ticks = ticks[v > OVERSPEED_RATIO * vmax]
                    self._label(
                        i,
                        "overspeed",
                        int(over_ticks[0]),
                        int(over_ticks[-1]),
                        factor=round(factor, 3),
                        peak_speed_mps=round(plan.peak_speed_mps, 3),
                        rated_speed_mps=vmax,
                    )
                    self.trip_flags[i] = {"fault": True}
                    return
            dowr = faults.get("door_open_while_running")
            if dowr is not None and self.rng.random() < dowr.probability:
                plan = self._plan(i, t, target, vmax)
                self.door[i] = DOOR_OPEN
                t0 = round(t * self.hz)
                self._label(
                    i,
                    "door_open_while_running",
                    t0 + 1,
                    self._tick_at_or_after(t + plan.duration_s) - 1,
                )
                self.trip_flags[i] = {"fault": True}
                return
        plan = self._plan(i, t, target, vmax)
        nuisance = faults.get("alarm_nuisance")
        if loaded and nuisance is not None and self.rng.random() < nuisance.probability:
            self._press_alarm(
                i,
                t + self._u(0.2, 0.8) * plan.duration_s,
                self._u(nuisance["press_min_s"], nuisance["press_max_s"]),
                "alarm_nuisance",
            )

    def _press_alarm(self, i: int, at_s: float, hold_s: float, fault_type: str) -> None:
        on = self._tick_at_or_after(at_s)
        off = max(on + 1, self._tick_at_or_after(at_s + hold_s))
        if on >= self.end_tick or self.alarm_off[i] > round(at_s * self.hz):
            return  # one press at a time
        self.alarm_on[i], self.alarm_off[i] = on, off
        self._raise(i, on, "90", event=True)
        self._label(i, fault_type, on, off - 1, held_s=round((off - on) / self.hz, 3))

    def _arrive(self, i: int, t: float) -> None:
        self.pos[i] = self.tr_x0[i] + self.tr_sign[i] * self.tr_d[i]
        kind, flags = self.trip_kind[i], self.trip_flags[i]
        self.trip_kind[i], self.trip_flags[i] = "normal", {}
        tick = round(t * self.hz)
        if kind == "creep":
            self.direction[i] = 0
            self.mode[i] = 0
            self.phase[i] = HALTED
            self.phase_end[i] = t + flags["duration"]
            self.halt[i] = {"kind": "unintended_movement", "label": flags["label"]}
            return
        if kind == "relevel":
            self.direction[i] = 0
            self._resume(i, t)
            return
        if kind == "inspection":
            self.direction[i] = 0
            self.phase[i], self.phase_end[i] = IDLE, _INF
            self._episode_wake(i, t)
            return
        if kind == "halt":
            self._halt(i, t, tick, flags)
            return
        if flags.get("trap_at_level"):
            self.direction[i] = 0
            self._trap(i, t, tick, "trapped_at_level", first_code="03")
            return
        self.stage[i] = {TO_ORIGIN: BOARDING, TO_DEST: ALIGHTING}.get(self.stage[i], self.stage[i])
        self._open_doors(i, t)

    def _trap(self, i: int, t: float, tick: int, kind: str, first_code: str) -> None:
        cfg = self.sc.faults[kind]
        duration = self._u(cfg["duration_min_s"], cfg["duration_max_s"])
        codes = []
        if first_code == "03" or self.rng.random() < cfg["code_probability"]:
            code_tick = tick + (3 if first_code == "03" else 1) * self.hz
            if duration > 3 and self._raise(i, code_tick, first_code):
                codes.append(first_code)
        if (
            self.rng.random() < cfg["code_probability"]
            and duration > TRAPPED_CODE_AFTER_S
            and self._raise(i, tick + int(TRAPPED_CODE_AFTER_S * self.hz), "11")
        ):
            codes.append("11")
        label = self._label(
            i,
            kind,
            tick,
            None,
            duration_s=round(duration, 1),
            codes=codes,
            passengers=self.n_pass[i],
            load_kg=round(float(self.load[i]), 1),
            floor=self._landing(i) + 1,
        )
        if self.rng.random() < cfg["alarm_probability"] and duration > 15:
            self._press_alarm(
                i, t + self._u(10.0, min(120.0, duration / 2)), self._u(2.0, 10.0), "alarm_true"
            )
        self.phase[i] = HALTED
        self.phase_end[i] = t + duration
        self.halt[i] = {"kind": kind, "label": label}

    def _halt(self, i: int, t: float, tick: int, flags: dict[str, Any]) -> None:
        kind = flags["halt"]
        if kind == "trapped_between_levels":
            self.direction[i] = 0
            self._trap(i, t, tick, kind, first_code="04")
            return
        cfg = self.sc.faults[kind]
        duration = self._u(cfg["duration_min_s"], cfg["duration_max_s"])
        self.phase[i] = HALTED
        if kind == "runtime_limiter":
            # The motor keeps "running" (direction held) until the limiter trips.
            trip_at = max(t, float(self.tr_t0[i]) + float(self.limiter_s[i]))
            self.phase_end[i] = trip_at
            self.halt[i] = {"kind": kind, "stage": "holding", "duration": duration}
            return
        self.direction[i] = 0
        params: dict[str, Any] = {"duration_s": round(duration, 1)}
        if kind == "stop_outside_door_zone":
            self._raise(i, tick + self.hz, "04")
            onset = tick
        else:  # overtravel: the terminal raises 09/10 as the car goes beyond the landing
            onset = flags["onset_tick"]
            self._raise(i, tick, GB_CODE[kind])
            params["overtravel_m"] = flags["overtravel_m"]
            self.mode[i] = 0
        label = self._label(i, kind, onset, None, **params)
        self.phase_end[i] = t + duration
        self.halt[i] = {"kind": kind, "label": label}

    def _end_halt(self, i: int, t: float) -> None:
        halt = self.halt[i]
        assert halt is not None
        tick = round(t * self.hz)
        if halt.get("stage") == "holding":
            self._raise(i, tick, "06")
            self.direction[i], self.mode[i] = 0, 0
            halt["label"] = self._label(
                i,
                "runtime_limiter",
                tick,
                None,
                limiter_s=round(float(self.limiter_s[i]), 1),
                duration_s=round(halt["duration"], 1),
            )
            halt["stage"] = "out"
            self.phase_end[i] = t + halt["duration"]
            return
        self.halt[i] = None
        # The car leaves the halted state at this tick: the condition held until the last one.
        self._end_label(halt.get("label"), tick - 1)
        self.mode[i] = 1
        if halt["kind"] == "power_loss":
            self._raise(i, tick, "40", event=True)
        self._recover(i, t)

    def _recover(self, i: int, t: float) -> None:
        """After a halt: doors shut, re-level to the nearest landing, then carry on."""
        self.door[i] = DOOR_CLOSED
        self.direction[i] = 0
        if not self._in_zone(i):
            landing = self._landing(i)
            self._plan(
                i,
                t,
                landing * self.h + self._offset_m(i, t),
                float(self.sc["physics"]["relevel_speed_mps"]),
            )
            self.trip_kind[i] = "relevel"
            return
        self._resume(i, t)

    def _resume(self, i: int, t: float) -> None:
        stage = self.stage[i]
        if stage == TO_ORIGIN:
            if self._landing(i) == self.origin[i]:
                self.stage[i] = BOARDING
                self._open_doors(i, t)
            else:
                self._leg(i, t, self.origin[i], loaded=False)
        elif stage == BOARDING and not self.passengers[i]:
            self._open_doors(i, t)
        elif self.passengers[i] or stage in (BOARDING, TO_DEST, ALIGHTING):
            self.stage[i] = ALIGHTING
            self._open_doors(i, t)
        else:
            self._go_idle(i)

    def _power_loss(self, i: int, t: float, cfg: FaultConfig) -> bool:
        phase = int(self.phase[i])
        if not (
            phase == IDLE
            or (phase == MOVING and self.trip_kind[i] == "normal" and not self.trip_flags[i])
        ):
            return False
        tick = round(t * self.hz)
        duration = self._u(cfg["duration_min_s"], cfg["duration_max_s"])
        self._raise(i, tick, "41", event=True)
        self.mode[i] = 0
        label = self._label(
            i,
            "power_loss",
            tick,
            None,
            duration_s=round(duration, 1),
            passengers=bool(self.passengers[i]),
            moving=phase == MOVING,
        )
        self.halt[i] = {"kind": "power_loss", "label": label}
        if phase == MOVING:
            x, v, _ = eval_scurve(
                np.array([t - self.tr_t0[i]]),
                self.tr_d[i : i + 1],
                self.tr_T[i : i + 1],
                self.tr_tj[i : i + 1],
                self.tr_ta[i : i + 1],
                self.tr_j[i : i + 1],
                self.tr_vp[i : i + 1],
            )
            self.pos[i] = self.tr_x0[i] + self.tr_sign[i] * float(x[0])
            self.br_t0[i], self.br_x0[i], self.br_v0[i] = t, self.pos[i], float(v[0])
            self.br_sign[i] = self.tr_sign[i]
            self.phase[i] = BRAKING
            dec = float(self.sc["physics"]["brake_decel_mps2"])
            self.phase_end[i] = t + float(v[0]) / dec
            self.halt[i]["until"] = t + duration  # type: ignore[index]
        else:
            self.phase[i] = HALTED
            self.phase_end[i] = t + duration
        self.direction[i] = 0
        return True

    def _end_braking(self, i: int, t: float) -> None:
        dec = float(self.sc["physics"]["brake_decel_mps2"])
        v0 = self.br_v0[i]
        self.pos[i] = self.br_x0[i] + self.br_sign[i] * v0 * v0 / (2 * dec)
        halt = self.halt[i]
        assert halt is not None
        halt["label"].params["between_levels"] = not self._in_zone(i)
        self.phase[i] = HALTED
        self.phase_end[i] = max(t, halt.pop("until"))

    def _trigger(self, name: str, i: int, t: float) -> bool:
        """A per-day fault fell due for car ``i``; False if it must be retried later."""
        cfg = self.per_day_cfg[name]
        tick = round(t * self.hz)
        if self.episode[i] is not None and (name in EPISODES or name == "power_loss"):
            return False  # one out-of-service reason at a time
        if name in EPISODES:
            if self.episode_pending[i] is not None:
                return False
            if not self._begin_episode(name, i, t, cfg):
                self.episode_pending[i] = name  # when the car is next free
            return True
        if name in WAITS_FOR_OPPORTUNITY:
            self.pending[i].add(name)
        elif name == "power_loss":
            return self._power_loss(i, t, cfg)
        elif name == "leveling_drift":
            rate = self._u(cfg["mm_per_day_min"], cfg["mm_per_day_max"])
            rate *= 1.0 if self.rng.random() < 0.5 else -1.0
            self.drift[i] = (rate, t)
            self._label(
                i,
                name,
                tick,
                None,
                mm_per_day=round(rate, 3),
                exceeds_20mm_after_days=round(20.0 / abs(rate), 3),
            )
        elif name == "door_degradation":
            rate = self._u(cfg["slowdown_per_day_min"], cfg["slowdown_per_day_max"])
            self.door_slow[i] = (rate, t)
            self._label(
                i,
                name,
                tick,
                None,
                slowdown_per_day=round(rate, 4),
                opening_s=round(float(self.open_s[i]), 3),
                closing_s=round(float(self.close_s[i]), 3),
            )
        else:  # device faults: a window of time in which messages are altered
            dev = self.device[i] or {}
            if name in dev:
                return True
            duration = self._u(cfg["duration_min_s"], cfg["duration_max_s"])
            end_tick = min(self.end_tick, self._tick_at_or_after(t + duration))
            window: dict[str, Any] = {"from_ms": self._ms(tick), "to_ms": self._ms(end_tick)}
            params: dict[str, Any] = {"duration_s": round(duration, 1)}
            if name == "stuck_sensor":
                window["column"] = params["column"] = str(self.rng.choice(cfg["columns"]))
                window["value"] = None
            elif name == "clock_skew":
                skew_s = self._u(cfg["skew_min_s"], cfg["skew_max_s"])
                skew_s *= 1.0 if self.rng.random() < 0.5 else -1.0
                window["skew_ms"] = params["skew_ms"] = round(skew_s * 1000)
            window["label"] = self._label(i, name, tick, end_tick - 1, **params)
            dev[name] = window
            self.device[i] = dev
        return True

    # ------------------------------------------------------------------ service episodes
    def _begin_episode(self, name: str, i: int, t: float, cfg: FaultConfig) -> bool:
        """Take a car standing idle in normal service out of it: a service-mode episode
        (mode and event of :data:`~simulator.scenario.SERVICE_MODES`) or a terminal fault
        code (mode 0). False, to retry shortly, while the car is busy."""
        if not (
            self.phase[i] == IDLE
            and self.stage[i] == NO_CALL
            and self.halt[i] is None
            and self.mode[i] == 1
            and self.door[i] == DOOR_CLOSED
        ):
            return False
        tick = round(t * self.hz)
        duration = self._u(cfg["duration_min_s"], cfg["duration_max_s"])
        params: dict[str, Any] = {"duration_s": round(duration, 1)}
        if name == "terminal_code":
            code: str | None = str(self.rng.choice(cfg["codes"]))
            mode = 0
            self._raise(i, tick, str(code))
        else:
            mode, code = SERVICE_MODES[name]
            if code is not None:
                self._raise(i, tick, code, event=True)
        params["service_mode"] = mode
        self.mode[i] = mode
        label = self._label(i, name, tick, None, **params)
        label.gb_code = code
        self.episode[i] = {
            "name": name,
            "label": label,
            "end": t + duration,
            "next_call": float(self.next_call[i]),
        }
        self._episode_wake(i, t)
        return True

    def _episode_wake(self, i: int, t: float) -> None:
        """When the standing car in an episode next does something: its next inspection
        run (maintenance visits) or the episode's end. Calls wait until then."""
        ep = self.episode[i]
        assert ep is not None
        wake = ep["end"]
        if ep["name"] == "maintenance_visit":
            per_hour = self.sc.service["maintenance_visit"]["runs_per_hour"]
            if per_hour > 0:
                wake = min(wake, t + float(self.rng.exponential(3600.0 / per_hour)))
        self.next_call[i] = wake

    def _episode_step(self, i: int, t: float) -> None:
        ep = self.episode[i]
        assert ep is not None
        if t + _EPS >= ep["end"]:
            self._end_episode(i, t)
            return
        # An inspection run: the technician drives the car a landing or two at inspection
        # speed, doors closed, and stops level.
        cfg = self.sc.service["maintenance_visit"]
        here, top = self._landing(i), int(self.floors[i]) - 1
        choices = [d for d in (here - 2, here - 1, here + 1, here + 2) if 0 <= d <= top]
        dest = int(self.rng.choice(choices))
        self._plan(i, t, dest * self.h + self._offset_m(i, t), float(cfg["inspection_speed_mps"]))
        self.trip_kind[i] = "inspection"
        self.trip_flags[i] = {}

    def _end_episode(self, i: int, t: float) -> None:
        ep = self.episode[i]
        assert ep is not None
        self.episode[i] = None
        tick = round(t * self.hz)
        # The car leaves the episode at this tick: its mode held until the last one.
        self._end_label(ep["label"], tick - 1)
        self.mode[i] = 1
        self._raise(i, tick, "40", event=True)
        self.next_call[i] = max(ep["next_call"], t)

    def _faults_due(self, i: int, t: float) -> None:
        for name in self.per_day:
            nxt = self.fault_next[name]
            if nxt[i] <= t + _EPS:
                if not self._trigger(name, i, t):
                    nxt[i] = t + 30.0  # not now (e.g. mid-fault): try again shortly
                elif name in ("leveling_drift", "door_degradation"):
                    nxt[i] = _INF  # a car degrades once
                else:
                    nxt[i] = t + float(
                        self.rng.exponential(86400.0 / self.per_day_cfg[name].rate_per_day)
                    )
        self.fault_due[i] = min(self.fault_next[name][i] for name in self.per_day)

    def _step(self, i: int, t: float) -> None:
        self.act[i] = True
        if self.fault_due[i] <= t + _EPS:
            self._faults_due(i, t)
        for _ in range(20):  # a tick may chain a few transitions (doors shut → trip starts)
            phase = int(self.phase[i])
            if self.phase_end[i] <= t + _EPS:
                if phase == OPENING:
                    self._doors_open(i, t)
                elif phase == OPEN:
                    self._start_closing(i, t)
                elif phase == CLOSING:
                    self._end_closing(i, t)
                elif phase == MOVING:
                    self._arrive(i, t)
                elif phase == HALTED:
                    self._end_halt(i, t)
                elif phase == BRAKING:
                    self._end_braking(i, t)
            elif phase == IDLE and (name := self.episode_pending[i]) is not None:
                self.episode_pending[i] = None
                if not self._begin_episode(name, i, t, self.per_day_cfg[name]):
                    self.episode_pending[i] = name
                    return
            elif phase == IDLE and self.next_call[i] <= t + _EPS:
                if self.episode[i] is not None:
                    self._episode_step(i, t)
                    if self.episode[i] is not None:
                        return
                else:
                    self._start_call(i, t)
            else:
                return

    # ------------------------------------------------------------------ the clock
    def run(self, sink: Sink, on_second: Callable[[int], None] | None = None) -> None:
        """Simulate the whole duration, handing each message to ``sink`` in emission order.

        ``on_second(s)`` is called after simulated second ``s`` has been emitted (for
        progress bars and pacing); during an idle jump it is called once per jump.
        """
        self._sink = sink
        k = self.hz
        end_sec = math.ceil(self.end_tick / k)
        sec = 0
        never = np.iinfo(np.int64).max
        while sec < end_sec:
            if (
                not (self.phase != IDLE).any()
                and int(self.alarm_off.max()) <= sec * k
                and int(self.code_next_tick.min()) == never
            ):
                wake = min(float(self.next_call.min()), float(self.fault_due.min()))
                wake_sec = min(end_sec, math.floor(wake + _EPS) if wake < _INF else end_sec)
                if wake_sec > sec:
                    self._idle_until(sec, wake_sec)
                    sec = wake_sec
                    if on_second is not None:
                        on_second(sec)
                    continue
            self.act[:] = False
            for j in range(k):
                tick = sec * k + j
                t = tick / k
                if tick >= self.end_tick:
                    break
                due = (self.phase_end <= t + _EPS) | (self.fault_due <= t + _EPS)
                due |= (self.phase == IDLE) & (self.next_call <= t + _EPS)
                for i in np.flatnonzero(due).tolist():
                    self._step(i, t)
                self._motion(t)
                self.buf_pos[j] = self.pos
                self.buf_speed[j] = self.speed
                self.buf_accel[j] = self.accel
                self.buf_door[j] = self.door
                self.buf_load[j] = self.load
                self.buf_pass[j] = self.passengers
                alarm = (self.alarm_on <= tick) & (tick < self.alarm_off)
                self.buf_alarm[j] = alarm
                self.buf_mode[j] = self.mode
                self.buf_dir[j] = self.direction
                self.act |= (self.phase != IDLE) | alarm
            self._emit_second(sec, min(k, self.end_tick - sec * k))
            sec += 1
            if on_second is not None:
                on_second(sec)
        for i in range(self.n):  # messages still held back by an out-of-order fault
            for _, _, payload, msg in self.held[i]:
                self._deliver(i, payload, msg)
            self.held[i] = []

    def _idle_until(self, sec: int, until: int) -> None:
        """Every car is idle over [sec, until): only heartbeats are due."""
        every = self.heartbeat_every
        rows: list[tuple[int, int]] = []
        for i in range(self.n):
            s = max(sec, self.last_msg_sec[i] + every)
            rows.extend((hb, i) for hb in range(s, until, every))
        rows.sort()
        j = 0
        while j < len(rows):
            s = rows[j][0]
            cars = []
            while j < len(rows) and rows[j][0] == s:
                cars.append(rows[j][1])
                j += 1
            self._heartbeats(s, np.array(cars, dtype=np.int64), (s + 1) * self.hz - 1)

    # ------------------------------------------------------------------ messages
    def _columns(
        self,
        cars: Any,
        ticks: Sequence[int],
        pos: Any,
        speed: Any,
        accel: Any,
        door: Any,
        load: Any,
        passengers: Any,
        alarm: Any,
        mode: Any,
        direction: Any,
    ) -> dict[str, Any]:
        """Sample columns (rows = cars) with sensor noise, rounded as a terminal reports."""
        noise = self.sc["noise"]
        m, k = pos.shape
        z = self.rng.standard_normal((5, m, k))
        landing = np.clip(np.rint(pos / self.h), 0, (self.floors[cars] - 1)[:, None])
        off_m = pos - landing * self.h
        moving = speed > 0
        spd = np.where(moving, np.maximum(speed + noise["speed_sigma_mps"] * z[0], 0.0), 0.0)
        return {
            "t_ms": [self._ms(t) for t in ticks],
            "speed_mps": (np.round(spd, 3) + 0.0).tolist(),
            "accel_mps2": (np.round(accel + noise["accel_sigma_mps2"] * z[1], 3) + 0.0).tolist(),
            "position_m": (np.round(pos + noise["position_sigma_m"] * z[2], 3) + 0.0).tolist(),
            "floor": (landing.astype(np.int64) + 1).tolist(),
            "direction": direction.tolist(),
            "load_kg": (
                np.round(np.maximum(load + noise["load_sigma_kg"] * z[3], 0.0), 1) + 0.0
            ).tolist(),
            "door": door.tolist(),
            "door_zone": (np.abs(off_m) <= self.zone_m).tolist(),
            "leveling_offset_mm": (
                np.round(off_m * 1000 + noise["leveling_sigma_mm"] * z[4], 1) + 0.0
            ).tolist(),
            "passengers": passengers.tolist(),
            "alarm": alarm.tolist(),
            "service_mode": mode.tolist(),
        }

    def _emit_second(self, sec: int, k: int) -> None:
        limit = (sec + 1) * self.hz
        active = self.act | (self.code_next_tick < limit)
        cars = np.flatnonzero(active)
        ticks = range(sec * self.hz, sec * self.hz + k)
        if cars.size:
            cols = self._columns(
                cars,
                ticks,
                self.buf_pos[:k, cars].T,
                self.buf_speed[:k, cars].T,
                self.buf_accel[:k, cars].T,
                self.buf_door[:k, cars].T,
                self.buf_load[:k, cars].T,
                self.buf_pass[:k, cars].T,
                self.buf_alarm[:k, cars].T,
                self.buf_mode[:k, cars].T,
                self.buf_dir[:k, cars].T,
            )
            t_list = cols.pop("t_ms")
            names = list(cols)
            lists = [cols[c] for c in names]
            for r, i in enumerate(cars.tolist()):
                samples = {"t_ms": t_list}
                for name, col in zip(names, lists, strict=True):
                    samples[name] = col[r]
                self._send(i, sec, "batch", samples, limit)
        hb = np.flatnonzero(~active & (sec - np.asarray(self.last_msg_sec) >= self.heartbeat_every))
        if hb.size:
            self._heartbeats(sec, hb, sec * self.hz + k - 1)

    def _heartbeats(self, sec: int, cars: Any, tick: int) -> None:
        col = (slice(None), None)
        cols = self._columns(
            cars,
            [tick],
            self.pos[cars][col],
            np.zeros((cars.size, 1)),
            np.zeros((cars.size, 1)),
            self.door[cars][col],
            self.load[cars][col],
            self.passengers[cars][col],
            np.zeros((cars.size, 1), dtype=bool),
            self.mode[cars][col],
            self.direction[cars][col],
        )
        t_list = cols.pop("t_ms")
        for r, i in enumerate(cars.tolist()):
            samples = {"t_ms": t_list}
            for name, values in cols.items():
                samples[name] = values[r]
            self._send(i, sec, "heartbeat", samples, tick + 1)

    def _send(self, i: int, sec: int, kind: str, samples: dict[str, Any], limit: int) -> None:
        """Encode and hand over one message, applying the car's device faults."""
        faults: list[dict[str, Any]] = []
        events: list[dict[str, Any]] = []
        if self.code_next_tick[i] < limit:
            keep = []
            for tick, code, event in self.codes[i]:
                if tick < limit:
                    (events if event else faults).append({"t_ms": self._ms(tick), "code": code})
                else:
                    keep.append((tick, code, event))
            self.codes[i] = keep
            self.code_next_tick[i] = min((c[0] for c in keep), default=np.iinfo(np.int64).max)
        self.last_msg_sec[i] = sec
        dev = self.device[i]
        # A per-message fault's label is stamped with true time, not a skewed clock's.
        true_span = (samples["t_ms"][0], samples["t_ms"][-1])
        if dev is not None and not self._apply_device(i, dev, samples, faults, events):
            return
        seq = self.seq[i]
        self.seq[i] = seq + 1
        msg = {
            "schema": SCHEMA_NAME,
            "elevator_id": self.ids[i],
            "seq": seq,
            "kind": kind,
            "samples": samples,
            "faults": faults,
            "events": events,
        }
        payload = self._encode(msg)
        if seq >= self.special_seq[i]:
            self._special(i, seq, payload, msg, true_span)
        else:
            self._deliver(i, payload, msg)
        held = self.held[i]
        while held and held[0][1] <= seq:
            _held_seq, _, p, m = held.pop(0)
            self._deliver(i, p, m)

    def _deliver(self, i: int, payload: bytes, msg: dict[str, Any] | None) -> None:
        self.messages += 1
        if msg is not None:
            self.samples += len(msg["samples"]["t_ms"])
        self._sink(i, payload, msg)

    def _apply_device(
        self,
        i: int,
        dev: dict[str, Any],
        samples: dict[str, Any],
        faults: list[dict[str, Any]],
        events: list[dict[str, Any]],
    ) -> bool:
        """Alter a message for the car's active device faults; False drops it."""
        t0 = samples["t_ms"][0]
        for name in list(dev):
            if t0 >= dev[name]["to_ms"]:
                del dev[name]
        if not dev:
            self.device[i] = None
            return True
        drop = dev.get("dropout")
        if drop is not None and drop["from_ms"] <= t0:
            return False
        stuck = dev.get("stuck_sensor")
        if stuck is not None and stuck["from_ms"] <= samples["t_ms"][-1]:
            col = list(samples[stuck["column"]])
            for r, t in enumerate(samples["t_ms"]):
                if stuck["from_ms"] <= t < stuck["to_ms"]:
                    if stuck["value"] is None:
                        stuck["value"] = col[r]
                    col[r] = stuck["value"]
            samples[stuck["column"]] = col
        skew = dev.get("clock_skew")
        if skew is not None and skew["from_ms"] <= t0:
            shift = skew["skew_ms"]
            samples["t_ms"] = [t + shift for t in samples["t_ms"]]
            for c in (*faults, *events):
                c["t_ms"] += shift
        return True

    def _special(
        self, i: int, seq: int, payload: bytes, msg: dict[str, Any], t: tuple[int, int]
    ) -> None:
        """This message is the one a per-message device fault picked; ``t``: its first and
        last sample times, true (before any clock skew)."""
        chosen = min(self.next_special, key=lambda k: (self.next_special[k][i], k))
        for name, nxt in self.next_special.items():
            if nxt[i] <= seq:
                nxt[i] = seq + 1 + self._geometric(self.sc.faults[name].probability)
        self.special_seq[i] = min(v[i] for v in self.next_special.values())
        if chosen == "malformed":
            variant = str(self.rng.choice(self.sc.faults["malformed"]["variants"]))
            if variant == "truncated":
                broken = payload[: max(1, len(payload) // 2)]
            elif variant == "wrong_type":
                samples = dict(msg["samples"])
                samples["speed_mps"] = [str(v) for v in samples["speed_mps"]]
                broken = self._encode({**msg, "samples": samples})
            else:
                broken = self._encode({k: v for k, v in msg.items() if k != "samples"})
            self.malformed += 1
            self.labels.append(
                FaultLabel(
                    len(self.labels) + 1,
                    self.ids[i],
                    "malformed",
                    None,
                    t[0],
                    t[-1],
                    {"seq": seq, "variant": variant},
                )
            )
            self._deliver(i, broken, None)
        elif chosen == "duplicate":
            self.labels.append(
                FaultLabel(
                    len(self.labels) + 1, self.ids[i], "duplicate", None, t[0], t[-1], {"seq": seq}
                )
            )
            self._deliver(i, payload, msg)
            self._deliver(i, payload, msg)
        else:
            cfg = self.sc.faults["out_of_order"]
            hold = int(self.rng.integers(cfg["hold_min"], cfg["hold_max"] + 1))
            self.labels.append(
                FaultLabel(
                    len(self.labels) + 1,
                    self.ids[i],
                    "out_of_order",
                    None,
                    t[0],
                    t[-1],
                    {"seq": seq, "emitted_after_seq": seq + hold},
                )
            )
            self.held[i].append((seq + hold, seq + hold, payload, msg))


#: Reopenings no fault planned (``doors.reopen_probability``, drawn at each closing; a call
#: at the landing while the doors close) that make a stop's ``door_reopening`` label: the
#: signals then show the episode the fault injects (``faults.door_reopening.reopens_min``'s
#: default), whatever its cause.
CHANCE_REOPENING_EPISODE: Final = 3

#: Columns as the contract orders them, for outputs.
SAMPLE_COLUMNS: Final = COLUMNS
