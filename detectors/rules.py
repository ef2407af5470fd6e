"""Safety rules: a pure per-elevator step over telemetry messages, plus a clock tick.

:class:`SafetyRules` is the :class:`~detectors.protocol.Detector` the worker runs (through
:mod:`detectors.catalog`); it keeps one :class:`RuleState` per elevator (checkpointed by
:mod:`detectors.state`) and calls, for each validated, de-duplicated message in order::

    state = RuleState.new(elevator_id)
    state, alerts = observe(state, message, limits, thresholds)      # per message
    state, alerts = tick(state, now_ms, limits, thresholds)          # every few seconds

``limits`` is the elevator's :class:`~detectors.thresholds.ElevatorLimits` (or
``ElevatorLimits.unknown()``), ``thresholds`` the shared :class:`~detectors.thresholds.Thresholds`.
``now_ms`` is stream time (e.g. the newest sample time the worker has seen on the partition),
never the wall clock. The state is updated in place and returned.

What is judged, and how
-----------------------
All judgements are on sample times. Instantaneous conditions must hold on
``confirm_samples`` consecutive samples (2: one noisy sample is not a fault) and clear when
they fail as often; durations are measured from the first sample at which a condition held:

- ``overspeed``: speed ≥ overspeed_ratio × rated speed.
- ``overload``: load > overload_ratio × rated load (standing or, worse, moving: evidence says).
- ``overtravel_top`` / ``overtravel_bottom``: position beyond the top / bottom landing by more
  than ``overtravel_margin_m``.
- ``door_open_while_running``: moving with the doors not closed after the doors had been
  closing for departure (the car left with its doors commanded shut); not as the car
  arrives in a door zone at no more than ``door_zone_open_speed_mps`` (levelling).
- ``unintended_movement``: the car left the door zone with the doors not closed after they
  had been opening for passengers at that stop (GB/T 7588.1 5.6.7).
- ``stopped_outside_door_zone``: standing outside the door zone for
  ``stopped_outside_zone_after_s``.
- ``trapped_between_levels``: standing outside the door zone, doors closed, passengers present
  for ``trapped_after_s``; ``trapped_at_level``: the same in the door zone when the doors have not
  opened since the car stopped. The alarm button held ``alarm_stationary_s`` in a standing car
  with doors closed and passengers raises either at once. Cleared when the doors open or the
  passengers are gone.
- ``run_time_limiter``: a run (moving, or the run command held with doors closed) that
  stalls outside the door zone and either lasts longer than the limit or ends (the limiter
  cutting the command) after at least limit − ``run_time_tolerance_s``.
- ``stopping_accuracy``: leveling offset beyond ±10 mm once the stop is confirmed;
  ``leveling_accuracy``: beyond ±20 mm while the doors are open. Both are episodes: raised at the
  first bad stop, cleared after ``accuracy_clear_stops`` good stops.
- ``power_loss``: event 41, or the service mode dropping to 0 (stopped) unexplained by an
  overtravel, unintended movement or run-time limiter, or by a code of
  :data:`OUT_OF_SERVICE_CODES` sent within ``code_explains_stop_s`` of the stop (in the
  same message or an earlier one); cleared by event 40 or the mode's return.
- In inspection (service mode 2) a technician drives the car: a stop outside the door zone
  is theirs, and the run-time limiter does not act on inspection runs (EN 81-20 5.9.2.7),
  so neither ``stopped_outside_door_zone`` nor ``run_time_limiter`` is judged in it.
- ``alarm_button``: the alarm pressed (column or event 90); cleared on release.
- ``repeated_door_reopening``: ``door_reopenings_alert`` reopenings of a closing door in one
  door cycle (before it closes).
- ``sensor_stuck``: a frozen reading — speed (the encoder disagrees with it, see below),
  position (the encoder still while a live speed reading shows the car moving) or load (the
  same bit for bit at ``load_stuck_changes`` changes of the passengers flag in a row:
  overload and the people trapped cannot be seen); cleared when the readings are live.
- ``device_offline`` (from :func:`tick`): silence beyond ``heartbeat_timeout_s``, or beyond
  ``active_silence_timeout_s`` if the car was in use.

Terminal fault and event codes are sufficient but never necessary evidence: a code raises its
alert at once if the signals have not already, and the signals raise every alert without codes.

Input hygiene: samples at or before the latest sample time seen (duplicates, out-of-order
messages, a clock stepping back) are skipped, as the trip segmenter does; gaps in time are
taken as they are (a condition that held before a gap and after it is taken to have held
throughout). A frozen sensor (a stuck reading) is told by the car's other signals: a speed
reading that does not change while the position encoder disagrees with it gives way to the
encoder (``speed_check_s``, ``speed_position_mismatch_mps``); a position that does not
change while a live speed reading shows the car moving judges no overtravel (the terminal's
codes 09 and 10 still raise it); and a leveling reading that did not change while the car
moved judges no stop's accuracy. Contract-validated messages
carry no NaN; a NaN that reaches a rule (a message built without validation) compares
false, so it neither raises nor clears anything.
"""

from __future__ import annotations

import math
from typing import Any, Final

import msgspec

from foundation.contract import DoorState, TelemetryMessage

from .alerts import Alert, make_alert
from .protocol import Consumes
from .thresholds import ElevatorLimits, Thresholds

_CLOSED: Final = int(DoorState.CLOSED)
_OPENING: Final = int(DoorState.OPENING)
_OPEN: Final = int(DoorState.OPEN)
_CLOSING: Final = int(DoorState.CLOSING)
_NONE: Final = -1
#: Terminal codes remembered per elevator for evidence (bounded).
RECENT_CODES: Final = 8

#: Terminal fault codes and the alert each is sufficient evidence of ("11" depends on zone).
CODE_ALERT: Final[dict[str, str]] = {
    "04": "stopped_outside_door_zone",
    "05": "unintended_movement",
    "06": "run_time_limiter",
    "09": "overtravel_top",
    "10": "overtravel_bottom",
}
#: Service mode 2: inspection (maintenance) operation, the car driven by a technician.
INSPECTION_MODE: Final = 2
#: Terminal codes that say why a car is out of service (mode 0), so that its stopping is no
#: power loss: event 42 (out of service), the fault codes with no rule of their own (01
#: safety circuit open, 02 door-close fault, 07 floor position lost, 08 other fault
#: preventing re-run) and those of the alerts that explain mode 0 (05 unintended movement,
#: 06 run-time limiter, 09 / 10 overtravel), all GB/T 24476. A terminal sends the code with
#: the mode change, and a dropout may have hidden the run that led to it.
OUT_OF_SERVICE_CODES: Final = frozenset({"42", "01", "02", "07", "08", "05", "06", "09", "10"})
#: Modes the power-loss rule leaves alone: the car is out of normal service for a reason the
#: terminal already told (out-of-service alerts explain mode 0).
_EXPLAINS_MODE_0: Final = (
    "overtravel_top",
    "overtravel_bottom",
    "unintended_movement",
    "run_time_limiter",
)


