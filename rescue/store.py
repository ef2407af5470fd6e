"""Incidents in TimescaleDB: every change in one transaction with its outbox rows and ledger
entries (the transactional outbox), so a change is either recorded, queued for every
endpoint and ledgered — or none of these.

Each function takes an open psycopg connection (autocommit off) and runs one transaction.
The dispatcher (rescue/dispatcher.py) calls them from a thread; `tianyan incidents`
and `tianyan audit` call them directly.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import psycopg
from psycopg.rows import dict_row

from detectors.alerts import TRAPPED_TYPES, Alert
from streams.sinks.alerts import insert_alerts

from .lifecycle import (
    ACTIVE_STATES,
    ARRIVAL_CLOCK_SKEW_S,
    ESCALATION_LEVELS,
    EVENT_FOR_STATE,
    IllegalTransition,
    decide_alert,
    due_escalation,
    evidence_summary,
    is_trapping,
    next_state,
    overdue_arrival_level,
)
from .routing import Routing

#: Namespace of incident ids (uuid5 of the opening alert's key) and webhook ids.
NAMESPACE: Final = uuid.UUID("6f1d7a52-3c1e-4d63-9a51-0b7e8c4e2a10")
NOTIFY_CHANNEL: Final = "tianyan_outbox"
_ACTIVE = list(ACTIVE_STATES)

#: Columns of an incident snapshot as the ledger keeps it (and `audit verify` compares).
SNAPSHOT_COLUMNS: Final = (
    "incident_id",
    "elevator_id",
    "fault_type",
    "gb_code",
    "severity",
    "state",
    "escalation_level",
    "estimated_trapped",
    "opened_at",
    "acknowledged_at",
    "arrived_at",
    "closed_at",
    "escalated_at",
    "arrival_s",
    "arrival_on_time",
    "closed_by",
    "repeats",
)
EVENT_COLUMNS: Final = (
    "event_id",
    "incident_id",
    "time",
    "event_type",
    "from_state",
    "to_state",
    "actor",
    "note",
)


@dataclass(frozen=True)
class DispatchConfig:
    """What an incident change needs to know beyond the database.

    ``endpoints`` are the rescue platform's (by name); the maintenance company's and each
    response level's are in ``maintenance_endpoints`` and ``level_endpoints``
    (:class:`rescue.routing.Routing` says which incident goes where).
    """

    endpoints: tuple[str, ...]
    escalation_after_s: tuple[int, ...]
    arrival_target_s: int
    evidence_window_s: int = 300
    #: A trapping whose terminal has not answered the reassurance command this long after
    #: the incident was recorded is reported ``reassurance.unanswered``; 0: never.
    reassurance_answer_s: int = 0
    #: Names the secret this dispatcher signs with (``delivery.signing_key_id``); outbox rows
    #: carry it, and only a dispatcher holding the same secret claims them.
    signing_key_id: str | None = None
    #: The routing policy: these alert types, and any alert at or above this severity, go
    #: to the rescue platform; every other incident only to the maintenance endpoints.
    rescue_types: frozenset[str] = TRAPPED_TYPES
    rescue_min_severity: str = "critical"
    maintenance_endpoints: tuple[str, ...] = ()
    #: ``(level, district or None, endpoint name)``
    level_endpoints: tuple[tuple[str, str | None, str], ...] = ()

    @property
    def routing(self) -> Routing:
        return Routing(
            rescue_types=self.rescue_types,
            rescue_min_severity=self.rescue_min_severity,
            rescue=self.endpoints,
            maintenance=self.maintenance_endpoints,
            levels=self.level_endpoints,
        )


@dataclass(frozen=True)
class Change:
    """One recorded incident change (an ``incident_event`` row)."""

    incident_id: uuid.UUID
    event_id: int
    event_type: str
    elevator_id: str
    fault_type: str
    estimated_trapped: int | None


class NotFound(LookupError):
    """No incident has that id."""


def jsonable(value: Any) -> Any:
    """Database values as the ledger and the payload write them (UTC ISO times, str ids)."""
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat(timespec="microseconds")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def snapshot(row: dict[str, Any], columns: Iterable[str]) -> dict[str, Any]:
    return {c: jsonable(row[c]) for c in columns}


def _utc_ms(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)


# -- payload -------------------------------------------------------------------------------


def build_payload(
    incident: dict[str, Any], event: dict[str, Any], elevator: dict[str, Any] | None
) -> dict[str, Any]:
    """The webhook body: Standard Webhooks' ``{type, timestamp, data}`` envelope.

    README § "The rescue webhook" documents every field.
    """
    details = incident["details"] or {}
    evidence = details.get("evidence") or {}
    e = elevator or {}
    opened = incident["opened_at"]
    return {
        "type": event["event_type"],
        "timestamp": jsonable(event["time"]),
        "data": {
            "incident_id": str(incident["incident_id"]),
            "event_id": event["event_id"],
            "state": incident["state"],
            "previous_state": event["from_state"],
            "escalation_level": incident["escalation_level"],
            "actor": event["actor"],
            "note": event["note"],
            "elevator": {
                "registration_code": incident["elevator_id"],
                "address": e.get("address"),
                "district": e.get("district"),
                "latitude": e.get("latitude"),
                "longitude": e.get("longitude"),
                "building_type": e.get("building_type"),
                "user_unit": e.get("user_unit"),
                "maintenance_company": e.get("maintenance_company"),
                "maintenance_contact": e.get("maintenance_contact"),
            },
            "route": details.get("route", "rescue"),
            "car": {
                # where the car stood when the alert was raised (the alert's evidence)
                "floor": evidence.get("floor"),
                "door_zone": evidence.get("door_zone"),
                "door": evidence.get("door"),
                "position_m": evidence.get("position_m"),
                "at_ms": evidence.get("at_ms"),
            },
            "fault": {
                "type": incident["fault_type"],
                "gb_code": incident["gb_code"],
                "severity": incident["severity"],
                "trapped": is_trapping(incident["fault_type"]),
                "estimated_trapped": incident["estimated_trapped"],
                "evidence_summary": details.get("evidence_summary", ""),
                "evidence": details.get("evidence", {}),
                "probable_cause": details.get("probable_cause", ""),
                "suggested_handling": details.get("suggested_handling", ""),
                "alert_key": details.get("last_alert_key"),
                "repeats": incident["repeats"],
            },
            "times": {
                "condition_since": details.get("condition_since"),
                "opened_at": jsonable(opened),
                "acknowledged_at": jsonable(incident["acknowledged_at"]),
                "arrived_at": jsonable(incident["arrived_at"]),
                "closed_at": jsonable(incident["closed_at"]),
                "arrival_due_at": jsonable(
                    opened + dt.timedelta(seconds=incident["arrival_target_s"])
                ),
            },
            "arrival": {
                "target_s": incident["arrival_target_s"],
                "arrival_s": incident["arrival_s"],
                "on_time": incident["arrival_on_time"],
            },
        },
    }


# -- recording a change --------------------------------------------------------------------


#: Ledger entries ``(entry_type, entity_id, payload JSON)``.
LedgerEntries = list[tuple[str, str, str]]


@dataclass
class _Writes:
    """What a transaction writes at its end, together: statements batched by
    ``executemany`` (one round trip each), one NOTIFY, and the ledger last."""

    ledger: LedgerEntries = field(default_factory=list)
    #: Facts the transaction wrote, by table: their keys (ledgered by ``ledger_facts``).
    facts: dict[str, set[str]] = field(default_factory=dict)
    evidence: list[tuple[Any, ...]] = field(default_factory=list)
    alert_links: list[tuple[Any, ...]] = field(default_factory=list)
    notify: bool = False


def _append_ledger(cur: psycopg.Cursor[Any], entries: LedgerEntries) -> None:
    """Append entries to the ledger.

    ``ledger_append`` takes the ledger's lock for the rest of the transaction, and every
    writer of incidents and deliveries waits on it: call this last, just before commit,
    so that nothing slow (evidence copies, device commands) runs while the lock is held.
    """
    if entries:
        types, ids, payloads = (list(column) for column in zip(*entries, strict=True))
        cur.execute(
            "SELECT ledger_append_many(%s, %s, %s::text[]::jsonb[])", (types, ids, payloads)
        )


def _append_facts(cur: psycopg.Cursor[Any], facts: dict[str, set[str]]) -> None:
    """Ledger the content digest of each fact written (``ledger_facts``): ``audit verify``
    recomputes it, so a row edited, deleted or inserted behind the pipeline's back is named.
    Like :func:`_append_ledger`, it takes the ledger's lock: call it last."""
    for table, keys in sorted(facts.items()):
        if keys:
            cur.execute("SELECT ledger_facts(%s, %s)", (table, sorted(keys)))


