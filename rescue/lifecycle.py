"""The incident lifecycle, escalation ladder and delivery schedule: pure rules, no I/O.

States (the plan's disposition states: occurred → responded → arrived → completed, or a
false alarm)::

    open ──acknowledge──▶ acknowledged ──arrive──▶ arrived ──resolve──▶ resolved
      │ └────────────────arrive──────────────────▶   │
      └──────────── resolve / false-alarm (from any active state) ──────▶ false_alarm

An incident is *active* until it is resolved or marked a false alarm; one active incident
per elevator and fault type exists at a time (the database enforces it).
"""

from __future__ import annotations

import datetime as dt
import email.utils
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from detectors.alerts import TRAPPED_TYPES, Alert

State = Literal["open", "acknowledged", "arrived", "resolved", "false_alarm"]
ACTIVE_STATES: Final = ("open", "acknowledged", "arrived")

#: action (as the rescue platform names it in the URL) → (new state, states it may follow)
ACTIONS: Final[dict[str, tuple[State, frozenset[str]]]] = {
    "acknowledge": ("acknowledged", frozenset({"open"})),
    "arrive": ("arrived", frozenset({"open", "acknowledged"})),
    "resolve": ("resolved", frozenset(ACTIVE_STATES)),
    "false-alarm": ("false_alarm", frozenset(ACTIVE_STATES)),
}

#: Webhook event type for each state an action leads to.
EVENT_FOR_STATE: Final[dict[str, str]] = {
    "acknowledged": "incident.acknowledged",
    "arrived": "incident.arrived",
    "resolved": "incident.resolved",
    "false_alarm": "incident.false_alarm",
}

#: A measured arrival time (``arrive`` with ``arrived_at``) may be this far ahead of our
#: clock (the rescuer's device and ours disagree a little); further ahead, it is refused.
ARRIVAL_CLOCK_SKEW_S: Final = 30

#: The plan's four response levels, lowest first: the maintenance enterprise, then the
#: township/street, the district/county and the city.
ESCALATION_LEVELS: Final = ("enterprise", "street", "district", "city")

SEVERITY_RANK: Final = {"info": 0, "minor": 1, "major": 2, "critical": 3}


class IllegalTransition(ValueError):
    """An action the incident's current state does not allow."""


def next_state(state: str, action: str) -> State:
    """The state ``action`` leads to from ``state``.

    Raises
    ------
    IllegalTransition
        naming the action and the state, e.g. "cannot resolve: the incident is already
        resolved"; or the action is unknown.
    """
    if action not in ACTIONS:
        raise IllegalTransition(f"unknown action {action!r}; expected one of {sorted(ACTIONS)}")
    target, allowed = ACTIONS[action]
    if state not in allowed:
        already = "already " if state in ("resolved", "false_alarm") or state == target else ""
        raise IllegalTransition(
            f"cannot {action}: the incident is {already}{state.replace('_', ' ')}"
        )
    return target


def evidence_summary(evidence: Mapping[str, Any], limit: int = 300) -> str:
    """``key=value; …`` of the scalar evidence, for a dispatcher's screen."""
    parts = [
        f"{k}={v}"
        for k, v in evidence.items()
        if isinstance(v, str | int | float | bool) or v is None
    ]
    text = "; ".join(parts)
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class AlertDecision:
    """What one alert does to its elevator's incident of the alert's type.

    ``action`` is ``open`` (a new incident), ``update`` (a repeat of the active one),
    ``reopen`` (the condition of an incident resolved while it still held is alerted again),
    ``resolve`` (the condition that opened or last updated it cleared) or ``ignore``.
    """

    action: Literal["open", "update", "reopen", "resolve", "ignore"]
    event_type: str | None = None
    severity: str | None = None
    estimated_trapped: int | None = None
    note: str | None = None


def decide_alert(
    active: Mapping[str, Any] | None,
    alert: Alert,
    resolved_while_held: Mapping[str, Any] | None = None,
) -> AlertDecision:
    """The change ``alert`` makes, given the active incident of its elevator and type
    (``None`` when there is none): pure, so that the store only persists it.

    A raised alert opens an incident, or updates the active one: ``repeats`` counts it, and
    severity and the people trapped only ever rise. With no active incident, a raised alert
    reopens ``resolved_while_held`` — the latest incident of its elevator and type, when
    someone resolved it while its condition still held (no clearing of its last alert was
    seen) — instead of opening another. A cleared alert resolves the active incident it last
    updated; any other clear changes nothing.

    >>> from detectors.alerts import clear_alert, make_alert
    >>> raised = make_alert("3" * 20, "trapped_between_levels", 0, 30_000, {},
    ...                     estimated_trapped=2)
    >>> decide_alert(None, raised).action
    'open'
    >>> active = {"severity": "critical", "estimated_trapped": 3,
    ...           "details": {"last_alert_key": raised.alert_key}}
    >>> decide_alert(active, raised).estimated_trapped
    3
    >>> decide_alert(active, clear_alert(raised, 90_000, {"door": "open"})).action
    'resolve'
    >>> decide_alert(None, raised, resolved_while_held=active).event_type
    'incident.reopened'
    """
    if alert.state == "raised":
        current = active if active is not None else resolved_while_held
        if current is None:
            return AlertDecision("open", "incident.opened", alert.severity, alert.estimated_trapped)
        severity = max((current["severity"], alert.severity), key=lambda s: SEVERITY_RANK.get(s, 0))
        trapped = max(
            (v for v in (current["estimated_trapped"], alert.estimated_trapped) if v is not None),
            default=None,
        )
        if active is None:
            return AlertDecision(
                "reopen",
                "incident.reopened",
                severity,
                trapped,
                f"resolved while the condition still held; alerted again: {alert.alert_key}",
            )
        return AlertDecision(
            "update", "incident.updated", severity, trapped, f"repeated: {alert.alert_key}"
        )
    if active is not None and (active["details"] or {}).get("last_alert_key") == alert.alert_key:
        return AlertDecision(
            "resolve",
            "incident.resolved",
            note="condition cleared: " + evidence_summary(alert.evidence, 200),
        )
    return AlertDecision("ignore")


