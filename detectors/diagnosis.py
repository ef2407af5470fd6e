"""Fault determination: for each alert type, its severity, GB/T 24476 code, a preliminary
cause and the handling a dispatcher proposes (the Lianyungang plan's "fault-determination
system that identifies the fault type, gives a preliminary cause and proposes handling").
"""

from __future__ import annotations

from typing import Final, Literal, NamedTuple

_Severity = Literal["critical", "major", "minor", "info"]

_RESCUE: Final = (
    "Dispatch rescue now (96333); reassure the passengers via the intercom and tell them not "
    "to force the doors; maintenance unit on site within 30 min (national benchmark, 15 min "
    "in urban areas where the city requires it); record responded → arrived → completed."
)


class Diagnosis(NamedTuple):
    """What the fault-determination table says about one alert type."""

    severity: _Severity
    gb_code: str | None
    probable_cause: str
    suggested_handling: str


DIAGNOSIS: Final[dict[str, Diagnosis]] = {
    "trapped_between_levels": Diagnosis(
        "critical",
        "11",
        "Car stopped between landings with passengers inside: safety circuit opened, drive "
        "or brake fault, or power loss during a run.",
        _RESCUE + " Release the passengers only after moving the car to a landing "
        "(manual brake release by a qualified person).",
    ),
    "trapped_at_level": Diagnosis(
        "critical",
        "11",
        "Car at a landing with passengers inside but the doors do not open: door operator, "
        "door lock or controller fault.",
        _RESCUE + " Try a remote door-open command if the terminal supports it.",
    ),
    "overspeed": Diagnosis(
        "critical",
        None,
        "Car ran at or above 115 % of rated speed: drive control or brake fault, traction "
        "loss; the overspeed governor should have tripped.",
        "Take the elevator out of service; check the overspeed governor, safety gear, brake "
        "and drive; inspection before return to service.",
    ),
    "overload": Diagnosis(
        "minor",
        None,
        "Load above 110 % of rated load: too many passengers or goods; if the car started, "
        "the load weighing device failed.",
        "Ask passengers to step out via the intercom/voice prompt; if it recurs, check the "
        "load weighing device and usage management.",
    ),
    "overtravel_top": Diagnosis(
        "critical",
        "09",
        "Car ran beyond the top landing (冲顶): brake or control fault, counterweight buffer.",
        "Take out of service; check brake, final limit switches and buffers; check for "
        "people inside and dispatch rescue if any.",
    ),
    "overtravel_bottom": Diagnosis(
        "critical",
        "10",
        "Car ran beyond the bottom landing (蹲底): brake or control fault, car buffer.",
        "Take out of service; check brake, final limit switches and buffers; check for "
        "people inside and dispatch rescue if any.",
    ),
    "door_open_while_running": Diagnosis(
        "critical",
        "01",
        "Door reported open while the car was moving: door lock contact bridged or failed, "
        "safety circuit fault or a door sensor fault.",
        "Take out of service immediately; inspect door locks, the safety circuit and any "
        "bypass; regulator notification.",
    ),
    "unintended_movement": Diagnosis(
        "critical",
        "05",
        "Car moved away from the landing with the doors open: brake or drive control fault.",
        "Take out of service; check for injured persons; inspect brake and the unintended "
        "car movement protection (UCMP) before return to service.",
    ),
    "stopped_outside_door_zone": Diagnosis(
        "major",
        "04",
        "Car stopped outside the unlocking zone: safety circuit opened, position loss, "
        "power loss or drive fault.",
        "Check for passengers (intercom, load); maintenance unit to re-level the car and "
        "find the cause.",
    ),
    "run_time_limiter": Diagnosis(
        "major",
        "06",
        "Motor run-time limiter tripped: the machine ran without the car moving as expected "
        "(traction slip, stalled car, brake not lifting).",
        "Out of service until a maintenance unit resets it; check traction, brake and drive.",
    ),
    "stopping_accuracy": Diagnosis(
        "minor",
        None,
        "Stopping accuracy beyond ±10 mm: leveling sensor drift, brake wear, rope stretch.",
        "Schedule maintenance: adjust leveling and brake at the next visit (within 15 days).",
    ),
    "leveling_accuracy": Diagnosis(
        "major",
        None,
        "Leveling accuracy beyond ±20 mm while loading: a trip hazard; re-leveling failed.",
        "Maintenance visit within 24 h; adjust leveling, check brake and re-leveling.",
    ),
    "power_loss": Diagnosis(
        "major",
        "41",
        "Main power off (or the car taken out of service): supply failure or tripped breaker.",
        "Check for passengers; if people are inside treat as a trapping; contact the user "
        "unit about the supply.",
    ),
    "alarm_button": Diagnosis(
        "major",
        "90",
        "Alarm button pressed in the car.",
        "Call the car via the intercom at once; if nobody answers or people are trapped, "
        "dispatch rescue.",
    ),
    "device_offline": Diagnosis(
        "minor",
        None,
        "No messages from the terminal: terminal power, network or SIM fault.",
        "Check the terminal's connectivity; if the car was in use when it went silent, "
        "call the user unit to check the car.",
    ),
    "clock_fault": Diagnosis(
        "minor",
        None,
        "The terminal's clock is off (lost NTP, reset RTC, wrong time zone): its sample "
        "times are far from when its messages arrive.",
        "No action for the car: the platform corrects the samples by the measured offset "
        "(evidence: offset_ms) or, beyond the limit, quarantines them. Ask the terminal's "
        "vendor or maintenance unit to resynchronise its clock (NTP).",
    ),
    "leveling_drift": Diagnosis(
        "minor",
        None,
        "Stopping offset drifting from its normal level: brake wear, rope stretch, leveling "
        "sensor shift; will become a leveling-accuracy fault.",
        "Schedule maintenance: check brake and leveling sensors at the next visit.",
    ),
    "door_operator_wear": Diagnosis(
        "minor",
        None,
        "Door opening/closing times growing: door operator, belt, rollers or sill wear.",
        "Schedule maintenance: service the door operator before door faults trap people.",
    ),
    "repeated_door_reopening": Diagnosis(
        "minor",
        None,
        "The doors reopened many times in one cycle: obstruction, light curtain or door "
        "operator fault.",
        "Check the light curtain and door operator; remind users not to hold the doors.",
    ),
    "trip_anomaly": Diagnosis(
        "info",
        None,
        "A trip unlike this elevator's (or its cohort's) usual trips.",
        "Review the trip in Grafana; no immediate action.",
    ),
    "online_anomaly": Diagnosis(
        "info",
        None,
        "A trip or a minute of running unlike what the online model learnt of this elevator "
        "(its features jointly improbable: several a little off, or one far off).",
        "Review the trip or minute in Grafana (its score on the elevator board); repeated, "
        "have the car checked at the next maintenance visit.",
    ),
    "maintenance_overdue": Diagnosis(
        "minor",
        None,
        "No maintenance visit (inspection mode, GB/T 24476 service mode 2 or event 43) seen "
        "for longer than the maintenance interval (TSG T5002-2017: at least every 15 days).",
        "Ask the maintenance company for its record of the last visit; have the elevator "
        "maintained, and inspected if maintenance lapsed.",
    ),
    "sensor_stuck": Diagnosis(
        "minor",
        None,
        "A terminal sensor is frozen (evidence: sensors): its reading stays the same whatever "
        "the car does. A frozen speed reading is replaced by the position encoder's; a frozen "
        "load reading hides an overload and the number of people in a trapped car.",
        "Have the terminal's vendor or the maintenance unit check the sensor and its wiring at "
        "the next visit; until then overload is not monitored on this car.",
    ),
    "terminal_fault": Diagnosis(
        "major",
        None,
        "The terminal reported a GB/T 24476 fault code that the signals do not show.",
        "Check the fault code on site; the terminal's own reading is authoritative.",
    ),
}


class UnknownAlertType(KeyError):
    """An alert type missing from the diagnosis table."""


def diagnose(alert_type: str) -> Diagnosis:
    """The table's entry for ``alert_type``.

    Raises
    ------
    UnknownAlertType
        Naming the known types.
    """
    try:
        return DIAGNOSIS[alert_type]
    except KeyError:
        raise UnknownAlertType(
            f"{alert_type}: not in the diagnosis table (known: {', '.join(sorted(DIAGNOSIS))})"
        ) from None
