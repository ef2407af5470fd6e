"""Passenger traffic by building type and time of day.

Each building type has an hourly shape (share of its peak call rate, local time) and, per
hour, the share of calls that start in the lobby (up-peak) and that end there (down-peak);
the rest are between upper floors. The shapes follow the textbook traffic patterns of lift
traffic design (CIBSE Guide D): offices fill in the morning up-peak, empty in the evening
down-peak and have a two-way lunch peak; residential buildings run the other way round.
Calls arrive as a non-homogeneous Poisson process, sampled by thinning.
"""

from __future__ import annotations

from typing import Final

import numpy as np

# 24 hourly values, 00:00 to 23:00 local time. A small floor keeps every hour possible.
_Hours = tuple[float, ...]

#: Share of the peak call rate in each local hour.
SHAPE: Final[dict[str, _Hours]] = {
    "residential": (
        0.04,
        0.02,
        0.02,
        0.02,
        0.02,
        0.05,
        0.25,
        0.85,
        0.9,
        0.45,
        0.35,
        0.45,
        0.6,
        0.5,
        0.35,
        0.35,
        0.45,
        0.8,
        1.0,
        0.9,
        0.7,
        0.5,
        0.25,
        0.1,
    ),
    "office": (
        0.01,
        0.01,
        0.01,
        0.01,
        0.01,
        0.01,
        0.03,
        0.35,
        1.0,
        0.6,
        0.45,
        0.65,
        0.85,
        0.6,
        0.45,
        0.45,
        0.5,
        0.9,
        0.7,
        0.25,
        0.1,
        0.05,
        0.02,
        0.01,
    ),
    "hospital": (
        0.15,
        0.1,
        0.1,
        0.1,
        0.1,
        0.15,
        0.3,
        0.7,
        1.0,
        1.0,
        0.95,
        0.85,
        0.7,
        0.85,
        0.9,
        0.9,
        0.8,
        0.6,
        0.45,
        0.4,
        0.35,
        0.3,
        0.25,
        0.2,
    ),
    "school": (
        0.01,
        0.01,
        0.01,
        0.01,
        0.01,
        0.01,
        0.05,
        0.9,
        0.7,
        0.4,
        0.4,
        0.8,
        0.6,
        0.5,
        0.4,
        0.5,
        1.0,
        0.5,
        0.15,
        0.05,
        0.02,
        0.01,
        0.01,
        0.01,
    ),
    "mall": (
        0.01,
        0.01,
        0.01,
        0.01,
        0.01,
        0.01,
        0.02,
        0.05,
        0.15,
        0.4,
        0.7,
        0.85,
        0.8,
        0.8,
        0.85,
        0.9,
        0.9,
        0.9,
        0.95,
        1.0,
        0.9,
        0.5,
        0.1,
        0.02,
    ),
    "station": (
        0.05,
        0.02,
        0.02,
        0.02,
        0.05,
        0.2,
        0.6,
        1.0,
        0.9,
        0.7,
        0.6,
        0.6,
        0.6,
        0.6,
        0.6,
        0.6,
        0.75,
        1.0,
        0.9,
        0.7,
        0.5,
        0.35,
        0.2,
        0.1,
    ),
    "government": (
        0.01,
        0.01,
        0.01,
        0.01,
        0.01,
        0.01,
        0.03,
        0.4,
        1.0,
        0.6,
        0.5,
        0.6,
        0.75,
        0.6,
        0.55,
        0.5,
        0.55,
        0.85,
        0.4,
        0.1,
        0.03,
        0.02,
        0.01,
        0.01,
    ),
}


def _periods(base: float, spans: dict[tuple[int, int], float]) -> _Hours:
    out = [base] * 24
    for (lo, hi), share in spans.items():
        for h in range(lo, hi):
            out[h] = share
    return tuple(out)


#: Share of calls that start in the lobby (floor 1), going up.
FROM_LOBBY: Final[dict[str, _Hours]] = {
    "residential": _periods(0.35, {(7, 9): 0.1, (17, 21): 0.75}),
    "office": _periods(0.35, {(7, 10): 0.85, (12, 14): 0.5, (17, 19): 0.1}),
    "hospital": _periods(0.45, {(7, 11): 0.65}),
    "school": _periods(0.35, {(7, 9): 0.85, (16, 18): 0.1}),
    "mall": _periods(0.45, {}),
    "station": _periods(0.5, {}),
    "government": _periods(0.35, {(7, 10): 0.85, (12, 14): 0.5, (17, 19): 0.1}),
}
#: Share of calls that end in the lobby, going down.
TO_LOBBY: Final[dict[str, _Hours]] = {
    "residential": _periods(0.35, {(7, 9): 0.8, (17, 21): 0.1}),
    "office": _periods(0.35, {(7, 10): 0.05, (11, 13): 0.45, (17, 20): 0.85}),
    "hospital": _periods(0.35, {(15, 19): 0.6}),
    "school": _periods(0.35, {(7, 9): 0.05, (16, 18): 0.85}),
    "mall": _periods(0.45, {}),
    "station": _periods(0.5, {}),
    "government": _periods(0.35, {(7, 10): 0.05, (11, 13): 0.45, (17, 20): 0.85}),
}
#: A local hour whose shape is at least this share of the peak counts as a peak hour.
PEAK_SHARE: Final = 0.7


def local_hour(epoch_s: float, timezone_offset_h: float) -> int:
    """Local hour of day (0–23) of a Unix time."""
    return int((epoch_s / 3600.0 + timezone_offset_h) % 24.0)


def next_call_s(
    rng: np.random.Generator,
    building: str,
    peak_calls_per_hour: float,
    after_s: float,
    start_epoch_s: float,
    timezone_offset_h: float,
    horizon_s: float,
    fixed_local_hour: int = -1,
) -> float:
    """Time of the next call after ``after_s`` (simulation seconds), or ``inf``.

    Thinning: candidates arrive at the peak rate and each is kept with the share of the
    peak rate of its local hour (``fixed_local_hour`` when it is 0–23). ``horizon_s`` ends
    the search (the end of the run).
    """
    if peak_calls_per_hour <= 0.0:
        return float("inf")
    mean_gap_s = 3600.0 / peak_calls_per_hour
    shape = SHAPE[building]
    t = after_s
    while True:
        t += float(rng.exponential(mean_gap_s))
        if t >= horizon_s:
            return float("inf")
        hour = (
            fixed_local_hour
            if fixed_local_hour >= 0
            else local_hour(start_epoch_s + t, timezone_offset_h)
        )
        if rng.random() < shape[hour]:
            return t