def _flush_writes(cur: psycopg.Cursor[Any], writes: _Writes) -> None:
    """The transaction's deferred writes; the ledger's last."""
    if writes.evidence:
        cur.executemany(
            "INSERT INTO evidence_request (incident_id, elevator_id, time_from, time_to,"
            " requested_at) VALUES (%s, %s, %s, %s, clock_timestamp())",
            writes.evidence,
        )
    if writes.alert_links:
        cur.executemany(
            "UPDATE incident_alert SET incident_id = %s WHERE alert_id = %s",
            writes.alert_links,
        )
    if writes.notify:
        cur.execute(f"NOTIFY {NOTIFY_CHANNEL}")
    _append_ledger(cur, writes.ledger)
    _append_facts(cur, writes.facts)


def _record_event(
    cur: psycopg.Cursor[dict[str, Any]],
    incident: dict[str, Any],
    writes: _Writes,
    *,
    event_type: str,
    at: dt.datetime,
    from_state: str | None,
    actor: str,
    note: str | None,
    config: DispatchConfig,
    source_time: dt.datetime,
) -> Change:
    """incident_event + one outbox row per endpoint, in the caller's transaction; the
    ledger entry and the NOTIFY go to ``writes``, which the caller flushes last."""
    cur.execute(
        "INSERT INTO incident_event (incident_id, time, event_type, from_state, to_state,"
        " actor, note) VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING *",
        (incident["incident_id"], at, event_type, from_state, incident["state"], actor, note),
    )
    event = cur.fetchone()
    assert event is not None
    writes.ledger.append(
        (
            "incident_event",
            str(incident["incident_id"]),
            json.dumps(
                {
                    "event": snapshot(event, EVENT_COLUMNS),
                    "incident": snapshot(incident, SNAPSHOT_COLUMNS),
                }
            ),
        )
    )
    routing = config.routing
    targets: tuple[str, ...] = ()
    if routing.all_endpoints:
        cur.execute(
            "SELECT * FROM elevator WHERE registration_code = %s", (incident["elevator_id"],)
        )
        elevator = cur.fetchone()
        targets = routing.endpoints_for(
            (incident["details"] or {}).get("route", "rescue"),
            incident["escalation_level"],
            elevator["district"] if elevator is not None else None,
        )
    if targets:
        payload = json.dumps(build_payload(incident, event, elevator))
        webhook_id = "msg_" + uuid.uuid5(NAMESPACE, f"event:{event['event_id']}").hex
        cur.executemany(
            "INSERT INTO webhook_delivery (webhook_id, endpoint, incident_id, event_type,"
            " payload, created_at, next_attempt_at, source_time, signing_key_id)"
            " VALUES (%s, %s, %s, %s, %s, now(), now(), %s, %s) RETURNING delivery_id",
            [
                (
                    webhook_id,
                    url,
                    incident["incident_id"],
                    event_type,
                    payload,
                    source_time,
                    config.signing_key_id,
                )
                for url in targets
            ],
            returning=True,
        )
        deliveries = writes.facts.setdefault("webhook_delivery", set())
        while True:
            deliveries.update(str(row["delivery_id"]) for row in cur.fetchall())
            if not cur.nextset():
                break
        writes.notify = True
    writes.facts.setdefault("incident", set()).add(str(incident["incident_id"]))
    return Change(
        incident["incident_id"],
        event["event_id"],
        event_type,
        incident["elevator_id"],
        incident["fault_type"],
        incident["estimated_trapped"],
    )