class RuleState(msgspec.Struct):
    """One elevator's rule state: the latest sample's facts, when each began, and the
    conditions in progress. A fixed set of scalars plus two dicts keyed by alert type
    (at most one entry per type), so its size is bounded.

    Times are Unix ms; ``-1`` means "none".
    """

    elevator_id: str
    initialized: bool = False
    last_t_ms: int = _NONE
    active_car: bool = False
    moving: bool = False
    standing_since_ms: int = _NONE
    #: When the car was first *seen* in this stop: after a silence, later than
    #: ``standing_since_ms`` (which takes the worst case for anyone inside). A stop's
    #: accuracy is judged on what was seen (:func:`_stopping_accuracy`).
    stop_seen_ms: int = _NONE
    stop_checked: bool = False
    #: The stop's leveling readings over the second half of its confirmation (a few
    #: samples), for their median (:func:`_stopping_accuracy`).
    stop_offsets_mm: list[float] = msgspec.field(default_factory=list)
    stop_level_bad: bool = False
    stop_doors_opened: bool = False
    good_stops: int = 0
    good_level_stops: int = 0
    door: int = _CLOSED
    door_since_ms: int = _NONE
    intent_open: bool = False
    opened_in_stop: bool = False
    departed_open: bool = False
    reopenings: int = 0
    zone: bool = True
    zone_since_ms: int = _NONE
    #: The car entered the door zone moving (or was found in it, moving, at another landing
    #: after a silence) and has not stood since: arriving at a landing, where it may level
    #: with its doors opening (:func:`_door_open_while_running`).
    arriving: bool = False
    passengers: bool = False
    passengers_since_ms: int = _NONE
    alarm: bool = False
    alarm_since_ms: int = _NONE
    direction: int = 0
    mode: int = 1
    running: bool = False
    stalled_since_ms: int = _NONE
    run_since_ms: int = _NONE
    position_m: float = 0.0
    #: The last leveling reading of a car not moving, and when (``leveling_accuracy``
    #: judges a steady reading only: one that moves is a car moving).
    level_prev_mm: float = math.nan
    level_prev_ms: int = _NONE
    #: The floor the terminal last reported (``None`` before the first sample): where a
    #: stopped car is, for the rescuers.
    floor: int | None = None
    load_kg: float = 0.0
    leveling_offset_mm: float = 0.0
    speed_mps: float = 0.0
    accel_mps2: float = 0.0
    #: The speed sensor judged frozen (a stuck sensor): the car's speed is taken from its
    #: position (``position_speed_mps``) until the reading changes. See :func:`_speed`.
    speed_frozen: bool = False
    #: Start of the span over which the reading has not changed: time, position, reading.
    speed_anchor_t_ms: int = _NONE
    speed_anchor_position_m: float = 0.0
    speed_anchor_mps: float = -1.0
    #: Samples seen with that reading since the span began.
    speed_anchor_samples: int = 0
    #: The step between the last two samples judged by :func:`_speed`, ms (-1: none).
    speed_step_ms: int = _NONE
    #: The car's speed as its position showed it over the last span checked, m/s.
    position_speed_mps: float = 0.0
    #: While the speed reading is frozen: the times and positions of up to the last
    #: ``encoder_speed_samples`` samples before the latest, for the encoder's net move.
    frozen_track_ms: list[int] = msgspec.field(default_factory=list)
    frozen_track_m: list[float] = msgspec.field(default_factory=list)
    #: The position encoder judged frozen (a stuck sensor): its reading says nothing of
    #: overtravel until it changes. See :func:`_encoder`.
    position_frozen: bool = False
    #: Start of the span over which the position has not changed while the speed reading
    #: showed the car moving (-1: none), the samples in it, the speed reading at its latest
    #: sample, and whether that reading changed within it (a live sensor's does).
    encoder_anchor_t_ms: int = _NONE
    encoder_anchor_samples: int = 0
    encoder_anchor_mps: float = -1.0
    encoder_speed_varied: bool = False
    #: Last sample at which the leveling reading changed, and last moving sample: a reading
    #: that did not change while the car moved is a frozen sensor's (:func:`_leveling_frozen`).
    leveling_changed_ms: int = _NONE
    moved_ms: int = _NONE
    #: condition name → [consecutive samples holding, consecutive failing, first holding ms]
    runs: dict[str, list[int]] = {}
    #: alert type → [condition since ms, raised at ms, estimated trapped or -1, flag]
    active: dict[str, list[int]] = {}
    recent_codes: list[list[Any]] = []
    #: The load reading at the latest change of the passengers flag, and how many changes
    #: in a row it has been the same at: a load cell that reads the same however many
    #: people get in or out is frozen (:func:`_load_frozen`).
    load_at_change_kg: float = -1.0
    load_same_changes: int = 0
    load_frozen: bool = False

    @classmethod
    def new(cls, elevator_id: str) -> RuleState:
        """The state of an elevator never seen."""
        return cls(elevator_id)


class _Derived:
    """Absolute limits of one (limits, thresholds) pair, computed once."""

    __slots__ = (
        "alarm_trapped_ms",
        "bottom_m",
        "code_explains_ms",
        "confirm",
        "limits",
        "load_kg",
        "outside_ms",
        "position_check_ms",
        "reopenings_alert",
        "run_limit_ms",
        "run_tolerance_ms",
        "silence_min_ms",
        "silent_gap_ms",
        "speed_check_ms",
        "speed_jump_mps",
        "speed_mismatch_mps",
        "stall_min_ms",
        "stop_confirm_ms",
        "thresholds",
        "top_m",
        "trapped_ms",
        "trapped_silent_seen_ms",
        "unseen_move_m",
        "v_over",
        "v_relevel",
        "v_stand",
    )

    def __init__(self, limits: ElevatorLimits, th: Thresholds) -> None:
        self.limits, self.thresholds = limits, th
        self.confirm = th.confirm_samples
        self.v_over = th.overspeed_ratio * limits.rated_speed_mps
        self.load_kg = th.overload_ratio * limits.rated_load_kg
        self.top_m = limits.top_position_m + th.overtravel_margin_m
        self.bottom_m = -th.overtravel_margin_m
        self.v_stand = th.standstill_speed_mps
        self.v_relevel = th.door_zone_open_speed_mps
        self.trapped_ms = th.trapped_after_s * 1000.0
        self.trapped_silent_seen_ms = th.trapped_silent_at_level_seen_s * 1000.0
        self.outside_ms = th.stopped_outside_zone_after_s * 1000.0
        self.run_limit_ms = limits.run_time_limit_s(th) * 1000.0
        self.run_tolerance_ms = th.run_time_tolerance_s * 1000.0
        self.stall_min_ms = th.run_stall_min_s * 1000.0
        self.stop_confirm_ms = th.stop_confirm_s * 1000.0
        #: The shortest silence anything is judged on (an active car's timeout).
        self.silence_min_ms = th.active_silence_timeout_s * 1000.0
        self.speed_check_ms = th.speed_check_s * 1000.0
        self.position_check_ms = th.position_check_s * 1000.0
        self.speed_mismatch_mps = th.speed_position_mismatch_mps
        self.speed_jump_mps = th.encoder_jump_speed_ratio * limits.rated_speed_mps
        self.silent_gap_ms = th.silent_gap_s * 1000.0
        self.unseen_move_m = th.unseen_move_m
        self.reopenings_alert = th.door_reopenings_alert
        self.code_explains_ms = th.code_explains_stop_s * 1000.0
        self.alarm_trapped_ms = th.alarm_trapped_after_s * 1000.0


_derived_cache: dict[tuple[int, int], _Derived] = {}


def _derive(limits: ElevatorLimits, th: Thresholds) -> _Derived:
    # Keyed by identity (hashing two dataclasses per message would cost more than the
    # rules); the entry holds both objects, so their ids cannot be reused while cached.
    key = (id(limits), id(th))
    d = _derived_cache.get(key)
    if d is None or d.limits is not limits or d.thresholds is not th:
        if len(_derived_cache) > 100_000:
            _derived_cache.clear()
        d = _derived_cache[key] = _Derived(limits, th)
    return d


class _Emitter:
    """Collects one call's alerts and keeps ``state.active`` in step."""

    __slots__ = ("d", "out", "st")

    def __init__(self, st: RuleState, d: _Derived) -> None:
        self.st, self.d = st, d
        self.out: list[Alert] = []

    def evidence(self, t_ms: int, **extra: Any) -> dict[str, Any]:
        st, d = self.st, self.d
        lim = d.limits
        ev: dict[str, Any] = {
            "at_ms": t_ms,
            "speed_mps": st.speed_mps,
            "accel_mps2": st.accel_mps2,
            "position_m": st.position_m,
            "floor": st.floor,
            "door": st.door,
            "door_zone": st.zone,
            "leveling_offset_mm": st.leveling_offset_mm,
            "load_kg": st.load_kg,
            "passengers": st.passengers,
            "alarm": st.alarm,
            "service_mode": st.mode,
            "direction": st.direction,
            "standing_since_ms": None if st.standing_since_ms < 0 else st.standing_since_ms,
            "limits": {
                "source": "registry" if lim.from_registry else "defaults (not in registry)",
                "rated_speed_mps": lim.rated_speed_mps,
                "rated_load_kg": lim.rated_load_kg,
                "floors": lim.floors,
                "floor_height_m": lim.floor_height_m,
            },
            "terminal_codes": [list(c) for c in st.recent_codes],
        }
        ev.update(extra)
        return ev

    def raise_(
        self,
        alert_type: str,
        since_ms: int,
        t_ms: int,
        *,
        flag: int = 0,
        gb_code: str | None = None,
        **extra: Any,
    ) -> None:
        st = self.st
        if alert_type in st.active:
            return
        trapped = None
        if alert_type in ("trapped_between_levels", "trapped_at_level"):
            mass = self.d.thresholds.passenger_mass_kg
            trapped = max(1, round(st.load_kg / mass)) if mass > 0 else 1
        since_ms = int(since_ms)
        st.active[alert_type] = [since_ms, int(t_ms), -1 if trapped is None else trapped, flag]
        ev = self.evidence(t_ms, window_ms=[since_ms, int(t_ms)], **extra)
        self.out.append(
            make_alert(
                st.elevator_id,
                alert_type,
                since_ms,
                int(t_ms),
                ev,
                estimated_trapped=trapped,
                gb_code=gb_code,
            )
        )

    def clear(self, alert_type: str, t_ms: int, reason: str) -> None:
        entry = self.st.active.pop(alert_type, None)
        if entry is None:
            return
        since_ms, raised_ms, trapped, flag = entry
        ev = self.evidence(t_ms, reason=reason, raised_at_ms=raised_ms)
        gb = None
        if alert_type == "terminal_fault":
            gb = f"{flag:02d}"
        alert = make_alert(
            self.st.elevator_id,
            alert_type,
            since_ms,
            int(t_ms),
            ev,
            estimated_trapped=None if trapped < 0 else trapped,
            gb_code=gb,
        )
        self.out.append(msgspec.structs.replace(alert, state="cleared"))


