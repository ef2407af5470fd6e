"""Jerk-limited (S-curve) motion: planning a trip and evaluating it at any time.

A trip from rest to rest over a distance ``D`` follows the classic seven-segment profile:
jerk up, constant acceleration, jerk down, cruise, and the mirror image to stop. Short trips
never reach the cruise speed (and very short ones never reach the full acceleration); the
planner lowers the peak speed until the profile fits the distance. The evaluation is
vectorised so one call moves every travelling car of the fleet.

Limits (MISSION.md, motion realism): acceleration 0.4–1.0 m/s², jerk 1–2 m/s³, speed up to
the elevator's rated speed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class SCurve:
    """One planned rest-to-rest trip.

    Attributes
    ----------
    distance_m
        Length of the trip (positive; the direction is held elsewhere).
    duration_s
        Time from start to standstill.
    jerk_time_s
        Length of each of the four constant-jerk segments.
    accel_time_s
        Length of each of the two constant-acceleration segments (0 if never reached).
    jerk_mps3
        Jerk during the jerk segments.
    peak_speed_mps
        Highest speed of the trip (the cruise speed if there is a cruise).
    """

    distance_m: float
    duration_s: float
    jerk_time_s: float
    accel_time_s: float
    jerk_mps3: float
    peak_speed_mps: float

    @property
    def peak_accel_mps2(self) -> float:
        return self.jerk_mps3 * self.jerk_time_s


def plan_scurve(
    distance_m: float, max_speed_mps: float, max_accel_mps2: float, max_jerk_mps3: float
) -> SCurve:
    """Plan the fastest rest-to-rest trip over ``distance_m`` within the three limits.

    Examples
    --------
    >>> p = plan_scurve(30.0, 1.75, 0.8, 1.5)
    >>> round(p.duration_s, 3), p.peak_speed_mps
    (19.864, 1.75)
    """
    d, v, a, j = (
        float(distance_m),
        float(max_speed_mps),
        float(max_accel_mps2),
        float(max_jerk_mps3),
    )
    if d <= 0.0:
        return SCurve(0.0, 0.0, 0.0, 0.0, j, 0.0)
    if v * j >= a * a:  # the full acceleration is reached on the way to v
        tj, ta = a / j, v / a - a / j
    else:
        tj, ta = math.sqrt(v / j), 0.0
    ramp_distance_m = v * (2 * tj + ta)  # accelerating to v and braking from it
    if d >= ramp_distance_m:
        cruise_s = (d - ramp_distance_m) / v
        return SCurve(d, 2 * (2 * tj + ta) + cruise_s, tj, ta, j, v)
    # Too short to reach v: the highest peak speed whose ramps fit the distance.
    vp = a / 2 * (-(a / j) + math.sqrt((a / j) ** 2 + 4 * d / a))
    if vp >= a * a / j:
        tj, ta = a / j, vp / a - a / j
    else:
        vp = (d * math.sqrt(j) / 2) ** (2 / 3)
        tj, ta = math.sqrt(vp / j), 0.0
    return SCurve(d, 2 * (2 * tj + ta), tj, ta, j, vp)


def _ramp(
    s: FloatArray, tj: FloatArray, ta: FloatArray, j: FloatArray, vp: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Distance, speed and acceleration ``s`` seconds into the speed-up ramp."""
    ap = j * tj
    ramp = 2 * tj + ta
    v1 = j * tj * tj / 2
    x1 = v1 * tj / 3
    # Segment 1: jerk up.
    x = j * s**3 / 6
    v = j * s * s / 2
    a = j * s
    # Segment 2: constant acceleration.
    tau = s - tj
    seg2 = (s >= tj) & (s < tj + ta)
    x = np.where(seg2, x1 + v1 * tau + ap * tau * tau / 2, x)
    v = np.where(seg2, v1 + ap * tau, v)
    a = np.where(seg2, ap, a)
    # Segment 3: jerk down, the mirror image of segment 1 about the end of the ramp.
    sigma = ramp - s
    seg3 = s >= tj + ta
    x = np.where(seg3, vp * ramp / 2 - (vp * sigma - j * sigma**3 / 6), x)
    v = np.where(seg3, vp - j * sigma * sigma / 2, v)
    a = np.where(seg3, j * sigma, a)
    return x, v, a


def eval_scurve(
    t_s: FloatArray,
    distance_m: FloatArray,
    duration_s: FloatArray,
    jerk_time_s: FloatArray,
    accel_time_s: FloatArray,
    jerk_mps3: FloatArray,
    peak_speed_mps: FloatArray,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Distance covered, speed and acceleration ``t_s`` seconds after each trip started.

    All arguments are arrays of one length (one entry per car); times outside
    ``[0, duration_s]`` are clamped, so a finished trip reports its end state.
    """
    t = np.clip(t_s, 0.0, duration_s)
    ramp = 2 * jerk_time_s + accel_time_s
    first = t <= ramp
    last = t >= duration_s - ramp
    # Evaluate the ramp at s (speeding up) or at T - s (braking, by symmetry).
    s = np.where(last & ~first, duration_s - t, np.minimum(t, ramp))
    xr, vr, ar = _ramp(s, jerk_time_s, accel_time_s, jerk_mps3, peak_speed_mps)
    cruise = ~first & ~last
    x = np.where(
        first,
        xr,
        np.where(last, distance_m - xr, peak_speed_mps * ramp / 2 + peak_speed_mps * (t - ramp)),
    )
    v = np.where(cruise, peak_speed_mps, vr)
    a = np.where(cruise, 0.0, np.where(first, ar, -ar))
    # Exactly at rest at both ends (no rounding residue).
    done = t >= duration_s
    x = np.where(done, distance_m, x)
    v = np.where(done | (t <= 0.0), 0.0, v)
    a = np.where(done | (t <= 0.0), 0.0, a)
    return x, v, a


def eval_one(plan: SCurve, t_s: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
    """:func:`eval_scurve` for one plan at many times."""
    n = np.shape(t_s)
    return eval_scurve(
        np.asarray(t_s, dtype=float),
        np.full(n, plan.distance_m),
        np.full(n, plan.duration_s),
        np.full(n, plan.jerk_time_s),
        np.full(n, plan.accel_time_s),
        np.full(n, plan.jerk_mps3),
        np.full(n, plan.peak_speed_mps),
    )