def apply_alert(
    conn: psycopg.Connection[Any],
    alert: Alert,
    config: DispatchConfig,
    *,
    received_at: dt.datetime,
    before_commit: Callable[[list[Change]], None] | None = None,
) -> list[Change]:
    """Fold one alert into the incidents: :func:`apply_alerts` of one."""
    return apply_alerts(conn, [(alert, received_at)], config, before_commit=before_commit)


def apply_alerts(
    conn: psycopg.Connection[Any],
    alerts: Sequence[tuple[Alert, dt.datetime]],
    config: DispatchConfig,
    *,
    before_commit: Callable[[list[Change]], None] | None = None,
) -> list[Change]:
    """Fold ``(alert, received_at)`` pairs, in order, into the incidents, in one transaction;
    a repeat of an applied alert changes nothing.

    Each alert is stored once, under its one id (``alert``; the worker has usually stored
    it already, and then nothing is written), and its application is recorded by that id
    (``incident_alert``). A raised alert opens an incident for (elevator, alert type), or
    updates the active one (``repeats``, severity and people trapped only ever rise). A
    cleared alert resolves the active incident it last updated (actor ``detector``).
    ``before_commit`` runs inside the
    transaction with the changes (the device commands are published there: if that fails,
    nothing is recorded and the alerts are applied again). One transaction for a batch is
    one commit for many alerts: a district's burst is applied at hundreds per second.
    """
    changes: list[Change] = []
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        writes = _Writes()
        # First, all at once: an alert whose row the worker has not written (it was refused,
        # or the alert was replayed or published by something else) is not lost here.
        insert_alerts(cur, [alert for alert, _ in alerts])
        writes.facts["alert"] = {str(alert.alert_id) for alert, _ in alerts}
        for alert, received_at in alerts:
            changes += _apply_one(cur, alert, config, received_at, writes)
        if changes and before_commit is not None:
            before_commit(changes)
        _flush_writes(cur, writes)
    return changes


def _apply_one(
    cur: psycopg.Cursor[dict[str, Any]],
    alert: Alert,
    config: DispatchConfig,
    received_at: dt.datetime,
    writes: _Writes,
) -> list[Change]:
    cur.execute(
        "INSERT INTO incident_alert (alert_id, applied_at) VALUES (%s, clock_timestamp())"
        " ON CONFLICT DO NOTHING RETURNING alert_id",
        (alert.alert_id,),
    )
    if cur.fetchone() is None:
        return []
    writes.facts.setdefault("incident_alert", set()).add(str(alert.alert_id))
    at = _utc_ms(alert.raised_at_ms)
    cur.execute(
        "SELECT * FROM incident WHERE elevator_id = %s AND fault_type = %s"
        " AND state = ANY(%s) FOR UPDATE",
        (alert.elevator_id, alert.alert_type, _ACTIVE),
    )
    active = cur.fetchone()
    resolved_while_held = None
    if active is None and alert.state == "raised":
        resolved_while_held = _resolved_while_held(cur, alert.elevator_id, alert.alert_type)
    decision = decide_alert(active, alert, resolved_while_held)
    details = {
        "last_alert_key": alert.alert_key,
        "condition_since": jsonable(_utc_ms(alert.condition_since_ms)),
        "evidence": alert.evidence,
        "evidence_summary": evidence_summary(alert.evidence),
        "probable_cause": alert.probable_cause,
        "suggested_handling": alert.suggested_handling,
    }
    assert decision.severity is not None or decision.action in ("resolve", "ignore")
    if decision.action in ("open", "update", "reopen"):
        route = config.routing.route(alert.alert_type, decision.severity or alert.severity)
        current = active or resolved_while_held
        if current is not None and (current["details"] or {}).get("route", "rescue") == "rescue":
            route = "rescue"  # a route only ever rises, like the severity that sets it
        details["route"] = route
    if decision.action == "open":
        cur.execute(
            "INSERT INTO incident (incident_id, elevator_id, fault_type, gb_code, severity,"
            " state, estimated_trapped, opened_at, updated_at, details, alert_key,"
            " last_alert_at, arrival_target_s)"
            " VALUES (%s, %s, %s, %s, %s, 'open', %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (incident_id) DO NOTHING RETURNING *",
            (
                uuid.uuid5(NAMESPACE, alert.alert_key),
                alert.elevator_id,
                alert.alert_type,
                alert.gb_code,
                decision.severity,
                decision.estimated_trapped,
                at,
                at,
                json.dumps(details),
                alert.alert_key,
                at,
                config.arrival_target_s,
            ),
        )
    elif decision.action in ("update", "reopen"):
        # a repeat of the incident's condition; a reopen also sets it open again, and its
        # escalation counts again from now (wall clock), as for a new incident
        reopen = decision.action == "reopen"
        target = resolved_while_held if reopen else active
        assert target is not None
        if reopen:
            details = {**details, "reopened_at": jsonable(dt.datetime.now(dt.UTC))}
        cur.execute(
            "UPDATE incident SET"
            + (" state = 'open', closed_at = NULL, closed_by = NULL," if reopen else "")
            + " repeats = repeats + 1, severity = %s, estimated_trapped = %s,"
            " last_alert_at = %s, updated_at = %s, details = details || %s"
            " WHERE incident_id = %s RETURNING *",
            (
                decision.severity,
                decision.estimated_trapped,
                at,
                at,
                json.dumps(details),
                target["incident_id"],
            ),
        )
    elif decision.action == "resolve":
        assert active is not None
        cur.execute(
            "UPDATE incident SET state = 'resolved', closed_at = %s, closed_by = 'detector',"
            " updated_at = %s WHERE incident_id = %s RETURNING *",
            (at, at, active["incident_id"]),
        )
    else:
        return []
    incident = cur.fetchone()
    if incident is None:  # this alert opened an incident before, since closed
        return []
    assert decision.event_type is not None
    changes = [
        _record_event(
            cur,
            incident,
            writes,
            event_type=decision.event_type,
            at=at,
            from_state=active["state"]
            if active is not None
            else resolved_while_held["state"]
            if resolved_while_held is not None
            else None,
            actor="detector",
            note=decision.note,
            config=config,
            source_time=received_at,
        )
    ]
    if changes and changes[0].event_type in (
        "incident.opened",
        "incident.reopened",
        "incident.resolved",
    ):
        # The raw samples around it, kept with the incident past raw retention: requested
        # here, copied by the dispatcher outside this transaction (copy_requested_evidence).
        window = dt.timedelta(seconds=config.evidence_window_s)
        writes.evidence.append(
            (
                changes[0].incident_id,
                alert.elevator_id,
                _utc_ms(alert.condition_since_ms) - window,
                at + window,
            )
        )
    if changes:
        writes.alert_links.append((changes[0].incident_id, alert.alert_id))
    return changes