def _instant(em: _Emitter, name: str, holds: bool, t: int, confirm: int, **extra: Any) -> None:
    """Advance the confirm/clear counters of an instantaneous condition."""
    st = em.st
    runs = st.runs
    r = runs.get(name)
    if holds:
        if r is None:
            r = runs[name] = [0, 0, t]
        elif r[0] == 0:
            r[2] = t
        r[0] += 1
        r[1] = 0
        if r[0] >= confirm and name not in st.active:
            em.raise_(name, r[2], t, **extra)
    elif r is not None:
        if name in st.active:
            r[0] = 0
            r[1] += 1
            if r[1] >= confirm:
                del runs[name]
                em.clear(name, t, "condition no longer holds")
        else:
            del runs[name]


def _start(st: RuleState, s: Any, i: int, v_stand: float) -> None:
    """First sample ever: take the car as found, every condition beginning now."""
    t = s.t_ms[i]
    st.initialized = True
    st.last_t_ms = t - 1
    moving = s.speed_mps[i] > v_stand
    st.moving = moving
    st.standing_since_ms = st.stop_seen_ms = _NONE if moving else t
    st.stop_checked = moving
    st.door = s.door[i]
    st.door_since_ms = t
    st.intent_open = st.door in (_OPENING, _OPEN)  # found open: opened for passengers
    st.zone = bool(s.door_zone[i])
    st.zone_since_ms = t
    st.passengers = bool(s.passengers[i])
    st.passengers_since_ms = t
    st.mode = s.service_mode[i]
    st.direction = s.direction[i]


def observe(
    state: RuleState, message: TelemetryMessage, limits: ElevatorLimits, thresholds: Thresholds
) -> tuple[RuleState, list[Alert]]:
    """Fold one message into ``state``; the alerts raised and cleared by it, in time order.

    Examples
    --------
    A car stops between floors with two people inside; 30 s later it is a trapping:

    >>> from detectors.testing import car, message
    >>> lim = ElevatorLimits(rated_speed_mps=1.0, rated_load_kg=1000, floors=10)
    >>> st = RuleState.new("32070620200000000001")
    >>> alerts = []
    >>> for sec in range(35):
    ...     rows = [car(t_ms=1_700_000_000_000 + sec * 1000 + k * 100, position_m=4.5,
    ...                 door_zone=False, passengers=True, load_kg=150.0) for k in range(10)]
    ...     st, out = observe(st, message(rows, seq=sec), lim, Thresholds())
    ...     alerts += out
    >>> [(a.alert_type, a.estimated_trapped) for a in alerts]
    [('stopped_outside_door_zone', None), ('trapped_between_levels', 2)]
    """
    st = state
    s = message.samples
    ts = s.t_ms
    n = len(ts)
    d = _derive(limits, thresholds)
    em = _Emitter(st, d)
    if not st.initialized:
        _start(st, s, 0, d.v_stand)
    elif ts[-1] <= st.last_t_ms:
        return st, []  # all old: a duplicate or a late message
    elif ts[-1] - st.last_t_ms > d.silence_min_ms:
        # The silence this message ends, judged at its first new sample: what a tick during
        # the silence would have raised, whenever (or whether) one ran.
        _silence(em, next(t for t in ts if t > st.last_t_ms))
    if "device_offline" in st.active:
        em.clear("device_offline", ts[0], "messages resumed")
    fast = (
        not st.active
        and not st.runs
        and not message.faults
        and not message.events
        and ts[0] > st.last_t_ms
        and ts[0] - st.last_t_ms <= d.silent_gap_ms
        and (st.moving or st.stop_checked)
        and not st.alarm
        and not st.speed_frozen
        and _uniform(st, s, d, n)
    )
    if not fast:
        if message.faults or message.events:
            _out_of_service(st, message)
        _samples(em, s, n, d, thresholds)
    else:
        i = n - 1
        st.last_t_ms = ts[i]
        st.speed_anchor_t_ms = _NONE  # samples unseen by _speed: its next span starts afresh
        st.encoder_anchor_t_ms = _NONE  # and _encoder's
        st.position_m = s.position_m[i]
        st.floor = s.floor[i]
        st.load_kg = s.load_kg[i]
        if st.load_at_change_kg >= 0.0 and s.load_kg.count(st.load_at_change_kg) != n:
            _load_live(st)
        offs = s.leveling_offset_mm
        if offs.count(st.leveling_offset_mm) != n:
            # The last change, not the message's end: a reading that froze mid-message
            # has not changed since (a frozen sensor's, :func:`_leveling_frozen`).
            j = i
            while j > 0 and offs[j] == offs[j - 1]:
                j -= 1
            st.leveling_changed_ms = ts[j]
        if st.moving:
            st.moved_ms = ts[i]
        st.leveling_offset_mm = s.leveling_offset_mm[i]
        st.speed_mps = s.speed_mps[i]
        st.accel_mps2 = s.accel_mps2[i]
    if message.faults or message.events:
        _codes(em, message)
    _timers(em, st.last_t_ms)
    # Doors closing on an empty car end its use: the terminal may fall back to heartbeats
    # (a message held back after it, an out-of-order one, must not read as a silence).
    st.active_car = message.kind == "batch" and (
        st.moving or st.door in (_OPENING, _OPEN) or st.passengers or st.alarm
    )
    return st, em.out


def _uniform(st: RuleState, s: Any, d: _Derived, n: int) -> bool:
    """True when nothing in the message can change a rule's state (the common case): one
    door state, zone, presence, mode and direction throughout, all equal to the last
    sample's, no alarm, no limit approached, the car moving or standing throughout, and
    the position encoder agreeing with the speed reading (else the reading may be frozen:
    a car stopping under a speed sensor stuck at its travel speed, judged only when its
    doors opened, raised a false door-open-while-running)."""
    door = st.door
    if (
        s.door.count(door) != n
        or s.door_zone.count(st.zone) != n
        or s.passengers.count(st.passengers) != n
        or True in s.alarm
        or s.service_mode.count(st.mode) != n
        or s.direction.count(st.direction) != n
    ):
        return False
    pos = s.position_m
    if max(pos) > d.top_m or min(pos) < d.bottom_m or max(s.load_kg) > d.load_kg:
        return False
    sp = s.speed_mps
    ts = s.t_ms
    if ts[-1] > ts[0]:
        encoder_mps = abs(pos[-1] - pos[0]) * 1000.0 / (ts[-1] - ts[0])
        if _disagree(d, encoder_mps, sum(sp) / n):
            return False
    if st.moving:
        return door == _CLOSED and min(sp) > d.v_stand and max(sp) < d.v_over
    if max(sp) > d.v_stand:
        return False
    if st.running != (st.direction != 0 and door == _CLOSED):
        return False
    if door == _OPEN and st.zone:
        lev = d.thresholds.leveling_accuracy_mm
        off = s.leveling_offset_mm
        return max(off) <= lev and min(off) >= -lev
    return True


class _Sample:
    """One sample being judged, and what the car was doing just before it."""

    __slots__ = (
        "dirn",
        "door",
        "door_changed",
        "load_kg",
        "lost",
        "mode",
        "moving",
        "offset_mm",
        "p",
        "prev_dir",
        "prev_door",
        "prev_mode",
        "speed_unconfirmed",
        "t",
        "unseen",
        "v",
        "v_encoder",
        "zone",
    )
    t: int
    v: float
    p: float
    door: int
    zone: bool
    dirn: int
    load_kg: float
    offset_mm: float
    mode: int
    moving: bool
    prev_dir: int
    prev_door: int
    prev_mode: int
    door_changed: bool
    #: Samples were lost just before this one (a step over twice the one before it, or a
    #: silence: a message garbled, held back or dropped).
    lost: bool
    #: The car is "moving" on a speed reading that is the previous sample's, bit for bit,
    #: while the encoder's last step shows it standing: nothing live says it moves (a
    #: sensor frozen at travel speed, not yet judged so because lost samples restarted its
    #: check).
    speed_unconfirmed: bool
    #: A silence (over ``silent_gap_s``) came just before this sample: what the car did,
    #: and the codes its terminal sent, are unknown.
    unseen: bool
    #: Under a frozen speed reading, the encoder's net speed over the last
    #: ``encoder_speed_samples`` steps of this message (0 otherwise, or with fewer steps in
    #: it): one message's sample times share one clock, while across messages a terminal's
    #: corrected times may stand a millisecond apart.
    v_encoder: float


