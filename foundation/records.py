"""The stream shapes: what the worker derives from raw telemetry and everything downstream reads.

The wire contract (what terminals send) is :mod:`foundation.contract`; these are the records
the pipeline makes of it — window features, trips — defined once here, at the bottom of the
import graph, so that ``streams`` (which makes them) and ``detectors`` (which judges them)
share them without importing each other.
"""

from __future__ import annotations

import msgspec


class WindowFeature(msgspec.Struct, frozen=True):
    """One closed tumbling window of one elevator: a row of ``window_feature``.

    Field names equal the table's columns, except ``bucket_start_ms`` (the sink turns epoch
    ms into ``bucket_start``). Features with no data are None (NULL).

    Attributes
    ----------
    bucket_start_ms
        Window start, Unix epoch ms; the window is ``[start, start + width_s)``.
    elevator_id
        Registration code of the elevator.
    width_s
        Window width, s: 1 or 60.
    samples
        Samples folded into the window (late samples excluded), ≥ 1.
    speed_max_mps
        Highest speed, m/s.
    speed_mean_mps
        Mean speed over the samples (not time weighted), m/s.
    accel_peak_mps2
        Largest ``|acceleration|``, m/s².
    jerk_peak_mps3
        Largest ``|Δa / Δt|`` between consecutive in-order samples at most
        :data:`MAX_SAMPLE_GAP_MS` apart, credited to the later sample's window, m/s³;
        None if no such pair.
    load_max_kg
        Highest load, kg.
    moving_s
        Time with speed above :data:`MOVING_SPEED_MPS`, s (sample time weights).
    occupied_s
        Time with passengers present, s (sample time weights).
    door_open_count
        Door openings begun: transitions into OPENING, or into OPEN from CLOSED or CLOSING
        (an opening that fell between two samples).
    door_close_count
        Door closings begun: transitions into CLOSING, or into CLOSED from OPENING or OPEN.
    door_opening_s
        Mean duration of the OPENING phases that completed (OPENING → OPEN) in the window,
        from the first OPENING sample to the first OPEN sample, s; None if none completed or
        if a phase edge was not seen within :data:`MAX_SAMPLE_GAP_MS`.
    door_closing_s
        The same for CLOSING phases that completed (CLOSING → CLOSED), s.
    door_open_s
        Time with the doors in state OPEN, s (sample time weights).
    leveling_offset_mm
        Leveling offset of the window's last stopped sample in a landing (door zone, speed
        at most :data:`MOVING_SPEED_MPS`, doors OPENING or OPEN), mm; None if no stop.
    online_score
        The online-learning score of a one-minute window (``detectors.online``: in [0, 1],
        0.5 the alarm threshold); None for 1-s and idle windows, while its models warm up,
        and with the detectors off.
    """

    bucket_start_ms: int
    elevator_id: str
    width_s: int
    samples: int
    speed_max_mps: float
    speed_mean_mps: float
    accel_peak_mps2: float
    jerk_peak_mps3: float | None
    load_max_kg: float
    moving_s: float
    occupied_s: float
    door_open_count: int
    door_close_count: int
    door_opening_s: float | None
    door_closing_s: float | None
    door_open_s: float
    leveling_offset_mm: float | None
    online_score: float | None = None


class Trip(msgspec.Struct, frozen=True):
    """One run from standstill to standstill: a row of ``trip``.

    Field names equal the table's columns, except ``start_ms`` and ``end_ms`` (the sink
    turns epoch ms into ``start_time`` and ``end_time``).

    Attributes
    ----------
    start_ms
        First sample faster than :data:`MOVING_SPEED_MPS`, Unix epoch ms.
    elevator_id
        Registration code of the elevator.
    end_ms
        First sample of the final standstill, Unix epoch ms.
    start_floor
        Floor reported at departure (the standing sample just before the start, if within
        :data:`MAX_SAMPLE_GAP_MS`; else the first moving sample).
    end_floor
        Floor reported at ``end_ms`` (the nearest landing, also when stopped between floors).
    direction
        :class:`~foundation.contract.Direction` from the position change: 1 up, 2 down; if the
        position did not change, the last non-zero direction the terminal reported, else 0.
    duration_s
        ``end_ms - start_ms``, s.
    distance_m
        ``|position at end - position at departure|``, m.
    peak_speed_mps
        Highest speed in the trip, m/s.
    peak_accel_mps2
        Largest ``|acceleration|`` in the trip, m/s².
    peak_jerk_mps3
        Largest ``|Δa / Δt|`` between consecutive samples at most
        :data:`MAX_SAMPLE_GAP_MS` apart, the later one in the trip, m/s³; None if none.
    load_kg
        Highest load during the trip, kg.
    leveling_offset_mm
        Leveling offset when the standstill was confirmed (:data:`STOP_CONFIRM_MS` after the
        stop), mm; None if the car stopped outside the door zone, or if the reading did not
        change from departure to arrival (a frozen sensor: no measurement).
    door_opening_s
        Duration of the OPENING phase at arrival (first OPENING sample to first OPEN
        sample), s; None if the doors did not open before the trip was emitted or an edge
        of the phase was not seen within :data:`MAX_SAMPLE_GAP_MS`.
    door_closing_s
        Duration of the last CLOSING phase completed (CLOSING → CLOSED) while the car stood
        before departure, with no opening after it, s; None if not seen.
    online_score
        The trip's online-learning score (``detectors.online``: in [0, 1], 0.5 the alarm
        threshold); None while its models warm up, for inspection runs, and with the
        detectors off.
    """

    start_ms: int
    elevator_id: str
    end_ms: int
    start_floor: int
    end_floor: int
    direction: int
    duration_s: float
    distance_m: float
    peak_speed_mps: float
    peak_accel_mps2: float
    peak_jerk_mps3: float | None
    load_kg: float
    leveling_offset_mm: float | None
    door_opening_s: float | None
    door_closing_s: float | None
    online_score: float | None = None


class MaintenanceSession(msgspec.Struct, frozen=True):
    """One maintenance visit as the terminal showed it: the car in inspection (service mode
    2) from ``start_ms``; a row of ``maintenance_session``.

    Field names equal the table's columns, except ``start_ms`` and ``end_ms`` (the sink turns
    epoch ms into ``start_time`` and ``end_time``).

    Attributes
    ----------
    start_ms
        First sample in inspection, or the time of event 43 (inspection mode) if earlier,
        Unix epoch ms.
    elevator_id
        Registration code of the elevator.
    end_ms
        First sample back out of inspection, Unix epoch ms; None while the visit goes on.
    duration_s
        ``end_ms - start_ms``, s; None while the visit goes on.
    inspection_runs
        Runs the car made in inspection (speed above ``MOVING_SPEED_MPS`` after a stop).
    event_43
        Whether the terminal reported event 43 (inspection mode) for it.
    """

    start_ms: int
    elevator_id: str
    end_ms: int | None
    duration_s: float | None
    inspection_runs: int
    event_43: bool