def _resolved_while_held(
    cur: psycopg.Cursor[dict[str, Any]], elevator_id: str, fault_type: str
) -> dict[str, Any] | None:
    """The latest incident of ``elevator_id`` and ``fault_type``, locked, if someone (not
    the detector) resolved it and the condition it last alerted on has not cleared since."""
    cur.execute(
        "SELECT * FROM incident WHERE elevator_id = %s AND fault_type = %s"
        " ORDER BY opened_at DESC, incident_id DESC LIMIT 1 FOR UPDATE",
        (elevator_id, fault_type),
    )
    latest = cur.fetchone()
    if latest is None or latest["state"] != "resolved" or latest["closed_by"] == "detector":
        return None
    cur.execute(
        "SELECT 1 FROM alert WHERE alert_key = %s AND state = 'cleared'",
        ((latest["details"] or {}).get("last_alert_key"),),
    )
    return latest if cur.fetchone() is None else None


def copy_requested_evidence(conn: psycopg.Connection[Any], limit: int = 100) -> tuple[int, int]:
    """Make up to ``limit`` requested evidence copies, oldest first, in one transaction that
    also takes the requests off the queue; returns (requests done, samples copied).

    Samples still in flight when an incident opened are caught by the copy at resolution
    (each copy is idempotent on incident, elevator and time).
    """
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(
            "DELETE FROM evidence_request WHERE request_id IN (SELECT request_id FROM"
            " evidence_request ORDER BY request_id LIMIT %s FOR UPDATE SKIP LOCKED)"
            " RETURNING incident_id, elevator_id, time_from, time_to",
            (limit,),
        )
        requests = cur.fetchall()
        copied = 0
        for request in requests:
            cur.execute("SELECT copy_incident_evidence(%s, %s, %s, %s)", request)
            row = cur.fetchone()
            copied += int(row[0]) if row else 0
        _append_facts(cur, {"evidence_sample": {str(request[0]) for request in requests}})
    return len(requests), copied


@dataclass(frozen=True)
class ActionResult:
    """The answer to an action request: an HTTP status and a JSON body."""

    status: int
    body: dict[str, Any]


def apply_action(
    conn: psycopg.Connection[Any],
    incident_id: str,
    action: str,
    config: DispatchConfig,
    *,
    actor: str,
    note: str | None,
    request_id: str | None,
    now: dt.datetime,
    request_sha256: str | None = None,
    arrived_at: dt.datetime | None = None,
) -> ActionResult:
    """Acknowledge, report arrival, resolve or mark a false alarm — from the rescue platform.

    ``arrived_at`` (``arrive`` only) is the arrival time measured on site; the time of the
    request when absent. 422 when it is more than ``ARRIVAL_CLOCK_SKEW_S`` ahead of ``now``
    or before the incident opened.
    404 for an unknown incident, 409 for a change its state does not allow (nothing is
    changed). ``request_id`` is an idempotency key scoped to (incident, action): the same
    request re-sent with it gets the first answer again; another request (its
    ``request_sha256`` differs) under it is refused with 422.
    """
    try:
        key = uuid.UUID(incident_id)
    except ValueError:
        return ActionResult(404, {"error": f"no incident {incident_id!r}: not an incident id"})
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        # The incident's lock first: two requests with one key are answered one after the other.
        cur.execute("SELECT * FROM incident WHERE incident_id = %s FOR UPDATE", (key,))
        current = cur.fetchone()
        if current is None:
            return ActionResult(404, {"error": f"no incident {incident_id}"})
        if request_id is not None:
            cur.execute(
                "SELECT request_sha256, response FROM incident_action"
                " WHERE incident_id = %s AND action = %s AND request_id = %s",
                (key, action, request_id),
            )
            seen = cur.fetchone()
            if seen is not None and seen["request_sha256"] not in (None, request_sha256):
                return ActionResult(
                    422,
                    {
                        "error": f"Idempotency-Key {request_id!r} was used for another request"
                        f" to {action} this incident (another body): use a new key"
                    },
                )
            if seen is not None:
                return ActionResult(200, {**seen["response"], "duplicate": True})
        try:
            state = next_state(current["state"], action)
        except IllegalTransition as e:
            return ActionResult(
                409, {"error": str(e), "incident_id": incident_id, "state": current["state"]}
            )
        if arrived_at is not None:
            if action != "arrive":
                return ActionResult(400, {"error": f"arrived_at is for arrive, not {action}"})
            if arrived_at > now + dt.timedelta(seconds=ARRIVAL_CLOCK_SKEW_S):
                return ActionResult(
                    422,
                    {
                        "error": f"arrived_at {arrived_at.isoformat()} is in the future (now"
                        f" {now.isoformat(timespec='seconds')}; {ARRIVAL_CLOCK_SKEW_S} s of"
                        " clock difference allowed)"
                    },
                )
            if arrived_at < current["opened_at"]:
                return ActionResult(
                    422,
                    {
                        "error": f"arrived_at {arrived_at.isoformat()} is before the incident"
                        f" opened ({jsonable(current['opened_at'])})"
                    },
                )
        arrival = arrived_at or now
        sets = ["state = %s", "updated_at = %s"]
        params: list[Any] = [state, now]
        if state == "acknowledged" or (current["acknowledged_at"] is None and state == "arrived"):
            sets.append("acknowledged_at = %s")
            params.append(arrival if state == "arrived" else now)  # never after the arrival
        if state == "arrived":
            arrival_s = (arrival - current["opened_at"]).total_seconds()
            sets += ["arrived_at = %s", "arrival_s = %s", "arrival_on_time = %s"]
            params += [arrival, arrival_s, arrival_s <= current["arrival_target_s"]]
        if state in ("resolved", "false_alarm"):
            sets += ["closed_at = %s", "closed_by = %s"]
            params += [now, actor]
        cur.execute(
            f"UPDATE incident SET {', '.join(sets)} WHERE incident_id = %s RETURNING *",
            (*params, key),
        )
        incident = cur.fetchone()
        assert incident is not None
        writes = _Writes()
        change = _record_event(
            cur,
            incident,
            writes,
            event_type=EVENT_FOR_STATE[state],
            at=now,
            from_state=current["state"],
            actor=actor,
            note=note,
            config=config,
            source_time=now,
        )
        body = {
            "incident_id": incident_id,
            "state": state,
            "previous_state": current["state"],
            "event_id": change.event_id,
            "arrived_at": jsonable(incident["arrived_at"]),
            "arrival_s": incident["arrival_s"],
            "arrival_on_time": incident["arrival_on_time"],
        }
        if request_id is not None:
            cur.execute(
                "INSERT INTO incident_action (request_id, incident_id, action, actor,"
                " received_at, response, request_sha256) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (request_id, key, action, actor, now, json.dumps(body), request_sha256),
            )
            writes.facts["incident_action"] = {request_id}
        _flush_writes(cur, writes)
        return ActionResult(200, body)


