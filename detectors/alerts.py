"""The alert record every detector emits, and its companion on clearing.

An alert's ``alert_key`` is a natural key — elevator, type and the sample time at which the
condition began — so re-running detectors over the same messages (a replay, a restart from
a checkpoint) produces the same keys and downstream sinks drop the repeats. The clearing of
a condition is the same key with ``state="cleared"``: incidents resolve on it.
"""

from __future__ import annotations

import uuid
from typing import Any, Final, Literal

import msgspec

from .diagnosis import diagnose

Severity = Literal["critical", "major", "minor", "info"]
AlertState = Literal["raised", "cleared"]

#: Alert types for people inside a car that cannot get out.
TRAPPED_TYPES: Final = frozenset({"trapped_between_levels", "trapped_at_level"})
#: Namespace of :attr:`Alert.alert_id` (the worker's alert rows have always used it; migration
#: 0006 gave every stored alert and the dispatcher's record of applying it this one id).
ALERT_NAMESPACE: Final = uuid.UUID("5d1c8f7e-8a8e-4c55-9a49-7d3f3e0c2a11")


class Alert(msgspec.Struct, frozen=True, kw_only=True):
    """One detected fault or anomaly, or (``state="cleared"``) the end of one.

    Attributes
    ----------
    alert_key
        ``"{elevator_id}:{alert_type}:{condition_since_ms}"``: the same condition always
        gets the same key; its clearing carries the same key.
    elevator_id
        Registration code.
    alert_type
        snake_case type, a key of :data:`detectors.diagnosis.DIAGNOSIS`.
    gb_code
        GB/T 24476 fault/event code where one names the condition, else None.
    severity
        ``critical`` (people at risk now), ``major`` (out of service / unsafe), ``minor``
        (degraded), ``info``.
    condition_since_ms
        Sample time at which the condition first held in the signals, Unix ms.
    raised_at_ms
        Sample (stream) time at which the detector became sure — or, for a clearing, saw
        the condition end — Unix ms.
    evidence
        JSON-able: the signals, window and limits behind the decision.
    probable_cause, suggested_handling
        From the diagnosis table, dispatch-ready.
    estimated_trapped
        People inside (load / 75 kg, at least 1 when presence is sensed); trapped types only.
    state
        ``"raised"`` or ``"cleared"``.
    """

    alert_key: str
    elevator_id: str
    alert_type: str
    gb_code: str | None
    severity: Severity
    condition_since_ms: int
    raised_at_ms: int
    evidence: dict[str, Any] = {}
    probable_cause: str = ""
    suggested_handling: str = ""
    estimated_trapped: int | None = None
    state: AlertState = "raised"

    @property
    def alert_id(self) -> uuid.UUID:
        """The alert's one id: uuid5 of ``"{alert_key}|{state}"``, so a replay or a
        redelivery of the same alert has the same id wherever it is stored.

        >>> a = make_alert("32070000000000000001", "overload", 1795000000000, 1795000001000, {})
        >>> a.alert_id == msgspec.json.decode(msgspec.json.encode(a), type=Alert).alert_id
        True
        >>> a.alert_id == clear_alert(a, 1795000009000, {}).alert_id
        False
        """
        return uuid.uuid5(ALERT_NAMESPACE, f"{self.alert_key}|{self.state}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types."""
        out: dict[str, Any] = msgspec.to_builtins(self)
        return out


def alert_key(elevator_id: str, alert_type: str, condition_since_ms: int) -> str:
    """The natural key of a condition."""
    return f"{elevator_id}:{alert_type}:{condition_since_ms}"


def make_alert(
    elevator_id: str,
    alert_type: str,
    condition_since_ms: int,
    raised_at_ms: int,
    evidence: dict[str, Any],
    *,
    estimated_trapped: int | None = None,
    gb_code: str | None = None,
) -> Alert:
    """An alert with severity, GB code, cause and handling filled from the diagnosis table.

    ``gb_code`` overrides the table's (e.g. a terminal code behind a generic type).
    """
    d = diagnose(alert_type)
    return Alert(
        alert_key=alert_key(elevator_id, alert_type, condition_since_ms),
        elevator_id=elevator_id,
        alert_type=alert_type,
        gb_code=gb_code if gb_code is not None else d.gb_code,
        severity=d.severity,
        condition_since_ms=condition_since_ms,
        raised_at_ms=raised_at_ms,
        evidence=evidence,
        probable_cause=d.probable_cause,
        suggested_handling=d.suggested_handling,
        estimated_trapped=estimated_trapped,
    )


def clear_alert(raised: Alert, cleared_at_ms: int, evidence: dict[str, Any]) -> Alert:
    """The ``cleared`` companion of ``raised``: same key, ``raised_at_ms`` = when it ended."""
    return msgspec.structs.replace(
        raised, raised_at_ms=cleared_at_ms, evidence=evidence, state="cleared"
    )
