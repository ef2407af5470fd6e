"""Every limit the detectors apply, in one place, each named with its unit and its source.

Limits that scale with the elevator (overspeed, overload, overtravel, run-time limiter) are
ratios or margins here and become absolute values through :class:`ElevatorLimits`, built
per elevator from its registry record.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Protocol


class ThresholdError(ValueError):
    """An override names a threshold that does not exist or gives it an unusable value."""


@dataclass(frozen=True)
class Thresholds:
    """The detectors' limits. Override any with ``Thresholds(**overrides)`` or
    :meth:`from_mapping` (which refuses unknown names).

    Attributes
    ----------
    overspeed_ratio
        Speed at or above this multiple of rated speed is overspeed: the governor trips at
        ≥ 115 % of rated speed (GB/T 7588.1-2020 / EN 81-20 5.6.2.2.1.1).
    overload_ratio
        Load above this multiple of rated load is overload: the car must not start and a
        signal sounds (GB/T 7588.1-2020 5.12.1.2).
    confirm_samples
        Consecutive samples an instantaneous condition (overspeed, overload, overtravel,
        door open while running, unintended movement, leveling) must hold before it is
        raised, and must fail before it clears: rejects single-sample sensor noise at a
        cost of one sample period (0.1 s at 10 Hz).
    standstill_speed_mps
        At or below this speed the car stands (the same value the trip segmenter uses).
    door_zone_open_speed_mps
        In the door (unlocking) zone a car may move with its doors not closed while it
        levels and re-levels, re-levelling at no more than 0.3 m/s (GB/T 7588.1-2020 /
        EN 81-20 5.12.1.4; advance door opening, where fitted, up to 0.8 m/s): a car that
        entered the zone moving and opens its doors before it stands is levelling at or
        below this speed, not a door open while running. A car leaving a landing has no
        such allowance. A speed reading frozen at 0.05–0.09 m/s as a car stopped raised a
        false critical alarm when its doors opened (no-fault traffic, 6 of 120 seeds),
        0.3 s after the freeze, before any check can see one.
    trapped_after_s
        Car stopped, doors closed, passengers present and no way out for longer than this
        is a trapping, as platforms implement it (MISSION.md: "more than ~30 s").
    trapped_silent_at_level_seen_s
        Through a terminal's silence the trapping timers run on the car's last state (safety
        first). At a level that needs this much seen of it first: standing, doors closed,
        people inside, for 5 s before the silence. No clause fixes it: doors open within
        about 1–3 s of leveling, so 5 s shut is a door that did not open, while a car that
        fell silent as it arrived says nothing of its doors (its silence is reported at once:
        ``device_offline`` with the car in use, "call the user unit to check the car").
        Between levels no minimum: standing there with people inside is abnormal at once.
        The same after a silence: a car found standing at a level, doors shut, people
        inside, is taken to have stood so all through the silence once seen so this long
        (two trappings that began in a 14-min dropout were seen for 16 s and 23 s only).
    alarm_trapped_after_s
        The alarm button held this long in a standing car with its doors closed and people
        inside is a trapping at once, without waiting ``trapped_after_s``: the people inside
        are asking to be let out. 1 s rejects a brush against the button.
    silent_gap_s
        A silence longer than this between two samples (a terminal dropout; 20 samples at
        10 Hz) hides what the car did. Safety first: a car found standing after one is
        taken to have stood since the last sample seen (the worst case for anyone inside),
        a standing car found somewhere else moved unseen (``unseen_move_m``), so its old
        stop and any alert about it ended, and no speed or stop is measured across it.
    unseen_move_m
        Position change across such a silence that means the car moved while unseen: 0.1 m,
        beyond any encoder noise and below any trip (half the overtravel margin).
    door_reopenings_alert
        Reopenings of a closing door within one stop that make a
        ``repeated_door_reopening`` alert: one is a normal obstruction (a hand or a bag in
        the doorway, EN 81-20 5.3.6.2 reversing device), three a door or a user in trouble.
    code_explains_stop_s
        A terminal's out-of-service code (event 42, faults 01/02/05–10) explains a stop in
        service mode 0 that began this close to it, so that it is no ``power_loss``: one
        message's span (≤ 5 s, the contract), so that a code long past explains no later
        stop.
    stopped_outside_zone_after_s
        A car standing outside the door zone this long is stopped outside the unlocking
        zone (GB/T 24476 fault 04); terminals raise 04 about 1 s after the stop.
    stopping_accuracy_mm
        Stopping accuracy ±10 mm (GB/T 7588.1-2020 5.12.1.1.4).
    leveling_accuracy_mm
        Leveling accuracy ±20 mm while loading; beyond it the car must re-level
        (GB/T 7588.1-2020 5.12.1.1.4).
    at_rest_accel_mps2
        A stop's accuracy is judged only with the car at rest: its acceleration within this.
        A ride accelerates at 0.5–1 m/s² (``travel_accel_mps2``); a car at rest reads its
        sensor's noise (a few hundredths). 0.2 m/s² is between: a car leaving a landing
        below the standstill speed (a re-leveling or recovery run starting) is not a stop.
    stop_confirm_s
        The car must have stood this long before its stopping accuracy is judged (the trip
        segmenter's STOP_CONFIRM_MS).
    accuracy_clear_stops
        Consecutive in-tolerance stops that clear a stopping-accuracy alert (hysteresis, so
        a car hovering at the limit raises one alert, not one per stop).
    overtravel_margin_m
        Position beyond the top / bottom landing by more than this is overtravel (冲顶 /
        蹲底, provincial fault codes 09 / 10); equals the unlocking-zone half-height of
        EN 81-20 5.12.1.4 (0.2 m), the range in which a car is still "at" the landing.
    run_time_limit_s
        Upper bound of the motor run-time limiter (GB/T 7588.1-2020 5.9.2.7): the lesser
        of 45 s and full travel + ``run_time_margin_s``.
    run_time_margin_s
        Added to the full-travel time (GB/T 7588.1-2020 5.9.2.7: 10 s).
    run_time_min_s
        Lower bound of the limiter (GB/T 7588.1-2020 5.9.2.7: 20 s).
    run_time_tolerance_s
        A stalled run whose command drops after at least limit − this is read as the
        limiter tripping, and one held beyond limit + this as a limiter that did not trip
        (the terminal's and our estimate of full-travel time differ by the car's own
        acceleration and jerk, and the run's start by a sample).
    run_stall_min_s
        A run counts as stalled (the car standing with the command held) only after this
        long: the last samples of a normal run's S-curve are slower than the standstill
        speed for a few tenths of a second.
    travel_accel_mps2, travel_jerk_mps3
        Acceleration and jerk used to estimate full-travel time: the low ends of the
        realistic range (MISSION.md: 0.4–1.0 m/s², 1–2 m/s³, typical ≥ 0.6), so the
        estimate is never shorter than the real car's and a normal run never trips it.
    emergency_decel_mps2
        Deceleration beyond normal operation (≤ 1.0 m/s², MISSION.md): an emergency stop,
        reported as evidence of a power loss.
    heartbeat_timeout_s
        No message for longer than this from an idle car is "device offline": two missed
        30-s heartbeats (GB/T 24476 terminals; the contract's heartbeat period) plus 5 s.
    active_silence_timeout_s
        A car that was active (moving, doors not closed, passengers) sends every second;
        silence this long from it is "device offline" at once.
    clock_offset_tolerance_s
        A terminal whose newest sample time is this far from when its message arrived (the
        Kafka record timestamp, against the partition's usual arrival lag) has a clock
        fault (``clock_fault``), and its samples are corrected by the measured offset: 5 s
        is above one message's own span (1 s batches, GB/T 24476 terminals) plus broker
        and network latency (< 1 s in the load tests), and far below the 30-s trapping
        confirmation and the 65-s heartbeat timeout, so no offset that could hide or fake a
        trapping or a silence is left uncorrected.
    clock_behind_confirm_s
        A clock episode that opens behind arrival time, on a message whose samples still
        follow the terminal's earlier ones, is corrected at once but announced
        (``clock_fault``) only when messages arriving this much later still measure its
        offset (within ``clock_offset_tolerance_s``): a message late because its successors
        were lost, or a backlog sent after an outage, is not a clock behind. 10 s: a backlog
        sent faster than 1.5 times real time (1 + tolerance / this) moves its offset beyond
        the tolerance before then and is taken for late delivery, and a minor alert comes
        10 s later at most.
    clock_rebase_s
        A terminal trusted before its clock could be judged (heard before any other terminal
        of its partition) may have run its car's state ahead in a wrong frame; once judged,
        a correction that moves its samples back more than this before the newest already
        corrected rebases the car: its rule state starts again at the corrected time (its
        open alerts stay open), instead of taking every later sample for "old" and seeing
        nothing of the car until real time passes the wrong frame (11 h on no-fault seed
        18). Smaller folds back are held off (a newly adopted offset never moves samples
        back): the arrival jitter of a backlog sent in a burst folds back up to about the
        tolerance plus half an offset's measurements (≈ 10 s). 60 s: above that, and a car
        of a clock trusted less than a minute off is blind for that long at most. Ahead
        too: a correction that moves a message's samples this much further past the newest
        corrected one than its arrival is past the previous message's rebases the car (a
        clock trusted behind; the gap is no silence of its terminal), where arrival times
        are exact (not in a replay published faster than real time).
    clock_offset_max_s
        Beyond this offset a message is quarantined, not corrected: 7 days, well past the
        largest offset a real terminal that lost NTP shows (the simulator's ``clock_skew``
        goes to 1 day) and far short of an unset clock (1970) or a bogus year (2999).
    speed_check_s, speed_check_samples, speed_position_mismatch_mps
        A speed sensor that reads exactly the same value for ``speed_check_s``, over at
        least ``speed_check_samples`` samples (two alike across a lost message are a
        coincidence: seen on a healthy sensor decelerating past the value it had read
        1.1 s earlier), while the
        speed the position encoder shows over that span differs from it by more than
        ``speed_position_mismatch_mps``, or shows the car standing (under half the
        standstill speed) while the reading is above it, is frozen (a stuck sensor, simulator
        ``stuck_sensor``): the rules then take the car's speed from its position until the
        reading changes. No clause fixes either; a healthy sensor's reading changes from
        sample to sample while the car moves (its own noise) and reads 0 at a standstill,
        and over 0.5 s a 1-mm encoder resolves speed to ±0.004 m/s, so 0.1 m/s — twice the
        standstill speed, a tenth of a typical rated speed — is never a healthy sensor's
        disagreement, while a car leaving a landing shows it within about a second, inside
        the ±0.2 m unlocking zone (EN 81-20 5.12.1.4). The standing case catches a reading
        frozen at 0.05–0.1 m/s as a car stopped: it kept the car "moving" for good, and
        its terminal's first pause in sending was a `device_offline` for a car in use.
    encoder_speed_samples
        With the speed reading frozen, the car's speed is the least of its encoder's speed
        over the last span checked, over the last sample step, and over its last
        ``encoder_speed_samples`` sample steps (the net move): one 0.1-s step holds the
        encoder's noise, 5–6 mm (0.05–0.06 m/s, over the standstill speed) on a standing
        car, and with a span that still held the end of the approach it made a standing car
        depart as its doors opened (a false critical ``door_open_while_running``, no-fault
        seed 151). 3 steps (0.3 s at 10 Hz): noise of ±3 mm reads at most 0.02 m/s over
        them, and a moving car's net move still shows it moving within 0.3 s.
    position_check_s
        A position that stays the same, bit for bit, for this long (over at least
        ``speed_check_samples`` samples) while a live speed reading (one that changes
        within the span) shows the car moving throughout is a frozen encoder
        (``sensor_stuck``; simulator ``stuck_sensor``): it then judges no overtravel until
        it changes (the terminal's codes 09 and 10 still raise one). Stuck beyond a
        terminal landing, a frozen encoder held an overtravel alert open and the next real
        overtravel raised nothing. No clause fixes it. 2 s, four times the speed check:
        a terminal that holds its position between encoder updates of up to 1 s, as some
        do, is not taken for frozen, and a car at 0.5 m/s moves a metre in that time.
    load_stuck_changes
        A load reading the same, bit for bit, at this many changes of the passengers flag
        in a row after the first (people got in, out, in) is a frozen load cell
        (``sensor_stuck``; simulator ``stuck_sensor``): a live cell reads each person's
        weight and its own noise. No clause fixes it; two repeats rule out a coincidence
        of a quantised reading.
    encoder_jump_speed_ratio
        Position steps faster than this × rated speed are the encoder jumping (a glitch, a
        frozen encoder catching up), not the car moving: they never make a frozen-speed
        judgement. Twice the rated speed is beyond any car still running: the overspeed
        governor trips below 1.25 × rated + 0.25 m/s (GB/T 7588.1-2020 5.6.2.2.1.1).
    state_eviction_after_s
        A car silent this long (stream time) whose ``device_offline`` alert was raised has
        its in-memory state dropped by the worker (its last checkpoint stays in the state
        table; a later message restores it and clears the alert): 6 hours, far beyond the
        65-s heartbeat timeout and any trapping timer, so only a car that is really gone
        (a dismantled terminal, a hostile id) stops costing memory. Must exceed
        ``heartbeat_timeout_s``.
    maintenance_visit_interval_days
        A car whose terminal showed no maintenance visit (inspection, service mode 2 or
        event 43, GB/T 24476) for longer than this raises ``maintenance_overdue``
        (:mod:`detectors.maintenance`): maintenance at least every 15 days, TSG T5002-2017
        (半月保). The same rule as ``risk_maintenance_interval_days``, judged in the stream
        per elevator; fractional days are allowed (a test or a pilot may shorten it).
    maintenance_visit_min_s
        A visit shorter than this is "too short" on the maintenance board: no standard fixes
        a duration, but TSG T5002-2017 Annex A's half-monthly list (about 30 items on a
        traction lift: machine room, car top, pit, landing doors) cannot be worked through
        in less than about half an hour, the figure supervision platforms use to flag
        perfunctory visits (假保). A judgement: override it where the city rules otherwise.
    passenger_mass_kg
        Mass of one passenger for estimating people trapped (GB/T 7588.1 Table 6: 75 kg).

    Degradation charts (:mod:`detectors.stats`, per trip). No standard sets them; they are
    the textbook EWMA settings (Montgomery, *Introduction to Statistical Quality Control*,
    §9.2: λ 0.05–0.25, L ≈ 3 for 3-σ in-control run lengths of ~500; L 4.5 here because a
    car makes hundreds of trips a day and a false degradation alert a day per car would be
    ignored), checked on the fault-free scenario (``tianyan evaluate``).

    leveling_drift_ewma_alpha, leveling_drift_limit_sigmas
        λ and L of the leveling-offset EWMA chart (0.1, 4.5).
    leveling_drift_baseline_stops
        Stops that form the chart's in-control baseline (100, about half a busy car's day:
        a stop's offset varies by ±3 mm, and a baseline mean of 50 stops was 1 mm off its
        car's true mean often enough to raise ``leveling_drift`` on ordinary stops, no-fault
        seeds 342, 371, 377; ``tianyan bench online``, leveling drift at 24–96 mm/day:
        14 of 17 cars charted first at 50 and at 100, p50 4,565 s and 5,178 s after onset).
    leveling_drift_min_sigma_mm
        Floor on the baseline standard deviation, mm: leveling sensors read in whole
        millimetres, so a car that always reads the same must not alarm at the first 1 mm.
    leveling_drift_min_shift_mm
        A drift must also move the EWMA this far from the baseline (3 mm: below it is noise
        at the ±10 mm stopping accuracy of GB/T 7588.1-2020 5.12.1.1.4).
    leveling_drift_clip_sigmas
        A stop's offset enters the leveling chart clipped to the baseline ± this many σ (a
        Huber-type robust EWMA): one wild reading — a sensor freezing mid-approach, a glitch
        — moves the EWMA by at most λ × 3σ, under a third of its 4.5-σ limit (seen: one such
        stop raised leveling_drift on no-fault traffic), while a drift's readings climb
        gradually and the EWMA reaches its limit before they are clipped.
    door_wear_ewma_alpha, door_wear_limit_sigmas, door_wear_baseline_cycles
        λ, L and baseline size of the door opening / closing time charts (0.1, 4.5, 50).
    door_wear_min_sigma_s
        Floor on their baseline standard deviation, s (0.05 s: half a 10 Hz sample period).
    door_wear_min_ratio
        The charted door time must also be this multiple of its baseline (1.15: slower by
        15 %, below which door operators vary with temperature and load).
    trip_anomaly_history_trips, trip_anomaly_min_trips
        Trips remembered per feature for the robust z-score (200, a day or two of a car),
        and fewer than which nothing is judged (50).
    trip_anomaly_z_limit
        A trip feature whose robust z (harmful side) exceeds this is a ``trip_anomaly``
        (8: measured, 310 false alarms in 16.7 elevator-days at lower limits with both
        sides, none at 8 on the fault-free scenario).
    trip_anomaly_min_sigma_accel_mps2, trip_anomaly_min_sigma_jerk_mps3
        Floor on the scale of the robust z of peak acceleration (0.02 m/s², an elevator
        accelerometer's noise) and peak jerk (0.2 m/s³: a 10-Hz difference of two such
        readings has a noise of 0.28), as σ (the MAD floor is 0.6745 × it). A car whose
        trips are much alike has a tiny MAD: with none, a trip 0.6 m/s³ above its median
        jerk of 2.0 (MAD 0.065) was a ``trip_anomaly`` at z 8.2 (no-fault seed 296). The
        door times and the leveling offset take the charts' floors, the same resolutions:
        ``door_wear_min_sigma_s`` and ``leveling_drift_min_sigma_mm`` (a car whose doors
        always took 2.2 s had a MAD of 0, and one 2.3-s opening a z of 67,000).

    Online learning (:mod:`detectors.online`, per trip and per one-minute window, each
    elevator against itself and against its cohort).

    online_fading_factor
        Weight of a new trip / window in the exponentially weighted mean and variance of
        each feature (river's ``AdaptiveStandardScaler``): 0.005, a memory of about 200
        trips (a busy car's day), so a car's normal after maintenance is learnt within a
        day, while a degradation over days is still seen against it.
    online_warmup_trips, online_warmup_windows
        Trips / active one-minute windows an elevator's own model learns before its score
        is used or alerts: 100 (several times 1 / fading factor is not needed for a mean,
        but the variance of 6 features needs ~100 values to be within ±15 %).
    online_cohort_warmup
        Trips / windows a cohort's model learns before its score stands for an elevator
        still warming up (50: several cars' trips pooled; the score is only shown then,
        never alerted on, so a rougher variance is acceptable and a new car has a score on
        its board within minutes).
    online_alarm_p
        The tail probability (χ² of the standardised features) at or below which a trip or
        window scores 0.5, the alarm threshold of every score (``tianyan score``); it
        scores 1 at its square. 1e-6 (≈ 5 σ on one feature): trip features are
        heavier-tailed than Gaussian (door reopenings, short trips), so a single row this
        unusual is common enough; ``online_confirm_rows`` makes the alert.
    online_confirm_rows
        Consecutive trips (or active minutes) at or beyond ``online_alarm_p`` that raise
        ``online_anomaly``, once per run: 3. Single heavy-tail rows raised 1.2 alerts per
        elevator-day at p ≤ 1e-9 on the degradation scenario's healthy cars; a car
        degrading stays unusual trip after trip (README "Online learning").
    online_min_sigma_ratio
        Floor on each feature's standard deviation, as a fraction of its mean's magnitude
        plus 1e-3 of its unit (a quantised sensor can read constant): 0.02.
    online_learn_clip_sigmas, online_learn_clip_after
        Once a feature has ``online_learn_clip_after`` values (30: its variance is then
        within about ±25 %), a value is learnt as at most this many standard deviations
        from the mean (3: Huber's winsorising; a Gaussian value is beyond it 0.3 % of the
        time): one door held open cannot inflate the variance and hide the next ten
        unusual trips, while a lasting change still moves the mean by 3 σ × the fading
        factor per row and is learnt within a few hundred rows.
    online_max_cohorts
        Cohort models kept per partition (least recently used dropped first): 512, more
        than the combinations of rated speed, floors band and building type in the
        registry.
    default_rated_speed_mps, default_rated_load_kg, default_floors
        Used for an elevator that is not in the registry; deliberately strict (a slow, small
        car) so that an unknown car is over- rather than under-alarmed, and every alert
        says the limits were defaults. ``default_floors`` 0 means "unknown": overtravel top
        is then judged from terminal code 09 only.

    Risk grading (:mod:`detectors.risk`; no official formula is published, MISSION.md: the
    factors used in practice are fault and trapping frequency, age, maintenance and
    inspection compliance and anomaly trends). Each factor earns points, capped; the score
    is their sum, capped at 100.

    risk_window_days
        Alerts raised in this many days before the grading count: a month, the period of
        the trapping rate regulators report (Jiangsu: 0.55 % a month).
    risk_trapping_points, risk_trapping_cap
        Per trapping (``trapped_between_levels`` / ``trapped_at_level``) in the window, and
        the most this factor adds: two trappings in a month weigh as much as anything else
        together, as the plan puts trapped people first.
    risk_critical_fault_points, risk_critical_fault_cap
        Per other ``critical`` alert (overspeed, overtravel, door open while running,
        unintended movement): the faults the standards answer with taking the car out of
        service (GB/T 7588.1-2020).
    risk_major_fault_points, risk_major_fault_cap
        Per ``major`` alert (stopped outside the door zone, run-time limiter, leveling
        accuracy, power loss, alarm button, terminal fault code).
    risk_minor_fault_points, risk_minor_fault_cap
        Per ``minor`` fault alert (overload, stopping accuracy, repeated door reopening,
        device offline).
    risk_degradation_points, risk_degradation_cap
        Per degradation alert of the trip-health charts (leveling drift, door operator
        wear): a fault in the making.
    risk_anomaly_points, risk_anomaly_cap
        Per trip anomaly (``info``): weak evidence alone, a trend when frequent.
    risk_old_age_years, risk_old_age_points
        An elevator older than this is "old" (MISSION.md: > 15 years); an unknown
        installation date counts as old.
    risk_maintenance_interval_days, risk_maintenance_overdue_points,
    risk_maintenance_lapsed_points
        Maintenance at least every 15 days (TSG T5002-2017, 半月保): points when the last
        maintenance is older than one interval, more when older than two (a missed cycle,
        or none on record).
    risk_inspection_interval_days, risk_inspection_overdue_points
        Periodic inspection yearly (TSG T7001): points when the last is older, or none on
        record.
    risk_no_terminal_points
        No IoT terminal fitted: faults and trappings go unseen, so a quiet record says less.
    risk_red_min_score, risk_orange_min_score, risk_yellow_min_score
        Grade cut-offs: red 重大 at or above the first, orange 较大, yellow 一般, else blue
        低. A compliance lapse alone (old, no terminal, overdue maintenance and inspection:
        55) stays below red; red needs faults or trappings.
    """

    overspeed_ratio: float = 1.15
    overload_ratio: float = 1.10
    confirm_samples: int = 2
    standstill_speed_mps: float = 0.05
    door_zone_open_speed_mps: float = 0.3
    trapped_after_s: float = 30.0
    trapped_silent_at_level_seen_s: float = 5.0
    alarm_trapped_after_s: float = 1.0
    silent_gap_s: float = 2.0
    unseen_move_m: float = 0.1
    door_reopenings_alert: int = 3
    code_explains_stop_s: float = 5.0
    stopped_outside_zone_after_s: float = 1.0
    stopping_accuracy_mm: float = 10.0
    leveling_accuracy_mm: float = 20.0
    stop_confirm_s: float = 0.5
    at_rest_accel_mps2: float = 0.2
    accuracy_clear_stops: int = 3
    overtravel_margin_m: float = 0.2
    run_time_limit_s: float = 45.0
    run_time_margin_s: float = 10.0
    run_time_min_s: float = 20.0
    run_time_tolerance_s: float = 2.0
    run_stall_min_s: float = 2.0
    travel_accel_mps2: float = 0.6
    travel_jerk_mps3: float = 1.0
    emergency_decel_mps2: float = 1.2
    heartbeat_timeout_s: float = 65.0
    active_silence_timeout_s: float = 10.0
    clock_offset_tolerance_s: float = 5.0
    clock_behind_confirm_s: float = 10.0
    clock_rebase_s: float = 60.0
    clock_offset_max_s: float = 7 * 86_400.0
    speed_check_s: float = 0.5
    speed_check_samples: int = 3
    speed_position_mismatch_mps: float = 0.1
    encoder_jump_speed_ratio: float = 2.0
    encoder_speed_samples: int = 3
    position_check_s: float = 2.0
    load_stuck_changes: int = 2
    state_eviction_after_s: float = 6 * 3600.0
    maintenance_visit_interval_days: float = 15.0
    maintenance_visit_min_s: float = 1800.0
    passenger_mass_kg: float = 75.0
    leveling_drift_ewma_alpha: float = 0.1
    leveling_drift_limit_sigmas: float = 4.5
    leveling_drift_baseline_stops: int = 100
    leveling_drift_min_sigma_mm: float = 1.0
    leveling_drift_min_shift_mm: float = 3.0
    leveling_drift_clip_sigmas: float = 3.0
    door_wear_ewma_alpha: float = 0.1
    door_wear_limit_sigmas: float = 4.5
    door_wear_baseline_cycles: int = 50
    door_wear_min_sigma_s: float = 0.05
    door_wear_min_ratio: float = 1.15
    trip_anomaly_history_trips: int = 200
    trip_anomaly_min_trips: int = 50
    trip_anomaly_z_limit: float = 8.0
    trip_anomaly_min_sigma_accel_mps2: float = 0.02
    trip_anomaly_min_sigma_jerk_mps3: float = 0.2
    online_fading_factor: float = 0.005
    online_warmup_trips: int = 100
    online_warmup_windows: int = 100
    online_cohort_warmup: int = 50
    online_alarm_p: float = 1e-6
    online_confirm_rows: int = 3
    online_min_sigma_ratio: float = 0.02
    online_max_cohorts: int = 512
    online_learn_clip_sigmas: float = 3.0
    online_learn_clip_after: int = 30
    default_rated_speed_mps: float = 1.0
    default_rated_load_kg: float = 630.0
    default_floors: int = 0
    risk_window_days: int = 30
    risk_trapping_points: float = 25.0
    risk_trapping_cap: float = 50.0
    risk_critical_fault_points: float = 15.0
    risk_critical_fault_cap: float = 30.0
    risk_major_fault_points: float = 5.0
    risk_major_fault_cap: float = 20.0
    risk_minor_fault_points: float = 1.0
    risk_minor_fault_cap: float = 5.0
    risk_degradation_points: float = 5.0
    risk_degradation_cap: float = 10.0
    risk_anomaly_points: float = 0.5
    risk_anomaly_cap: float = 5.0
    risk_old_age_years: float = 15.0
    risk_old_age_points: float = 10.0
    risk_maintenance_interval_days: int = 15
    risk_maintenance_overdue_points: float = 10.0
    risk_maintenance_lapsed_points: float = 20.0
    risk_inspection_interval_days: int = 365
    risk_inspection_overdue_points: float = 15.0
    risk_no_terminal_points: float = 10.0
    risk_red_min_score: float = 60.0
    risk_orange_min_score: float = 40.0
    risk_yellow_min_score: float = 20.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ThresholdError(f"{f.name}: {value!r} is not a number")
            if not math.isfinite(value) or value < 0:
                raise ThresholdError(f"{f.name}: {value!r} is not a finite number ≥ 0")
        if self.confirm_samples < 1:
            raise ThresholdError("confirm_samples: at least 1 sample is needed")
        if not (
            0
            < self.risk_yellow_min_score
            < self.risk_orange_min_score
            < self.risk_red_min_score
            <= 100
        ):
            raise ThresholdError(
                "risk grade cut-offs: need 0 < risk_yellow_min_score < risk_orange_min_score"
                f" < risk_red_min_score ≤ 100, got {self.risk_yellow_min_score},"
                f" {self.risk_orange_min_score}, {self.risk_red_min_score}"
            )
        for name in ("leveling_drift_ewma_alpha", "door_wear_ewma_alpha", "online_fading_factor"):
            if not 0 < getattr(self, name) <= 1:
                raise ThresholdError(f"{name}: {getattr(self, name)!r} must be in (0, 1]")
        if not 0 < self.online_alarm_p < 1:
            raise ThresholdError(f"online_alarm_p: {self.online_alarm_p!r} must be in (0, 1)")
        if self.trip_anomaly_history_trips < self.trip_anomaly_min_trips:
            raise ThresholdError(
                f"trip_anomaly_history_trips: {self.trip_anomaly_history_trips} is fewer than"
                f" trip_anomaly_min_trips ({self.trip_anomaly_min_trips})"
            )
        if self.risk_window_days < 1:
            raise ThresholdError("risk_window_days: at least 1 day is needed")
        if self.state_eviction_after_s <= max(
            self.heartbeat_timeout_s, self.active_silence_timeout_s
        ):
            raise ThresholdError(
                f"state_eviction_after_s: {self.state_eviction_after_s} must exceed"
                f" heartbeat_timeout_s ({self.heartbeat_timeout_s}) and"
                f" active_silence_timeout_s ({self.active_silence_timeout_s})"
            )

    @classmethod
    def from_mapping(cls, overrides: Mapping[str, Any]) -> Thresholds:
        """Defaults with ``overrides`` applied; unknown names raise :class:`ThresholdError`.

        Examples
        --------
        >>> Thresholds.from_mapping({"trapped_after_s": 20}).trapped_after_s
        20
        >>> Thresholds.from_mapping({"trapped_s": 20})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        detectors.thresholds.ThresholdError: trapped_s: unknown threshold (known: ...)
        """
        known = {f.name for f in fields(cls)}
        for name in overrides:
            if name not in known:
                raise ThresholdError(_unknown_names_message(name))
        return cls(**dict(overrides))

    @classmethod
    def names(cls) -> list[str]:
        """Every threshold's name."""
        return [f.name for f in fields(cls)]


def _unknown_names_message(name: str) -> str:
    return f"{name}: unknown threshold (known: {', '.join(Thresholds.names())})"


class _RegistryElevator(Protocol):
    """What ratings are read from: a registry entry (read-only, e.g. a frozen record)."""

    @property
    def rated_speed_mps(self) -> float: ...
    @property
    def rated_load_kg(self) -> float: ...
    @property
    def floors(self) -> int: ...


@dataclass(frozen=True)
class ElevatorLimits:
    """One elevator's own ratings, the base of every relative limit.

    Parameters
    ----------
    rated_speed_mps, rated_load_kg, floors
        From the registry (``registry.model.Elevator``).
    floor_height_m
        Landing-to-landing height (the registry does not record it; 3 m is typical).
    from_registry
        False when the elevator is not in the registry and the values are
        :class:`Thresholds` defaults; every alert's evidence then says so.
    building_type
        From the registry ("" if unknown): with the ratings, the elevator's cohort
        (:func:`detectors.stats.cohort_key`).

    Examples
    --------
    >>> lim = ElevatorLimits(rated_speed_mps=1.75, rated_load_kg=1000, floors=18)
    >>> round(lim.top_position_m, 1)
    51.0
    """

    rated_speed_mps: float
    rated_load_kg: float
    floors: int
    floor_height_m: float = 3.0
    from_registry: bool = True
    building_type: str = ""

    @classmethod
    def of(cls, elevator: _RegistryElevator, floor_height_m: float = 3.0) -> ElevatorLimits:
        """Limits of a registry record (anything with the three rating attributes, and
        ``building_type`` if it has one)."""
        return cls(
            float(elevator.rated_speed_mps),
            float(elevator.rated_load_kg),
            int(elevator.floors),
            floor_height_m,
            building_type=str(getattr(elevator, "building_type", "")),
        )

    @classmethod
    def unknown(cls, thresholds: Thresholds | None = None) -> ElevatorLimits:
        """Conservative defaults for an elevator missing from the registry."""
        th = thresholds or Thresholds()
        return cls(
            th.default_rated_speed_mps,
            th.default_rated_load_kg,
            th.default_floors,
            3.0,
            from_registry=False,
        )

    @property
    def top_position_m(self) -> float:
        """Position of the top landing above the lowest one, m (inf if floors unknown)."""
        return (self.floors - 1) * self.floor_height_m if self.floors >= 2 else math.inf

    def full_travel_s(self, accel_mps2: float, jerk_mps3: float) -> float:
        """Time of a run over the full travel at rated speed with an S-curve, s."""
        distance_m = self.top_position_m if self.floors >= 2 else 0.0
        if distance_m <= 0.0 or self.rated_speed_mps <= 0.0:
            return 0.0
        v, a, j = self.rated_speed_mps, accel_mps2, jerk_mps3
        # Distance to reach rated speed and brake again; shorter runs never reach it.
        if v * (v / a + a / j) <= distance_m:
            return distance_m / v + v / a + a / j
        # Rated speed not reached: peak speed v_p solves v_p (v_p/a + a/j) = distance.
        vp = (-(a * a / j) + math.sqrt((a * a / j) ** 2 + 4 * distance_m * a)) / 2
        return 2 * (vp / a + a / j) if vp > 0 else 0.0

    def run_time_limit_s(self, th: Thresholds) -> float:
        """The motor run-time limiter's limit: min(45 s, full travel + 10 s), ≥ 20 s."""
        travel = self.full_travel_s(th.travel_accel_mps2, th.travel_jerk_mps3)
        return min(th.run_time_limit_s, max(th.run_time_min_s, travel + th.run_time_margin_s))


def load_thresholds(path: Path | None) -> Thresholds:
    """The detectors' thresholds: defaults, overridden by a TOML file of ``name = value``
    (``TIANYAN_THRESHOLDS_FILE``). Read once, at start; detection itself does no I/O."""
    if path is None:
        return Thresholds()
    try:
        with path.open("rb") as f:
            return Thresholds.from_mapping(tomllib.load(f))
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ThresholdError(f"TIANYAN_THRESHOLDS_FILE {path}: {e}") from e