#: A signed request's webhook-id is kept this long: longer than the signature's tolerance
#: (Standard Webhooks: 5 minutes either way), after which it could not verify again anyway.
NONCE_KEPT_S: Final = 600


def first_sight(conn: psycopg.Connection[Any], webhook_id: str) -> bool:
    """Store a signed request's ``webhook_id``; False when it was seen before (a replay).
    Ids too old to verify again are forgotten on the way."""
    with conn.transaction():
        conn.execute(
            "DELETE FROM action_nonce WHERE seen_at < now() - make_interval(secs => %s)",
            (NONCE_KEPT_S,),
        )
        row = conn.execute(
            "INSERT INTO action_nonce (webhook_id) VALUES (%s) ON CONFLICT DO NOTHING"
            " RETURNING webhook_id",
            (webhook_id,),
        ).fetchone()
    return row is not None


def escalate_due(
    conn: psycopg.Connection[Any], config: DispatchConfig, now: dt.datetime
) -> list[Change]:
    """Raise every trapping incident routed to the rescue platform that waits too long to
    the response level its age calls for; each step is its own event (and webhook), and
    the new level's endpoints are told from then on.

    - Unacknowledged: the level ``config.escalation_after_s`` calls for.
    - Acknowledged but no arrival ``arrival_target_s`` after it was recorded (the plan's
      arrival rule): one level up, once (``details.arrival_overdue_at``).

    The age is wall-clock time since the dispatcher recorded the incident (when the rescue
    platform was first told) or last reopened it, not since ``opened_at``, which is stream
    time: a replayed or late-arriving trapping gets the full time to be answered, like any
    other.
    """
    changes: list[Change] = []
    writes = _Writes()
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT i.*, greatest(a.applied_at, (i.details->>'reopened_at')::timestamptz)"
            " AS recorded_at FROM incident i"
            " JOIN alert r ON r.alert_key = i.alert_key AND r.state = 'raised'"
            " JOIN incident_alert a ON a.alert_id = r.alert_id"
            " WHERE i.state IN ('open', 'acknowledged') AND i.fault_type = ANY(%s)"
            " AND coalesce(i.details->>'route', 'rescue') = 'rescue'"
            " AND i.escalation_level <> 'city' FOR UPDATE OF i SKIP LOCKED",
            (sorted(TRAPPED_TYPES),),
        )
        for current in cur.fetchall():
            if current["state"] == "acknowledged":
                if (current["details"] or {}).get("arrival_overdue_at") is None and (
                    level := overdue_arrival_level(
                        current["escalation_level"],
                        current["recorded_at"],
                        now,
                        current["arrival_target_s"],
                    )
                ):
                    changes.append(
                        _escalate_overdue_arrival(cur, current, level, now, config, writes)
                    )
                continue
            due = due_escalation(
                current["escalation_level"],
                current["recorded_at"],
                now,
                config.escalation_after_s,
            )
            if due is None:
                continue
            level_now = current["escalation_level"]
            for level in ESCALATION_LEVELS[ESCALATION_LEVELS.index(level_now) + 1 :]:
                cur.execute(
                    "UPDATE incident SET escalation_level = %s, escalated_at = %s, updated_at = %s"
                    " WHERE incident_id = %s RETURNING *",
                    (level, now, now, current["incident_id"]),
                )
                incident = cur.fetchone()
                assert incident is not None
                changes.append(
                    _record_event(
                        cur,
                        incident,
                        writes,
                        event_type="incident.escalated",
                        at=now,
                        from_state=incident["state"],
                        actor="dispatcher",
                        note=f"unacknowledged: escalated from {level_now} to {level}",
                        config=config,
                        source_time=now,
                    )
                )
                level_now = level
                if level == due:
                    break
        _flush_writes(cur, writes)
    return changes