def _samples(em: _Emitter, s: Any, n: int, d: _Derived, th: Thresholds) -> None:
    """The per-sample path: the car's facts, then every rule of :data:`SAMPLE_RULES` in
    order (the order matters: a power loss is judged after the instantaneous conditions
    that would explain it)."""
    st = em.st
    v_stand = d.v_stand
    ts, sp, acc, pos, dirs = s.t_ms, s.speed_mps, s.accel_mps2, s.position_m, s.direction
    loads, doors, zones, pas, alarms = s.load_kg, s.door, s.door_zone, s.passengers, s.alarm
    modes, offs, floors = s.service_mode, s.leveling_offset_mm, s.floor
    c = _Sample()
    k = th.encoder_speed_samples
    for i in range(n):
        t = ts[i]
        if t <= st.last_t_ms:
            continue
        prev_t, prev_p = st.last_t_ms, st.position_m
        c.t, c.p, c.door, c.zone, c.dirn = t, pos[i], doors[i], zones[i], dirs[i]
        step_ms = t - prev_t
        unseen = prev_t >= 0 and step_ms > d.silent_gap_ms  # a silence hid what the car did
        c.unseen = unseen
        c.lost = unseen or (prev_t >= 0 and 0 < 2 * st.speed_step_ms < step_ms)
        reading_unchanged = sp[i] == st.speed_anchor_mps  # before _speed moves the anchor
        c.v = _speed(st, d, t, prev_t, prev_p, sp[i], c.p)
        _encoder(st, d, t, prev_t, prev_p, sp[i], c.p)
        c.load_kg, c.offset_mm, c.mode = loads[i], offs[i], modes[i]
        c.moving = c.v > v_stand
        c.v_encoder = (
            abs(c.p - pos[i - k]) * 1000.0 / (t - ts[i - k])
            if st.speed_frozen and i >= k and t > ts[i - k]
            else 0.0
        )
        c.speed_unconfirmed = (
            c.moving
            and reading_unchanged
            and step_ms > 0
            and abs(c.p - prev_p) * 1000.0 / step_ms <= v_stand
        )
        c.prev_dir = st.direction
        # Across a silence the car may have moved unseen, and a reading that differs from
        # the last one seen says nothing of the sensor being live (one that froze in a
        # 10-min dropout, 266.5 mm off, raised both accuracy alarms at the car's next stop).
        if c.offset_mm != st.leveling_offset_mm and not unseen:
            st.leveling_changed_ms = t
        if c.moving or unseen:
            st.moved_ms = t
        st.last_t_ms = t
        st.speed_mps, st.accel_mps2, st.position_m = c.v, acc[i], c.p
        st.floor = floors[i]
        st.load_kg, st.leveling_offset_mm, st.direction = c.load_kg, c.offset_mm, c.dirn
        _motion(em, c, prev_t, prev_p)
        _doors(c, st)
        _repeated_door_reopening(em, c)
        if not c.moving and (c.door in (_OPENING, _OPEN)):
            st.opened_in_stop = True
        if c.zone != st.zone or _moved_unseen(d, t, prev_t, c.p, prev_p):
            # A car found elsewhere after a silence entered its zone unseen.
            st.zone, st.zone_since_ms = c.zone, t
            st.arriving = c.zone and c.moving
        if pas[i] != st.passengers:
            st.passengers, st.passengers_since_ms = pas[i], t
            if unseen and st.passengers and not c.zone and not c.moving:
                # People first seen in a car standing outside its door zone after a silence
                # were inside, at worst, since it fell silent: nobody boards between
                # landings (the car reached one unseen, its encoder frozen where it last
                # stood, seed 1412; or they were there unseen). A trapping found 21 s before
                # it ended, after a 19-min dropout, waited 30 s from then: unreported.
                st.passengers_since_ms = prev_t
            _load_frozen(st, c.load_kg, d.thresholds.load_stuck_changes)
        elif st.load_at_change_kg >= 0.0 and c.load_kg != st.load_at_change_kg:
            _load_live(st)
        if (st.speed_frozen or st.position_frozen or st.load_frozen) != (
            "sensor_stuck" in st.active
        ):
            _sensor_stuck(em, t)
        _alarm_button(em, c, alarms[i])
        _run_time_limiter(em, c)
        c.prev_mode, st.mode = st.mode, c.mode
        for rule in _INSTANT_RULES:
            rule(em, c)
        _power_loss(em, c)
        if not c.moving:
            _leveling_accuracy(em, c)
            _stopping_accuracy(em, c)
        if st.active:
            _clear_on_state(em, st, t, c.door, c.zone, c.moving, c.mode)


def _speed(
    st: RuleState, d: _Derived, t: int, prev_t: int, prev_p: float, reading: float, p: float
) -> float:
    """The car's speed at sample ``t``: the sensor's ``reading``, unless it is frozen.

    A reading unchanged (bit for bit) for ``speed_check_s`` while the position encoder
    shows a speed more than ``speed_position_mismatch_mps`` away from it is a stuck sensor
    (a healthy one changes from sample to sample while the car moves, and reads 0 at a
    standstill, where the encoder agrees): the speed is then the encoder's until the
    reading changes — the lesser of its speed over the last span of ``speed_check_s``
    (which no encoder noise makes a standing car's), over the last sample step (which
    falls to 0 the moment the car stops, before its doors open) and its net move over the
    last ``encoder_speed_samples`` steps (one step's noise alone reads 0.05–0.06 m/s on a
    standing car). A frozen encoder under a healthy speed sensor blames nothing: that
    reading changes from sample to sample. Spans do not cross a silent gap, nor a step over
    twice the one before it.
    """
    gap = prev_t >= 0 and t - prev_t > d.silent_gap_ms
    # A step over twice the one before is samples lost between them (a message held back
    # or garbled): readings alike across it are a coincidence, so the span starts again.
    step_ms = t - prev_t if prev_t >= 0 else _NONE
    lost = st.speed_step_ms > 0 and 2 * st.speed_step_ms < step_ms
    st.speed_step_ms = step_ms
    if gap or lost or reading != st.speed_anchor_mps or st.speed_anchor_t_ms < 0:
        if reading != st.speed_anchor_mps:
            st.speed_frozen = False
        elif gap:
            st.position_speed_mps = 0.0  # what the car did unseen says nothing of now
        st.speed_anchor_t_ms, st.speed_anchor_position_m = t, p
        st.speed_anchor_mps = reading
        st.speed_anchor_samples = 1
    else:
        # Judged over enough samples: two readings alike across a lost message are a
        # coincidence, not a freeze.
        st.speed_anchor_samples += 1
        if (
            st.speed_anchor_samples >= d.thresholds.speed_check_samples
            and t - st.speed_anchor_t_ms >= d.speed_check_ms
        ):
            moved_m = p - st.speed_anchor_position_m
            position_speed = abs(moved_m) * 1000.0 / (t - st.speed_anchor_t_ms)
            if position_speed <= d.speed_jump_mps:  # faster: the encoder jumping, no judgement
                st.position_speed_mps = position_speed
                if _disagree(d, position_speed, reading):
                    st.speed_frozen = True
            st.speed_anchor_t_ms, st.speed_anchor_position_m = t, p
            st.speed_anchor_samples = 1
    if not st.speed_frozen:
        if st.frozen_track_ms:  # kept only while frozen: the live path does no more
            st.frozen_track_ms.clear()
            st.frozen_track_m.clear()
        return reading
    track_ms, track_m = st.frozen_track_ms, st.frozen_track_m
    if gap or t <= prev_t:
        track_ms.clear()
        track_m.clear()
        return 0.0
    track_ms.append(prev_t)
    track_m.append(prev_p)
    if len(track_ms) > d.thresholds.encoder_speed_samples:
        del track_ms[0], track_m[0]
    step_mps = abs(p - prev_p) * 1000.0 / (t - prev_t)
    net_mps = abs(p - track_m[0]) * 1000.0 / (t - track_ms[0])
    return min(st.position_speed_mps, step_mps, net_mps)


def _disagree(d: _Derived, encoder_mps: float, reading_mps: float) -> bool:
    """Whether the encoder's speed and the speed reading tell different stories: more than
    ``speed_position_mismatch_mps`` apart, or the reading above the standstill speed while
    the encoder shows the car standing (under half of it)."""
    return abs(encoder_mps - reading_mps) > d.speed_mismatch_mps or (
        reading_mps > d.v_stand and encoder_mps <= d.v_stand / 2
    )