def is_trapping(fault_type: str) -> bool:
    """People are inside a car that cannot let them out."""
    return fault_type in TRAPPED_TYPES


def due_escalation(
    level: str, since: dt.datetime, now: dt.datetime, after_s: tuple[int, ...]
) -> str | None:
    """The level an unacknowledged incident should be at by ``now``, if above ``level``.

    ``after_s[i]`` is the time after ``since`` (when the incident was recorded) at which it
    goes to ``ESCALATION_LEVELS[i+1]``.
    A late check jumps straight to the level due (each step is still announced by the
    caller).
    """
    waited_s = (now - since).total_seconds()
    due = ESCALATION_LEVELS[0]
    for step, threshold_s in enumerate(after_s, start=1):
        if waited_s >= threshold_s:
            due = ESCALATION_LEVELS[step]
    if ESCALATION_LEVELS.index(due) > ESCALATION_LEVELS.index(level):
        return due
    return None


def overdue_arrival_level(
    level: str, since: dt.datetime, now: dt.datetime, arrival_target_s: int
) -> str | None:
    """The level an acknowledged trapping still without arrival goes to, by the plan's
    arrival rule: one above ``level`` once ``arrival_target_s`` has passed since ``since``;
    ``None`` before then, or when it is already at the top.

    >>> t0 = dt.datetime(2026, 12, 5, tzinfo=dt.UTC)
    >>> overdue_arrival_level("enterprise", t0, t0 + dt.timedelta(minutes=29), 1800) is None
    True
    >>> overdue_arrival_level("enterprise", t0, t0 + dt.timedelta(minutes=30), 1800)
    'street'
    >>> overdue_arrival_level("city", t0, t0 + dt.timedelta(hours=2), 1800) is None
    True
    """
    if (now - since).total_seconds() < arrival_target_s or level == ESCALATION_LEVELS[-1]:
        return None
    return ESCALATION_LEVELS[ESCALATION_LEVELS.index(level) + 1]


# -- delivery ------------------------------------------------------------------------------

Outcome = Literal["delivered", "retry", "auth_or_route", "refused"]

#: Answers that refuse the sender or the address rather than the message: a secret or token
#: rotated on one side only (401, 403), an endpoint moved or not deployed yet (404, 410).
#: An operator can put these right, and the message is still good, so they are retried for
#: a bounded time (``RetrySchedule.auth_retry_s``) and alerted on, not dead at once.
AUTH_OR_ROUTE_STATUSES: Final = frozenset({401, 403, 404, 410})


def classify_status(status: int) -> Outcome:
    """What an HTTP answer means for a delivery.

    Returns
    -------
    Outcome
        ``"delivered"`` for 2xx; ``"retry"`` for 408, 429 and 5xx; ``"auth_or_route"`` for
        :data:`AUTH_OR_ROUTE_STATUSES` (retried for a bounded time); ``"refused"`` for any
        other answer (400, 413, 422, …: the receiver will not take this message, so it is
        not retried).
    """
    if 200 <= status < 300:
        return "delivered"
    if status in (408, 429) or status >= 500:
        return "retry"
    if status in AUTH_OR_ROUTE_STATUSES:
        return "auth_or_route"
    return "refused"


def parse_retry_after(value: str | None, now: dt.datetime) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date).

    The value asked for, however large (``inf`` for an absurdly long number);
    :meth:`RetrySchedule.delay_s` caps it. ``None`` when absent or unreadable.
    """
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # "²" is a digit to isdigit, not to float()
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - now).total_seconds())


@dataclass(frozen=True)
class RetrySchedule:
    """Exponential backoff with full jitter, capped, and give-up ages.

    The n-th retry (n = 1, 2, …) waits a random time in ``[d/2, d]`` with
    ``d = min(cap_s, base_s * 2**(n-1))``. A ``Retry-After`` from the receiver is honoured
    when longer, up to ``cap_s``: a receiver cannot push a rescue message further out than
    the schedule's own slowest retry, and an absurd value (10**30 s, a date in year 9999)
    cannot overflow the next attempt's time.

    A delivery still failing ``max_age_s`` after it was created is dead; one refused for
    authentication or route (:data:`AUTH_OR_ROUTE_STATUSES`) is dead once ``auth_retry_s``
    old (or ``max_age_s``, whichever is shorter).
    """

    base_s: float
    cap_s: float
    max_age_s: float
    auth_retry_s: float = 3600.0

    def give_up_age_s(self, outcome: Outcome) -> float:
        """The age after which a delivery whose last attempt ended in ``outcome`` is dead."""
        if outcome == "auth_or_route":
            return min(self.auth_retry_s, self.max_age_s)
        return self.max_age_s

    def delay_s(self, attempt: int, retry_after_s: float | None, rng: random.Random) -> float:
        """Seconds to wait before retrying after attempt number ``attempt``; at most
        ``cap_s``."""
        # 2**64 times any base is past any cap, and 2.0**1024 would overflow a float
        # (a delivery retried for days reaches attempt 1,000)
        ceiling = min(self.cap_s, self.base_s * 2.0 ** min(max(0, attempt - 1), 64))
        delay = rng.uniform(ceiling / 2, ceiling)
        if retry_after_s is not None:
            delay = max(delay, min(retry_after_s, self.cap_s))
        return delay