def _escalate_overdue_arrival(
    cur: psycopg.Cursor[dict[str, Any]],
    current: dict[str, Any],
    level: str,
    now: dt.datetime,
    config: DispatchConfig,
    writes: _Writes,
) -> Change:
    cur.execute(
        "UPDATE incident SET escalation_level = %s, escalated_at = %s, updated_at = %s,"
        " details = details || %s WHERE incident_id = %s RETURNING *",
        (
            level,
            now,
            now,
            json.dumps({"arrival_overdue_at": jsonable(now)}),
            current["incident_id"],
        ),
    )
    incident = cur.fetchone()
    assert incident is not None
    return _record_event(
        cur,
        incident,
        writes,
        event_type="incident.escalated",
        at=now,
        from_state=incident["state"],
        actor="dispatcher",
        note=f"acknowledged but nobody arrived within {current['arrival_target_s']} s"
        f" (the arrival rule): escalated from {current['escalation_level']} to {level}",
        config=config,
        source_time=now,
    )


# -- the reassurance command's outcome ---------------------------------------------------------

#: The incident events recording what became of a trapping's reassurance command; one per
#: incident, whichever comes first.
REASSURANCE_EVENTS: Final = ("reassurance.played", "reassurance.failed", "reassurance.unanswered")
REASSURANCE_COMMAND: Final = "play_reassurance"
#: How far back an unanswered command is still reported.
REASSURANCE_LOOKBACK: Final = dt.timedelta(hours=1)


def _reassurance_recorded(cur: psycopg.Cursor[dict[str, Any]], incident_id: Any) -> bool:
    cur.execute(
        "SELECT 1 FROM incident_event WHERE incident_id = %s AND event_type = ANY(%s)",
        (incident_id, list(REASSURANCE_EVENTS)),
    )
    return cur.fetchone() is not None


def record_reassurance_answers(
    conn: psycopg.Connection[Any],
    config: DispatchConfig,
    answers: Sequence[tuple[str, str, str, dt.datetime]],
) -> tuple[list[Change], list[tuple[str, str, str, dt.datetime]]]:
    """Record terminals' answers ``(elevator_id, command_id, status, at)`` to reassurance
    commands as ``reassurance.played`` or ``reassurance.failed`` (each an event and a
    webhook). An answer for another command, or an incident whose outcome is already
    recorded, changes nothing. Returns the changes, and the answers naming an incident of
    that elevator not found: the command goes out before its incident's transaction
    commits, so the answer may come first (the caller tries again)."""
    changes: list[Change] = []
    unmatched: list[tuple[str, str, str, dt.datetime]] = []
    writes = _Writes()
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        for elevator_id, command_id, status, at in answers:
            incident_id, _, command = command_id.partition(":")
            if command != REASSURANCE_COMMAND:
                continue
            try:
                uuid.UUID(incident_id)
            except ValueError:
                continue
            cur.execute(
                "SELECT * FROM incident WHERE incident_id = %s AND elevator_id = %s FOR UPDATE",
                (incident_id, elevator_id),
            )
            incident = cur.fetchone()
            if incident is None:
                unmatched.append((elevator_id, command_id, status, at))
                continue
            if _reassurance_recorded(cur, incident_id):
                continue
            played = status == "played"
            changes.append(
                _record_event(
                    cur,
                    incident,
                    writes,
                    event_type="reassurance.played" if played else "reassurance.failed",
                    at=at,
                    from_state=incident["state"],
                    actor="terminal",
                    note="the terminal played the reassurance message"
                    if played
                    else f"the terminal could not play the reassurance message: {status}",
                    config=config,
                    source_time=at,
                )
            )
        _flush_writes(cur, writes)
    return changes, unmatched


def report_unanswered_reassurance(
    conn: psycopg.Connection[Any], config: DispatchConfig, now: dt.datetime
) -> list[Change]:
    """``reassurance.unanswered`` for each trapping recorded more than
    ``config.reassurance_answer_s`` ago whose terminal has not answered the command."""
    from detectors.alerts import TRAPPED_TYPES

    if config.reassurance_answer_s <= 0:
        return []
    changes: list[Change] = []
    writes = _Writes()
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT i.* FROM incident i"
            " JOIN alert r ON r.alert_key = i.alert_key AND r.state = 'raised'"
            " JOIN incident_alert a ON a.alert_id = r.alert_id"
            " WHERE i.fault_type = ANY(%s) AND a.applied_at < %s AND a.applied_at > %s"
            " AND NOT EXISTS (SELECT 1 FROM incident_event e WHERE e.incident_id = i.incident_id"
            " AND e.event_type = ANY(%s))"
            " FOR UPDATE OF i SKIP LOCKED",
            (
                sorted(TRAPPED_TYPES),
                now - dt.timedelta(seconds=config.reassurance_answer_s),
                # Not incidents recorded long before (before terminals answered commands).
                now - dt.timedelta(seconds=config.reassurance_answer_s) - REASSURANCE_LOOKBACK,
                list(REASSURANCE_EVENTS),
            ),
        )
        for incident in cur.fetchall():
            changes.append(
                _record_event(
                    cur,
                    incident,
                    writes,
                    event_type="reassurance.unanswered",
                    at=now,
                    from_state=incident["state"],
                    actor="dispatcher",
                    note="the terminal did not confirm the reassurance message within "
                    f"{config.reassurance_answer_s} s",
                    config=config,
                    source_time=now,
                )
            )
        _flush_writes(cur, writes)
    return changes


# -- the outbox ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Due:
    """A delivery claimed for one attempt."""

    delivery_id: int
    webhook_id: str
    endpoint: str
    incident_id: uuid.UUID
    event_type: str
    payload: dict[str, Any]
    attempts: int  # including this one
    created_at: dt.datetime
    source_time: dt.datetime | None