def _encoder(
    st: RuleState, d: _Derived, t: int, prev_t: int, prev_p: float, reading: float, p: float
) -> None:
    """Judge the position encoder at sample ``t``: frozen once its reading has stayed the
    same (bit for bit) for ``position_check_s``, over at least ``speed_check_samples`` samples,
    while the speed reading showed the car moving throughout and changed within the span (a
    live sensor's does; two readings both still are a standing car, or two frozen sensors,
    and blame neither). Live again the moment the position changes.

    A frozen position says nothing of overtravel: stuck beyond a terminal landing, it held
    an ``overtravel_top`` open for half an hour, and the next real overtravel, its code 09
    with it, raised nothing. Spans do not cross a silent gap.
    """
    if p != prev_p:
        st.position_frozen = False
        st.encoder_anchor_t_ms = _NONE
        return
    gap = prev_t >= 0 and t - prev_t > d.silent_gap_ms
    if gap or reading <= d.v_stand or st.speed_frozen:
        st.encoder_anchor_t_ms = _NONE  # a standing car's still position blames nothing
        return
    if st.encoder_anchor_t_ms < 0:
        st.encoder_anchor_t_ms, st.encoder_anchor_samples = t, 1
        st.encoder_anchor_mps, st.encoder_speed_varied = reading, False
        return
    st.encoder_anchor_samples += 1
    if reading != st.encoder_anchor_mps:
        st.encoder_speed_varied = True
        st.encoder_anchor_mps = reading
    if (
        st.encoder_speed_varied
        and st.encoder_anchor_samples >= d.thresholds.speed_check_samples
        and t - st.encoder_anchor_t_ms >= d.position_check_ms
    ):
        st.position_frozen = True


def _load_frozen(st: RuleState, load_kg: float, changes: int) -> None:
    """At a change of the passengers flag: the load cell is frozen once its reading has
    been the same (bit for bit) at ``changes`` such changes in a row after the first, and
    in every sample between them (an empty car's live cell reads the same 0 kg at each
    departure of its passengers, and changes while they ride)."""
    if load_kg == st.load_at_change_kg:
        st.load_same_changes += 1
        st.load_frozen = st.load_same_changes >= changes
    else:
        st.load_at_change_kg, st.load_same_changes, st.load_frozen = load_kg, 0, False


def _load_live(st: RuleState) -> None:
    """The load cell read something else between changes of the passengers flag: it is
    live, and the count starts again at the next change."""
    st.load_at_change_kg, st.load_same_changes, st.load_frozen = -1.0, 0, False


def _sensor_stuck(em: _Emitter, t: int) -> None:
    """``sensor_stuck``: the speed reading (:func:`_speed`), the position (:func:`_encoder`)
    or the load reading (:func:`_load_frozen`) is frozen; cleared when every reading is
    live again."""
    st = em.st
    frozen = (
        ("speed_mps", st.speed_frozen),
        ("position_m", st.position_frozen),
        ("load_kg", st.load_frozen),
    )
    if any(f for _, f in frozen):
        sensors = [n for n, f in frozen if f]
        em.raise_("sensor_stuck", t, t, sensors=sensors)
    else:
        em.clear("sensor_stuck", t, "readings live again")


def _leveling_frozen(st: RuleState) -> bool:
    """The leveling reading has not changed since before the car last moved: a frozen
    sensor (a healthy one follows the car, and its noise, every sample), whose reading says
    nothing of this stop's accuracy."""
    return st.leveling_changed_ms < st.moved_ms


def _moved_unseen(d: _Derived, t: int, prev_t: int, p: float, prev_p: float) -> bool:
    """Whether the car moved while its terminal was silent: found after a silent gap more
    than ``unseen_move_m`` from where it was last seen."""
    return prev_t >= 0 and t - prev_t > d.silent_gap_ms and abs(p - prev_p) > d.unseen_move_m


def _motion(em: _Emitter, c: _Sample, prev_t: int, prev_p: float) -> None:
    """The car's motion: a departure closes the stop; a new stop opens one. A car found
    standing elsewhere after a silence moved unseen: its old stop's alerts end."""
    st = em.st
    t = c.t
    silent_gap = prev_t >= 0 and t - prev_t > em.d.silent_gap_ms
    if c.moving:
        if not st.moving:
            _departure(em, st, t, c.door, em.d.thresholds)
        st.moving = True
    elif (
        st.standing_since_ms < 0
        or st.moving
        or c.zone != st.zone
        or _moved_unseen(em.d, t, prev_t, c.p, prev_p)
    ):
        # A new stop; a zone change while standing means the car moved unseen (a gap).
        if not st.moving and st.standing_since_ms >= 0:
            for kind in ("trapped_between_levels", "trapped_at_level", "stopped_outside_door_zone"):
                if kind in st.active:
                    em.clear(kind, t, "the car moved while the terminal was silent")
        if c.zone and st.running:
            st.run_since_ms = t  # arrived at a landing: a held command is a new run
        st.moving = False
        st.standing_since_ms = prev_t if silent_gap else t
        st.stop_seen_ms = t
        st.stop_checked = False
        st.stop_offsets_mm.clear()
        st.arriving = False
        st.opened_in_stop = False
        st.stop_doors_opened = False
        st.stop_level_bad = False
        st.reopenings = 0


def _doors(c: _Sample, st: RuleState) -> None:
    """The doors' state, whether they are opening for passengers, and reopenings."""
    c.prev_door, c.door_changed = st.door, c.door != st.door
    if not c.door_changed:
        return
    st.door, st.door_since_ms = c.door, c.t
    if c.door == _OPENING:
        st.intent_open = True
        if c.prev_door == _CLOSING:
            st.reopenings += 1
    elif c.door in (_CLOSING, _CLOSED):
        st.intent_open = False
        if c.door == _CLOSED:
            st.reopenings = 0  # a closing door that reopens belongs to one door cycle


def _repeated_door_reopening(em: _Emitter, c: _Sample) -> None:
    """``repeated_door_reopening``: ``door_reopenings_alert`` reopenings of a closing door in
    one door cycle, before it closes; cleared when the doors close (or the car departs)."""
    if not c.door_changed:
        return
    st = em.st
    if c.door == _OPENING and c.prev_door == _CLOSING and st.reopenings >= em.d.reopenings_alert:
        em.raise_("repeated_door_reopening", c.t, c.t, reopenings=st.reopenings)
    if c.door == _CLOSED and "repeated_door_reopening" in st.active:
        em.clear("repeated_door_reopening", c.t, "doors closed")


def _alarm_button(em: _Emitter, c: _Sample, alarm: bool) -> None:
    """``alarm_button``: the alarm pressed; cleared on release."""
    st = em.st
    if alarm == st.alarm:
        return
    st.alarm = alarm
    if alarm:
        st.alarm_since_ms = c.t
        em.raise_("alarm_button", c.t, c.t)
    else:
        em.clear("alarm_button", c.t, "alarm button released")


def _run_time_limiter(em: _Emitter, c: _Sample) -> None:
    """``run_time_limiter`` (GB/T 7588.1-2020 5.9.2.7; thresholds ``run_time_limit_s``,
    ``run_time_margin_s``, ``run_time_min_s``, ``run_time_tolerance_s``,
    ``run_stall_min_s``): a run — motion, or the run command held with doors closed — that
    stalls outside the door zone and ends (the limiter cutting the command) after about the
    limit. A run held beyond the limit is judged by :func:`_timers`."""
    st, d, t = em.st, em.d, c.t
    running = c.moving or (c.dirn != 0 and c.door == _CLOSED)
    if running:
        if not st.running or (c.dirn != 0 and c.prev_dir != 0 and c.dirn != c.prev_dir):
            st.running, st.run_since_ms = True, t  # a new run command
            if "run_time_limiter" in st.active and c.mode != 0:
                em.clear("run_time_limiter", t, "limiter reset: a new run began")
    elif st.running:
        # The command dropped after a stall seen on the previous sample (not across a
        # gap from a moving car): the limiter cut it if the run lasted about the limit.
        if (
            not c.zone
            and c.mode != INSPECTION_MODE
            and not _overtravelled(st)
            and st.stalled_since_ms >= 0
            and t - st.stalled_since_ms >= d.stall_min_ms
            and t - st.run_since_ms >= d.run_limit_ms - d.run_tolerance_ms
        ):
            em.raise_(
                "run_time_limiter",
                t,
                t,
                run_since_ms=st.run_since_ms,
                run_s=(t - st.run_since_ms) / 1000.0,
                limit_s=d.run_limit_ms / 1000.0,
                how="run command dropped while stalled outside the door zone",
            )
        st.running, st.run_since_ms = False, _NONE
    if running and not c.moving:
        if st.stalled_since_ms < 0:
            st.stalled_since_ms = t
    else:
        st.stalled_since_ms = _NONE