def claim_due(
    conn: psycopg.Connection[Any],
    limit: int,
    lease_s: float,
    *,
    endpoints: Sequence[str],
    signing_key_id: str | None,
) -> list[Due]:
    """Claim up to ``limit`` due deliveries for one attempt each.

    Only rows for ``endpoints`` queued under ``signing_key_id`` (the secret this dispatcher
    signs with) are claimed: a dispatcher configured for another receiver or secret — a
    stale process of an earlier run, say — leaves them alone instead of sending signatures
    the receiver must refuse.

    A claim leases the row: its next attempt moves ``lease_s`` ahead, so if the dispatcher
    dies mid-delivery the row falls due again and is re-sent with the same webhook-id.

    Per incident and endpoint, events go out in order: a row waits while an earlier one for
    the same incident and endpoint is not delivered — pending (not yet sent, retrying, or
    leased to an attempt in flight) or dead. A dead one blocks: the rescue platform applies
    an incident's events in order, and a later event sent past a dead one would arrive
    before it once it is redelivered. The dead letter is alerted on
    (``tianyan_webhook_dead_letters``); the events behind it wait, pending, until
    ``tianyan incidents redeliver`` puts it back in the queue.
    """
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            """
            UPDATE webhook_delivery d
               SET attempts = d.attempts + 1,
                   last_attempt_at = now(),
                   first_attempt_at = coalesce(d.first_attempt_at, now()),
                   next_attempt_at = now() + make_interval(secs => %s)
             WHERE d.delivery_id IN (
                   SELECT c.delivery_id FROM webhook_delivery c
                    WHERE c.status = 'pending' AND c.next_attempt_at <= now()
                      AND c.endpoint = ANY(%s)
                      AND (c.signing_key_id IS NULL OR c.signing_key_id = %s)
                      AND NOT EXISTS (
                          SELECT 1 FROM webhook_delivery e
                           WHERE e.incident_id = c.incident_id AND e.endpoint = c.endpoint
                             AND e.status IN ('pending', 'dead')
                             AND e.delivery_id < c.delivery_id)
                    ORDER BY c.next_attempt_at, c.delivery_id
                    LIMIT %s
                    FOR UPDATE SKIP LOCKED)
            RETURNING d.delivery_id, d.webhook_id, d.endpoint, d.incident_id, d.event_type,
                      d.payload, d.attempts, d.created_at, d.source_time
            """,
            (lease_s, list(endpoints), signing_key_id, limit),
        )
        rows = cur.fetchall()
        _append_facts(cur, {"webhook_delivery": {str(r["delivery_id"]) for r in rows}})
    return [Due(**r) for r in sorted(rows, key=lambda r: r["delivery_id"])]


@dataclass(frozen=True)
class Attempt:
    """The outcome of one delivery attempt."""

    due: Due
    outcome: str  # delivered | retry | dead
    status_code: int | None
    error: str | None
    next_attempt_at: dt.datetime | None  # for a retry
    sent_at: dt.datetime
    seconds: float


def record_attempts(conn: psycopg.Connection[Any], attempts: Sequence[Attempt]) -> list[Attempt]:
    """Store the outcomes, each also as a ledger entry, in one transaction.

    An outcome is written to its row only while it is the row's latest attempt
    (``webhook_delivery.attempts`` equals the attempt's number). A result that comes back
    after its lease ran out and the row was claimed again is *stale*: the newer attempt
    owns the row, whatever either answer was (the receiver drops a repeat by webhook-id,
    so a stale "delivered" changes nothing the newer attempt will not also find out).
    A stale outcome is still ledgered, as what happened, with ``"stale": true``;
    ``audit verify`` does not hold a row's status to it.

    Returns
    -------
    list of Attempt
        The stale ones, not written to their rows.
    """
    if not attempts:
        return []
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(
            "UPDATE webhook_delivery SET status = %s, last_status_code = %s, last_error = %s,"
            " next_attempt_at = coalesce(%s, next_attempt_at),"
            " delivered_at = CASE WHEN %s = 'delivered' THEN %s END,"
            " dead_at = CASE WHEN %s = 'dead' THEN %s END"
            " WHERE delivery_id = %s AND attempts = %s"
            " RETURNING delivery_id, attempts",
            [
                (
                    "pending" if a.outcome == "retry" else a.outcome,
                    a.status_code,
                    a.error,
                    a.next_attempt_at,
                    a.outcome,
                    a.sent_at,
                    a.outcome,
                    a.sent_at,
                    a.due.delivery_id,
                    a.due.attempts,
                )
                for a in attempts
            ],
            returning=True,
        )
        written: set[tuple[int, int]] = set()
        while True:
            written.update((row[0], row[1]) for row in cur.fetchall())
            if not cur.nextset():
                break
        stale = [a for a in attempts if (a.due.delivery_id, a.due.attempts) not in written]
        _append_ledger(
            cur,
            [
                (
                    "webhook_delivery",
                    a.due.webhook_id,
                    json.dumps(
                        {
                            "delivery_id": a.due.delivery_id,
                            "webhook_id": a.due.webhook_id,
                            "endpoint": a.due.endpoint,
                            "incident_id": str(a.due.incident_id),
                            "event_type": a.due.event_type,
                            "attempt": a.due.attempts,
                            "outcome": a.outcome,
                            "status_code": a.status_code,
                            "error": a.error,
                            "sent_at": jsonable(a.sent_at),
                            "stale": (a.due.delivery_id, a.due.attempts) not in written,
                        }
                    ),
                )
                for a in attempts
            ],
        )
        _append_facts(cur, {"webhook_delivery": {str(d) for d, _ in written}})
    return stale


def redeliver(
    conn: psycopg.Connection[Any],
    *,
    delivery_ids: Sequence[int] = (),
    all_dead: bool = False,
    endpoint: str | None = None,
) -> int:
    """Put dead deliveries back in the queue (same webhook-id), due now; returns how many."""
    where = ["status = 'dead'"]
    params: list[Any] = []
    if delivery_ids:
        where.append("delivery_id = ANY(%s)")
        params.append(list(delivery_ids))
    elif not all_dead:
        raise ValueError("name the deliveries to re-deliver, or ask for all dead ones")
    if endpoint is not None:
        where.append("endpoint = %s")
        params.append(endpoint)
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(
            "UPDATE webhook_delivery SET status = 'pending', next_attempt_at = now(),"
            " created_at = now(), dead_at = NULL"
            f" WHERE {' AND '.join(where)} RETURNING delivery_id, webhook_id",
            params,
        )
        rows = cur.fetchall()
        _append_ledger(
            cur,
            [
                ("webhook_redelivery", w, json.dumps({"delivery_id": d, "webhook_id": w}))
                for d, w in rows
            ],
        )
        _append_facts(cur, {"webhook_delivery": {str(d) for d, _ in rows}})
        if rows:
            cur.execute(f"NOTIFY {NOTIFY_CHANNEL}")
    return len(rows)


# -- reconciliation reads (GET /incidents) ---------------------------------------------------

#: The elevator columns a payload shows.
_ELEVATOR_COLUMNS: Final = (
    "district",
    "address",
    "latitude",
    "longitude",
    "building_type",
    "user_unit",
    "maintenance_company",
    "maintenance_contact",
)
#: An incident with its latest event and its elevator, one row: what :func:`_view` reads.
_VIEW_SELECT: Final = (
    "SELECT i.*, e.event_id AS ev_event_id, e.time AS ev_time, e.event_type AS ev_event_type,"
    " e.from_state AS ev_from_state, e.actor AS ev_actor, e.note AS ev_note, "
    + ", ".join(f"el.{c} AS el_{c}" for c in _ELEVATOR_COLUMNS)
    + " FROM incident i LEFT JOIN LATERAL (SELECT * FROM incident_event x"
    " WHERE x.incident_id = i.incident_id ORDER BY x.event_id DESC LIMIT 1) e ON true"
    " LEFT JOIN elevator el ON el.registration_code = i.elevator_id"
)


def _view(row: dict[str, Any]) -> dict[str, Any]:
    """The webhook's ``data`` as of the incident's latest event, and when it last changed."""
    event = {k[3:]: v for k, v in row.items() if k.startswith("ev_")}
    elevator = {k[3:]: v for k, v in row.items() if k.startswith("el_")}
    data: dict[str, Any] = build_payload(row, event, elevator)["data"]
    data["updated_at"] = jsonable(row["updated_at"])
    return data


def incident_view(conn: psycopg.Connection[Any], incident_id: str) -> dict[str, Any] | None:
    """One incident as ``GET /incidents/{id}`` shows it: the webhook's ``data`` as of its
    latest event, and every event (oldest first); ``None`` when there is no such incident."""
    try:
        key = uuid.UUID(incident_id)
    except ValueError:
        return None
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        cur.execute(_VIEW_SELECT + " WHERE i.incident_id = %s", (key,))
        row = cur.fetchone()
        if row is None:
            return None
        cur.execute(
            "SELECT event_id, time, event_type, from_state, to_state, actor, note"
            " FROM incident_event WHERE incident_id = %s ORDER BY event_id",
            (key,),
        )
        events = [{k: jsonable(v) for k, v in e.items()} for e in cur.fetchall()]
    return {**_view(row), "events": events}


def list_incidents(
    conn: psycopg.Connection[Any],
    *,
    states: Sequence[str],
    since: dt.datetime | None,
    after: tuple[dt.datetime, uuid.UUID] | None,
    limit: int,
    route: str | None,
) -> tuple[list[dict[str, Any]], tuple[dt.datetime, uuid.UUID] | None]:
    """Incidents changed at or after ``since``, in ``states`` (all when empty), on ``route``
    (all when ``None``), oldest change first, ``limit`` at most, after the cursor ``after``
    (the last page's last ``(updated_at, incident_id)``); and the cursor of the next page,
    ``None`` when this one is the last."""
    where: list[str] = ["true"]
    params: list[Any] = []
    if states:
        where.append("i.state = ANY(%s)")
        params.append(list(states))
    if since is not None:
        where.append("i.updated_at >= %s")
        params.append(since)
    if route is not None:
        where.append("coalesce(i.details->>'route', 'rescue') = %s")
        params.append(route)
    if after is not None:
        where.append("(i.updated_at, i.incident_id) > (%s, %s)")
        params += list(after)
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            f"{_VIEW_SELECT} WHERE {' AND '.join(where)}"
            " ORDER BY i.updated_at, i.incident_id LIMIT %s",
            (*params, limit + 1),
        )
        rows = cur.fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    cursor = (rows[-1]["updated_at"], rows[-1]["incident_id"]) if more and rows else None
    return [_view(r) for r in rows], cursor


def active_incidents(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT i.incident_id, i.elevator_id, e.district, e.address, i.fault_type,"
            " i.severity, i.state, i.escalation_level, i.estimated_trapped, i.opened_at,"
            " i.repeats FROM incident i LEFT JOIN elevator e ON e.registration_code ="
            " i.elevator_id WHERE i.state = ANY(%s) ORDER BY i.opened_at",
            (_ACTIVE,),
        )
        return cur.fetchall()


def stuck_deliveries(conn: psycopg.Connection[Any], older_than_s: float) -> list[dict[str, Any]]:
    """Dead deliveries, and pending ones created more than ``older_than_s`` ago."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT delivery_id, webhook_id, endpoint, incident_id, event_type, status,"
            " attempts, created_at, next_attempt_at, last_status_code, last_error"
            " FROM webhook_delivery WHERE status = 'dead' OR (status = 'pending'"
            " AND created_at < now() - make_interval(secs => %s)) ORDER BY created_at",
            (older_than_s,),
        )
        return cur.fetchall()


def outbox_backlog(conn: psycopg.Connection[Any]) -> dict[str, int]:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT count(*) FILTER (WHERE status = 'pending'),"
            " count(*) FILTER (WHERE status = 'pending' AND attempts > 0),"
            " count(*) FILTER (WHERE status = 'dead') FROM webhook_delivery"
        )
        row = cur.fetchone()
    assert row is not None
    return {"pending": row[0], "retrying": row[1], "dead": row[2]}