def _overtravelled(st: RuleState) -> bool:
    """The car is beyond a terminal landing (an overtravel alert open): the final limit
    switch stopped it, not the run-time limiter, however long the run (a long run that
    overshot the bottom landing raised both; seeds 1401, 1411)."""
    return "overtravel_top" in st.active or "overtravel_bottom" in st.active


def _overspeed(em: _Emitter, c: _Sample) -> None:
    """``overspeed``: speed ≥ ``overspeed_ratio`` × rated speed. Seen over the limit and
    then samples lost, it is confirmed: nothing seen refutes it (a 0.7-s overspeed showed
    one sample over the limit, 1.191 m/s rising at 0.48 m/s², before its peak went down
    with a garbled message), and no sensor noise reaches the limit's margin.

    Under a frozen speed reading the car's speed is the encoder's, taken cautiously for the
    other rules (:func:`_speed`: the least of three estimates, one over the last 0.5-s
    span, which lags); overspeed also reads the encoder's net speed over the last
    ``encoder_speed_samples`` steps within the message (``_Sample.v_encoder``), unless that
    is a jump (``encoder_jump_speed_ratio``). A 0.9-s overspeed to 1.31 × rated under a
    reading frozen at 0 went unreported (seed 1412). Across messages a terminal's corrected
    sample times may stand 1 ms apart: an encoder speed taken across them raised false
    overspeeds. The position's noise (4 mm at four times the default) moves a 0.3-s net
    speed by ≈ 0.02 m/s, far inside the limit's margin (0.15 × rated)."""
    st, d = em.st, em.d
    holds = c.v >= d.v_over or d.v_over <= c.v_encoder <= d.speed_jump_mps
    run = st.runs.get("overspeed")
    if not holds and c.lost and run is not None and run[0] and "overspeed" not in st.active:
        em.raise_("overspeed", run[2], c.t, limit_mps=d.v_over, how="samples lost after it")
    if holds or run is not None:
        _instant(em, "overspeed", holds, c.t, d.confirm, limit_mps=d.v_over)


def _overload(em: _Emitter, c: _Sample) -> None:
    """``overload``: load > ``overload_ratio`` × rated load, standing or moving."""
    holds = c.load_kg > em.d.load_kg
    if holds or "overload" in em.st.runs:
        limit_kg = em.d.load_kg
        _instant(em, "overload", holds, c.t, em.d.confirm, limit_kg=limit_kg, car_moving=c.moving)


def _overtravel_top(em: _Emitter, c: _Sample) -> None:
    """``overtravel_top``: beyond the top landing by more than ``overtravel_margin_m``, by a
    live position (:func:`_encoder`)."""
    holds = c.p > em.d.top_m and not em.st.position_frozen
    if holds or "overtravel_top" in em.st.runs:
        _instant(em, "overtravel_top", holds, c.t, em.d.confirm, limit_m=em.d.top_m)


def _overtravel_bottom(em: _Emitter, c: _Sample) -> None:
    """``overtravel_bottom``: below the bottom landing by more than ``overtravel_margin_m``,
    by a live position (:func:`_encoder`)."""
    holds = c.p < em.d.bottom_m and not em.st.position_frozen
    if holds or "overtravel_bottom" in em.st.runs:
        _instant(em, "overtravel_bottom", holds, c.t, em.d.confirm, limit_m=em.d.bottom_m)


def _door_open_while_running(em: _Emitter, c: _Sample) -> None:
    """``door_open_while_running``: moving with the doors not closed after they had been
    closing for departure — except as the car arrives at a landing, in its door zone at
    no more than ``door_zone_open_speed_mps`` (levelling with the doors opening is allowed
    there). "Moving" on a speed reading unchanged from the sample before while the encoder
    shows the car standing is not enough to raise it: a sensor frozen at travel speed,
    whose check a message held back at arrival had restarted, raised it as the doors
    opened (no-fault seeds 228, 243, 250)."""
    st = em.st
    # Once raised, the reading alone keeps it (an episode must not flicker on and off).
    unconfirmed = c.speed_unconfirmed and "door_open_while_running" not in st.active
    holds = (
        c.moving
        and not unconfirmed
        and c.door != _CLOSED
        and not st.departed_open
        and not (c.zone and st.arriving and c.v <= em.d.v_relevel)
    )
    if holds or "door_open_while_running" in st.runs:
        _instant(em, "door_open_while_running", holds, c.t, em.d.confirm)


def _unintended_movement(em: _Emitter, c: _Sample) -> None:
    """``unintended_movement`` (GB/T 7588.1 5.6.7): doors open outside the unlocking zone,
    after a departure with the doors opening for passengers, or found standing so (the
    movement fell in a gap)."""
    st = em.st
    holds = c.door != _CLOSED and not c.zone and (st.departed_open or not c.moving)
    if holds or "unintended_movement" in st.runs:
        _instant(em, "unintended_movement", holds, c.t, em.d.confirm)


#: The instantaneous conditions, each confirmed on ``confirm_samples`` samples.
_INSTANT_RULES: Final = (
    _overspeed,
    _overload,
    _overtravel_top,
    _overtravel_bottom,
    _door_open_while_running,
    _unintended_movement,
)


#: ``mode_stopped`` run's second field: the stop began unseen, its cause not known yet; the
#: power restored (event 40) has told it (:func:`_power_loss`).
_CAUSE_UNSEEN: Final = 1
_POWER_RESTORED: Final = 2


def _out_of_service(st: RuleState, message: TelemetryMessage) -> None:
    """Note a code that explains the car stopping (:data:`OUT_OF_SERVICE_CODES`) before
    the message's samples are judged: terminals send the code with the mode change."""
    for code_event in (*message.faults, *message.events):
        if code_event.code in OUT_OF_SERVICE_CODES:
            st.runs["out_of_service"] = [0, 0, code_event.t_ms]
        elif code_event.code == "40" and (stopped := st.runs.get("mode_stopped")) and stopped[1]:
            stopped[1] = _POWER_RESTORED  # the unseen stop's cause: see _power_loss


def _power_loss(em: _Emitter, c: _Sample) -> None:
    """``power_loss`` from service mode 0 (stopped) unless another alert explains it;
    judged after the instantaneous conditions, on the ``confirm_samples``-th sample, so
    that an overtravel or unintended movement seen in the same samples explains it.

    A car found after a silence already out of service outside its door zone, with no code
    saying why, stopped unseen: a power loss (event 41) or a run-time limiter (06) whose
    code was lost with the silence look the same. Its cause waits (``mode_stopped`` run's
    second field 1; the car is reported meanwhile as stopped outside the door zone, and
    trapped if people are inside): the power restored (event 40) says power loss; back in
    service without it, the limiter, reset (GB/T 7588.1-2020 5.9.2.7 takes a stalled car
    out of service). Raised at once as a power loss, such cars were 6 misses and false
    alarms on seeds 1406–1411."""
    st, t = em.st, c.t
    active, runs = st.active, st.runs
    if c.mode == 0:
        power = active.get("power_loss")
        if power is not None:
            power[3] = 1  # mode 0 seen: the alert clears on its return
            return
        r = runs.get("mode_stopped")
        if r is None:
            r = runs["mode_stopped"] = [0, _CAUSE_UNSEEN if c.unseen and not c.zone else 0, t]
        r[0] += 1
        code = runs.get("out_of_service")
        if (
            r[0] == em.d.confirm
            and not r[1]
            and not any(k in active for k in _EXPLAINS_MODE_0)
            and not (code is not None and abs(code[2] - r[2]) <= em.d.code_explains_ms)
        ):
            em.raise_(
                "power_loss",
                r[2],
                t,
                flag=1,
                how="service mode 0 (stopped) without another explanation",
            )
    elif c.prev_mode == 0:
        r = runs.pop("mode_stopped", None)
        runs.pop("out_of_service", None)
        power = active.get("power_loss")
        if power is not None and power[3]:
            em.clear("power_loss", t, "service mode back from 0")
        elif (
            r is not None
            and r[1]
            and r[0] >= em.d.confirm
            and not any(k in active for k in _EXPLAINS_MODE_0)
        ):
            if r[1] == _POWER_RESTORED:  # cleared by event 40 itself (_codes)
                em.raise_("power_loss", r[2], t, source="terminal event 40")
            else:
                em.raise_(
                    "run_time_limiter",
                    r[2],
                    t,
                    how="found out of service outside the door zone after a silence; back"
                    " in service without the power restored (event 40)",
                )
    elif (code := runs.get("out_of_service")) is not None and t - code[2] > em.d.code_explains_ms:
        runs.pop("out_of_service")  # a code that led to no stop


def _leveling_accuracy(em: _Emitter, c: _Sample) -> None:
    """``leveling_accuracy``: beyond ±``leveling_accuracy_mm`` while the doors are open at
    a landing, on a car at rest: stood ``stop_confirm_s`` (seen so, as for the stopping
    accuracy) and its leveling reading steady, moving no faster than the standstill speed
    since the last one. A car still settling is not at rest; nor is one leaving with its
    doors open under a frozen speed reading, the speed estimate a moment behind while the
    leveling reading runs off at 0.1–0.3 m/s (raised beside ``door_open_while_running``,
    seed 1410). An episode, cleared after ``accuracy_clear_stops`` good stops (at
    departure)."""
    st = em.st
    prev_mm, prev_ms = st.level_prev_mm, st.level_prev_ms
    if c.offset_mm == c.offset_mm:  # NaN: no reading
        st.level_prev_mm, st.level_prev_ms = c.offset_mm, c.t
    if not (c.zone and c.door == _OPEN):
        return
    st.stop_doors_opened = True
    if _leveling_frozen(st) or c.t - max(st.standing_since_ms, st.stop_seen_ms) < (
        em.d.stop_confirm_ms
    ):
        return
    if prev_ms >= 0 and abs(c.offset_mm - prev_mm) > em.d.v_stand * (c.t - prev_ms):
        return  # mm against m/s × ms: both in mm
    limit_mm = em.d.thresholds.leveling_accuracy_mm
    holds = abs(c.offset_mm) > limit_mm
    runs = st.runs
    if holds or "leveling_accuracy" in runs:
        r = runs.get("leveling_accuracy")
        if holds:
            if r is None:
                r = runs["leveling_accuracy"] = [0, 0, c.t]
            r[0] += 1
            if r[0] >= em.d.confirm:
                st.stop_level_bad = True
                em.raise_("leveling_accuracy", r[2], c.t, limit_mm=limit_mm)
        elif r is not None:
            r[0] = 0


def _stopping_accuracy(em: _Emitter, c: _Sample) -> None:
    """``stopping_accuracy``: the median of the stop's leveling readings over the second
    half of its confirmation (``stop_confirm_s``), in normal service, beyond
    ±``stopping_accuracy_mm`` (``evidence.stop_offset_mm``); cleared after
    ``accuracy_clear_stops`` good stops. Also, at that moment, a car trapped between
    levels that re-levelled with the doors still shut hands its trapping over to
    ``trapped_at_level``."""
    st, d, t = em.st, em.d, c.t
    if st.stop_checked:
        return
    # Confirmed on samples seen: a car found standing after a silence, somewhere else, may
    # have been seen only as it moves off (a frozen speed sensor reads 0 then).
    stood_ms = t - max(st.standing_since_ms, st.stop_seen_ms)
    # The stop's offset is the median of its readings over the second half of the
    # confirmation, not the last one alone: a car stopped 9 mm low read -10.1 mm in that
    # one sample (the sensor's noise) and raised an alarm. The first half is the car still
    # creeping in below the standstill speed (-12.7, -10.3 mm there). A frozen reading is
    # none: a sensor stuck at -403 mm through the ride that came back 0.1 s before the stop
    # was judged left its frozen readings in the median (no-fault seed 237).
    if (
        c.offset_mm == c.offset_mm  # NaN: no reading
        and 2 * stood_ms >= d.stop_confirm_ms
        and not _leveling_frozen(st)
    ):
        st.stop_offsets_mm.append(c.offset_mm)
    if stood_ms < d.stop_confirm_ms:
        return
    st.stop_checked = True
    readings = sorted(st.stop_offsets_mm)
    st.stop_offsets_mm.clear()
    off = readings[(len(readings) - 1) // 2] if readings else c.offset_mm
    active = st.active
    if c.zone and c.door == _CLOSED and st.passengers and "trapped_between_levels" in active:
        # Re-levelled with the doors still shut: the same people, now at a level.
        em.clear("trapped_between_levels", t, "car re-levelled; doors still closed")
        em.raise_("trapped_at_level", st.standing_since_ms, t, how="handover")
    at_rest = abs(st.accel_mps2) <= d.thresholds.at_rest_accel_mps2  # not already leaving
    if c.zone and c.mode == 1 and at_rest and not _leveling_frozen(st):  # a normal stop
        limit_mm = d.thresholds.stopping_accuracy_mm
        if abs(off) > limit_mm:
            st.good_stops = 0
            em.raise_(
                "stopping_accuracy", st.standing_since_ms, t, limit_mm=limit_mm, stop_offset_mm=off
            )
        elif off == off:  # NaN is neither good nor bad
            st.good_stops += 1
            if "stopping_accuracy" in active and st.good_stops >= d.thresholds.accuracy_clear_stops:
                em.clear("stopping_accuracy", t, "stops back within tolerance")


def _departure(em: _Emitter, st: RuleState, t: int, door: int, th: Thresholds) -> None:
    """The car starts moving: close the stop's bookkeeping."""
    st.departed_open = door != _CLOSED and st.intent_open
    st.standing_since_ms = _NONE
    st.stop_checked = False
    if st.stop_doors_opened:
        runs = st.runs
        runs.pop("leveling_accuracy", None)
        if st.stop_level_bad:
            st.good_level_stops = 0
        else:
            st.good_level_stops += 1
            if "leveling_accuracy" in st.active and st.good_level_stops >= th.accuracy_clear_stops:
                em.clear("leveling_accuracy", t, "stops back within tolerance")
    if "repeated_door_reopening" in st.active:
        em.clear("repeated_door_reopening", t, "car departed")
    if "terminal_fault" in st.active and door == _CLOSED and st.mode == 1:
        em.clear("terminal_fault", t, "car back in normal service")


def _clear_on_state(
    em: _Emitter, st: RuleState, t: int, door: int, zone: bool, moving: bool, mode: int
) -> None:
    active = st.active
    doors_open = door in (_OPENING, _OPEN)
    for kind in ("trapped_between_levels", "trapped_at_level"):
        if kind in active:
            if doors_open:
                em.clear(kind, t, "doors opened")
            elif not st.passengers:
                em.clear(kind, t, "no passengers sensed")
    if "stopped_outside_door_zone" in active and zone:
        em.clear("stopped_outside_door_zone", t, "car back in the door zone")
    if "run_time_limiter" in active and zone and not moving and mode != 0:
        em.clear("run_time_limiter", t, "car at a landing and back in service")
    for kind in ("overtravel_top", "overtravel_bottom"):
        # Raised by its code (09 / 10) alone, the position never showing it (a frozen
        # encoder): no sample can clear it, the car's return to service does.
        if kind in active and kind not in st.runs and zone and not moving and mode != 0:
            em.clear(kind, t, "car at a landing and back in service")


def _codes(em: _Emitter, message: TelemetryMessage) -> None:
    """Terminal codes: remembered for evidence; each is sufficient evidence of its alert."""
    st = em.st
    t_last = st.last_t_ms
    for code_event in message.faults:
        code, t = code_event.code, code_event.t_ms
        st.recent_codes = [*st.recent_codes[-(RECENT_CODES - 1) :], [t, code]]
        kind = CODE_ALERT.get(code)
        if code == "11":
            kind = "trapped_at_level" if st.zone else "trapped_between_levels"
            if "trapped_at_level" in st.active or "trapped_between_levels" in st.active:
                continue
        if kind is not None:
            em.raise_(kind, t, max(t, t_last), source=f"terminal fault code {code}")
            continue
        current = st.active.get("terminal_fault")
        if current is not None and current[3] != int(code) and current[0] < t:
            # Another code is another fault (a door-open fault 03 at a trapping, then 08
            # keeping the car out of service): the new one is reported, the old one ends.
            em.clear("terminal_fault", max(t, t_last), f"terminal fault code {code} followed")
        if "terminal_fault" not in st.active:
            em.raise_(
                "terminal_fault",
                t,
                max(t, t_last),
                flag=int(code),
                gb_code=code,
                source=f"terminal fault code {code}",
            )
    for code_event in message.events:
        code, t = code_event.code, code_event.t_ms
        st.recent_codes = [*st.recent_codes[-(RECENT_CODES - 1) :], [t, code]]
        if code == "41":
            em.raise_("power_loss", t, max(t, t_last), source="terminal event 41")
            if st.mode == 0 and "power_loss" in st.active:
                st.active["power_loss"][3] = 1
        elif code == "40":
            st.runs.pop("out_of_service", None)
            stopped = st.runs.get("mode_stopped")
            if stopped is not None and stopped[1] == _POWER_RESTORED:
                # Still out of service: the car found so after a silence, its cause unknown
                # until now, had lost power (:func:`_power_loss`).
                stopped[1] = 0
                em.raise_("power_loss", stopped[2], max(t, t_last), source="terminal event 40")
            em.clear("power_loss", max(t, t_last), "terminal event 40 (back to normal)")
            em.clear("terminal_fault", max(t, t_last), "terminal event 40 (back to normal)")
        elif code == "90" and st.alarm_since_ms < t and "alarm_button" not in st.active:
            # The press fell between samples: an alert with no release to wait for.
            em.raise_("alarm_button", t, max(t, t_last), source="terminal event 90")
            em.clear("alarm_button", max(t, t_last), "press seen only as event 90")


def _timers(em: _Emitter, now: int, silent_from_ms: int | None = None) -> None:
    """Conditions judged by how long they have held, at stream time ``now``.

    While messages arrive (``silent_from_ms`` None), ``now`` is the latest sample and an
    alert is stamped with it. In a silence (``silent_from_ms``: when the silence became long
    enough to extrapolate the car's last state), each condition is stamped with the moment
    it fell due, not with the moment someone looked: the same silence gives the same alert
    whether a tick finds it while it lasts or the next message when it ends.
    """
    st, d = em.st, em.d
    if st.standing_since_ms < 0 or st.door != _CLOSED:
        return
    extrapolated = silent_from_ms is not None
    extra: dict[str, Any] = {"extrapolated_from_ms": st.last_t_ms} if extrapolated else {}

    def due_at(due_ms: float) -> int | None:
        """The stamp of a condition due at ``due_ms``, or None if not due by ``now``."""
        if silent_from_ms is None:
            return now if now >= due_ms else None
        stamp = max(math.ceil(due_ms), silent_from_ms)
        return stamp if now >= stamp else None

    zone = st.zone
    inspection = st.mode == INSPECTION_MODE
    base = max(st.standing_since_ms, st.door_since_ms, st.zone_since_ms)
    if not zone and not inspection and (t := due_at(base + d.outside_ms)) is not None:
        em.raise_("stopped_outside_door_zone", base, t, **extra)
    if st.passengers:
        since = max(base, st.passengers_since_ms)
        due_ms = since + d.trapped_ms
        if st.standing_since_ms < st.stop_seen_ms and since <= st.stop_seen_ms:
            # Found standing with people inside after a silence: what was seen then may have
            # held all through it (the worst case for anyone inside; a trapping that began
            # unseen and ended 10 s after the silence went unreported). At a level, once
            # seen shut as long as a door that did not open (a car that just arrived opens
            # them): found 14 min into a dropout, two trappings were seen 16 s and 23 s.
            since = st.standing_since_ms
            due_ms = since + d.trapped_ms
            if zone:
                due_ms = max(due_ms, st.stop_seen_ms + d.trapped_silent_seen_ms)
        kind = "trapped_at_level" if zone else "trapped_between_levels"
        if "trapped_at_level" not in st.active and "trapped_between_levels" not in st.active:
            alarm_t = (
                due_at(max(since, st.alarm_since_ms) + d.alarm_trapped_ms) if st.alarm else None
            )
            seen = not (extrapolated and zone and st.last_t_ms - since < d.trapped_silent_seen_ms)
            timer_t = due_at(due_ms) if seen and (zone is False or not st.opened_in_stop) else None
            if alarm_t is not None:
                em.raise_(
                    kind, since, alarm_t, how="alarm button pressed in a standing car", **extra
                )
            elif timer_t is not None:
                em.raise_(kind, since, timer_t, how="timer", **extra)
    if (
        st.running
        and not inspection
        and not st.moving
        and not zone
        and "run_time_limiter" not in st.active
        and not _overtravelled(st)
        # Past the limit by more than the tolerance: a limiter about to trip (our estimate of
        # its limit is the tolerance off) is left to trip, and raises when it does.
        and (t := due_at(math.floor(st.run_since_ms + d.run_limit_ms + d.run_tolerance_ms) + 1))
        is not None
    ):
        em.raise_(
            "run_time_limiter",
            st.run_since_ms + int(d.run_limit_ms),
            t,
            run_since_ms=st.run_since_ms,
            limit_s=d.run_limit_ms / 1000.0,
            how="run command held beyond the limit with the car stalled",
            **extra,
        )


def _silence(em: _Emitter, now_ms: int) -> None:
    """A terminal silent since its last sample, judged at stream time ``now_ms``: device
    offline, and — once the car has been silent long enough — the timers of a car last seen
    standing (safety first: taken to stand as it was seen, with whoever was inside).

    Every alert is stamped with the stream time at which it fell due, so it does not depend
    on when this runs: a tick during the silence and the message that ends it (see
    :func:`observe`) raise the same alerts, with the same contents.
    """
    st, th = em.st, em.d.thresholds
    silence_ms = now_ms - st.last_t_ms
    timeout_s = th.active_silence_timeout_s if st.active_car else th.heartbeat_timeout_s
    if silence_ms > timeout_s * 1000.0:
        due_ms = st.last_t_ms + math.floor(timeout_s * 1000.0) + 1
        em.raise_(
            "device_offline",
            st.last_t_ms,
            due_ms,
            silence_s=(due_ms - st.last_t_ms) / 1000.0,
            timeout_s=timeout_s,
            car_was_in_use=st.active_car,
        )
    extrapolate_from_ms = st.last_t_ms + math.ceil(th.active_silence_timeout_s * 1000.0)
    if now_ms >= extrapolate_from_ms:
        _timers(em, now_ms, extrapolate_from_ms)


def tick(
    state: RuleState, now_ms: int, limits: ElevatorLimits, thresholds: Thresholds
) -> tuple[RuleState, list[Alert]]:
    """Time-based conditions at stream time ``now_ms`` with no new message: device offline,
    and — once the device is offline — the timers of a car last seen trapped
    (:func:`_silence`).

    Examples
    --------
    >>> from detectors.testing import car, message
    >>> lim = ElevatorLimits(rated_speed_mps=1.0, rated_load_kg=1000, floors=10)
    >>> st, _ = observe(RuleState.new("32070620200000000001"),
    ...                 message([car(t_ms=1_700_000_000_000)], kind="heartbeat"), lim, Thresholds())
    >>> st, out = tick(st, 1_700_000_070_000, lim, Thresholds())
    >>> [(a.alert_type, a.raised_at_ms) for a in out]
    [('device_offline', 1700000065001)]
    """
    st = state
    if not st.initialized or st.last_t_ms < 0:
        return st, []
    if now_ms - st.last_t_ms <= thresholds.active_silence_timeout_s * 1000.0:
        return st, []  # the common case, before anything is derived
    em = _Emitter(st, _derive(limits, thresholds))
    _silence(em, now_ms)
    return st, em.out


def alert_types() -> list[str]:
    """Every alert type the rules can raise."""
    return [
        "trapped_between_levels",
        "trapped_at_level",
        "overspeed",
        "overload",
        "overtravel_top",
        "overtravel_bottom",
        "door_open_while_running",
        "unintended_movement",
        "stopped_outside_door_zone",
        "run_time_limiter",
        "stopping_accuracy",
        "leveling_accuracy",
        "power_loss",
        "alarm_button",
        "device_offline",
        "repeated_door_reopening",
        "terminal_fault",
        "sensor_stuck",
    ]


def rebased(state: RuleState) -> RuleState:
    """The state to go on with once the car's terminal time was corrected back by more
    than ``clock_rebase_s`` (:func:`detectors.clock.judge_clock`): every time in ``state``
    is in a frame the car's samples will not reach again (each would be "old", and the car
    unseen), so its facts and timers start again; its open alerts stay open, each ended by
    its own rule."""
    fresh = RuleState.new(state.elevator_id)
    fresh.active = state.active
    return fresh


class SafetyRules:
    """Every safety rule, per telemetry message: the :class:`~detectors.protocol.Detector`
    over :func:`observe` and :func:`tick`.

    Examples
    --------
    >>> from detectors.testing import car, message
    >>> rules = SafetyRules(Thresholds())
    >>> lim = ElevatorLimits(rated_speed_mps=1.0, rated_load_kg=1000, floors=10)
    >>> st = rules.new("32070620200000000001")
    >>> out = rules.observe(st, message([car(t_ms=1_700_000_000_000 + k * 100, speed_mps=1.3)
    ...                                  for k in range(3)]), lim)
    >>> [a.alert_type for a in out]
    ['overspeed']
    """

    name = "safety_rules"
    consumes: Consumes = "message"
    state_type = RuleState

    def __init__(self, thresholds: Thresholds) -> None:
        self.thresholds = thresholds

    def new(self, elevator_id: str) -> RuleState:
        return RuleState.new(elevator_id)

    def observe(
        self, state: RuleState, item: TelemetryMessage, limits: ElevatorLimits
    ) -> list[Alert]:
        return observe(state, item, limits, self.thresholds)[1]

    def tick(self, state: RuleState, now_ms: int, limits: ElevatorLimits) -> list[Alert]:
        return tick(state, now_ms, limits, self.thresholds)[1]
