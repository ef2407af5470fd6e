"""Verifying the tamper-evident ledger (``tianyan audit verify``).

The chain is written by ``tianyan.ledger_append`` (sql/idempotent/20_functions.sql); this
module recomputes every hash independently of that function, then checks the operational
tables against the ledger:

1. the chain — seq gapless from 1; each prev_hash is the entry_hash before it; each
   entry_hash is ``sha256(prev_hash || utf8(seq|recorded_at_us|entry_type|entity_id|payload))``;
2. every incident event in the ledger is in ``incident_event`` unchanged, and every
   ``incident_event`` row is in the ledger;
3. every incident's current row equals its last ledgered snapshot;
4. every delivery's recorded outcome equals its last ledgered attempt.

Anything the supervised party edits or deletes directly in SQL — in the ledger or in the
tables it vouches for — is named.

5. the anchors: the dispatcher publishes the ledger's head (seq and hash) to a Kafka topic as
   the ledger grows (:func:`publish_anchor`), a copy outside the database. Every anchor of
   this chain must still be in the ledger with the same hash: a truncated tail, or a tail
   rewritten with freshly computed hashes (which the chain alone cannot reveal, as no
   secret is involved), is named against the anchor that contradicts it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final

import psycopg
from psycopg.rows import dict_row

from foundation.kafka_security import KafkaSecurity, kafka_python_config

from .store import EVENT_COLUMNS, SNAPSHOT_COLUMNS, snapshot

GENESIS: Final = bytes(32)
ANCHOR_KEY: Final = b"ledger-head"


def entry_hash(
    prev_hash: bytes, seq: int, recorded_at_us: int, entry_type: str, entity_id: str, payload: str
) -> bytes:
    """The hash the ledger stores for an entry (see the module docstring)."""
    text = f"{seq}|{recorded_at_us}|{entry_type}|{entity_id}|{payload}"
    return hashlib.sha256(prev_hash + text.encode()).digest()


@dataclass(frozen=True)
class Anchor:
    """The ledger's head as published: ``chain`` (hash of entry 1) names the ledger."""

    chain: str
    seq: int
    entry_hash: str
    recorded_at: str
    published_at: str


@dataclass
class Report:
    """What ``audit verify`` found. ``problems`` is empty when everything holds."""

    entries: int = 0
    head_seq: int = 0
    head_hash: str = ""
    chain: str = ""
    anchors: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_chain(rows: Iterable[dict[str, Any]], report: Report) -> None:
    """Check the chain; record the first break in ``report`` and stop there."""
    expected_seq, prev = 1, GENESIS
    for row in rows:
        seq = row["seq"]
        what = f"ledger entry seq {seq} ({row['entry_type']} {row['entity_id']})"
        if seq != expected_seq:
            missing = (
                f"seq {expected_seq}"
                if seq == expected_seq + 1
                else f"seq {expected_seq}–{seq - 1}"
            )
            report.problems.append(
                f"{missing} deleted from the ledger: seq {expected_seq - 1} is followed by {what}"
            )
            return
        if bytes(row["prev_hash"]) != prev:
            report.problems.append(
                f"{what} does not follow seq {seq - 1}: its prev_hash is not that entry's hash"
                " (an entry was inserted or replaced here)"
            )
            return
        computed = entry_hash(
            prev,
            seq,
            row["recorded_at_us"],
            row["entry_type"],
            row["entity_id"],
            row["payload_text"],
        )
        if bytes(row["entry_hash"]) != computed:
            report.problems.append(
                f"{what} was altered: its content does not hash to its entry_hash"
                f" (stored {bytes(row['entry_hash']).hex()[:16]}…,"
                f" computed {computed.hex()[:16]}…)"
            )
            return
        prev = computed
        expected_seq += 1
        report.entries += 1
        report.head_seq, report.head_hash = seq, computed.hex()
        if seq == 1:
            report.chain = computed.hex()


def ledger_head(conn: psycopg.Connection[Any]) -> Anchor | None:
    """The ledger's last entry as an anchor (not yet published), or None when empty."""
    import datetime as dt

    with conn.cursor() as cur:
        cur.execute(
            "SELECT (SELECT entry_hash FROM audit_ledger WHERE seq = 1), seq, entry_hash,"
            " recorded_at FROM audit_ledger ORDER BY seq DESC LIMIT 1"
        )
        row = cur.fetchone()
    conn.rollback()
    if row is None or row[0] is None:
        return None
    now = dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")
    return Anchor(bytes(row[0]).hex(), row[1], bytes(row[2]).hex(), row[3].isoformat(), now)


def anchor_value(anchor: Anchor) -> bytes:
    return json.dumps(anchor.__dict__).encode()


def read_anchors(
    bootstrap: str, topic: str, timeout_s: float = 10.0, *, security: KafkaSecurity | None = None
) -> list[Anchor]:
    """Every anchor on ``topic``, oldest first (all ledgers' — filter by ``chain``)."""
    import time

    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        group_id=None,
        **kafka_python_config(security or KafkaSecurity()),
    )
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise LookupError(
                f"the anchors topic {topic!r} does not exist (or the Kafka user may not read it)"
            )
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        anchors: list[Anchor] = []
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < end[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading the anchors topic {topic!r} took over {timeout_s} s")
            for records in consumer.poll(timeout_ms=500).values():
                for r in records:
                    if r.key == ANCHOR_KEY:
                        anchors.append(Anchor(**json.loads(r.value)))
        return anchors
    finally:
        consumer.close()


def check_anchors(conn: psycopg.Connection[Any], anchors: Iterable[Anchor], report: Report) -> None:
    """Each anchor of this chain must name an entry still in the ledger with its hash."""
    ours = [a for a in anchors if a.chain == report.chain]
    report.anchors = len(ours)
    if not ours:
        return
    with conn.cursor() as cur:
        cur.execute(
            "SELECT seq, entry_hash FROM audit_ledger WHERE seq = ANY(%s)",
            (sorted({a.seq for a in ours}),),
        )
        stored = {seq: bytes(h).hex() for seq, h in cur}
    for a in sorted(ours, key=lambda a: a.seq):
        if a.seq not in stored:
            report.problems.append(
                f"the ledger ends at seq {report.head_seq}, but the anchor published at "
                f"{a.published_at} recorded seq {a.seq} (hash {a.entry_hash[:16]}…): "
                f"seq {report.head_seq + 1}–{a.seq} deleted from the ledger"
            )
            return
        if stored[a.seq] != a.entry_hash:
            report.problems.append(
                f"ledger entry seq {a.seq} does not match the anchor published at "
                f"{a.published_at} (anchored {a.entry_hash[:16]}…, now {stored[a.seq][:16]}…):"
                " the chain was rewritten up to there"
            )
            return


def _ledger_rows(conn: psycopg.Connection[Any]) -> Iterator[dict[str, Any]]:
    with conn.cursor(name="ledger_walk", row_factory=dict_row) as cur:
        cur.itersize = 5000
        cur.execute(
            "SELECT seq, entry_type, entity_id, payload::text AS payload_text, prev_hash,"
            " entry_hash, (extract(epoch FROM recorded_at) * 1000000)::bigint AS recorded_at_us"
            " FROM audit_ledger ORDER BY seq"
        )
        yield from cur


def _check_tables(conn: psycopg.Connection[Any], report: Report) -> None:
    events: dict[int, dict[str, Any]] = {}
    incidents: dict[str, tuple[int, dict[str, Any]]] = {}
    deliveries: dict[int, tuple[int, str]] = {}
    with conn.cursor(name="ledger_payloads", row_factory=dict_row) as cur:
        cur.itersize = 5000
        cur.execute(
            "SELECT seq, entry_type, payload FROM audit_ledger"
            " WHERE entry_type IN ('incident_event', 'webhook_delivery') ORDER BY seq"
        )
        for row in cur:
            p = row["payload"]
            if row["entry_type"] == "incident_event":
                events[p["event"]["event_id"]] = {"seq": row["seq"], **p["event"]}
                incidents[p["incident"]["incident_id"]] = (row["seq"], p["incident"])
            elif not p.get("stale"):  # a late result the row's newer attempt overrode
                deliveries[p["delivery_id"]] = (row["seq"], p["outcome"])
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute("SELECT * FROM incident_event ORDER BY event_id")
        stored = {r["event_id"]: snapshot(r, EVENT_COLUMNS) for r in cur}
    for event_id, ledgered in events.items():
        seq = ledgered.pop("seq")
        found = stored.pop(event_id) if event_id in stored else None
        if found is None:
            report.problems.append(
                f"incident_event {event_id} ({ledgered['event_type']} of incident "
                f"{ledgered['incident_id']}, ledger seq {seq}) was deleted from incident_event"
            )
        elif found != ledgered:
            changed = sorted(k for k in ledgered if found.get(k) != ledgered[k])
            report.problems.append(
                f"incident_event {event_id} (ledger seq {seq}) was altered: {', '.join(changed)}"
                " differ from the ledger"
            )
    for event_id, row in stored.items():
        report.problems.append(
            f"incident_event {event_id} ({row['event_type']} of incident {row['incident_id']})"
            " is not in the ledger: inserted outside the pipeline"
        )
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute("SELECT * FROM incident")
        current = {str(r["incident_id"]): snapshot(r, SNAPSHOT_COLUMNS) for r in cur}
    for incident_id, (seq, ledgered_incident) in incidents.items():
        row_now = current.pop(incident_id) if incident_id in current else None
        if row_now is None:
            report.problems.append(
                f"incident {incident_id} (last ledgered at seq {seq}) was deleted"
            )
        elif row_now != ledgered_incident:
            changed = sorted(k for k in ledgered_incident if row_now.get(k) != ledgered_incident[k])
            report.problems.append(
                f"incident {incident_id} was altered after ledger seq {seq}: "
                f"{', '.join(changed)} differ from the ledger"
            )
    for incident_id in current:
        report.problems.append(f"incident {incident_id} is not in the ledger")
    with conn.cursor() as cur:
        cur.execute(
            "SELECT delivery_id, status FROM webhook_delivery WHERE status <> 'pending'"
            " OR attempts > 0"
        )
        for delivery_id, status in cur:
            seq_outcome = deliveries.get(delivery_id)
            if seq_outcome is None:
                if status != "pending":
                    report.problems.append(
                        f"webhook_delivery {delivery_id} is {status} but no attempt is ledgered"
                    )
                continue
            seq, outcome = seq_outcome
            expected = "pending" if outcome == "retry" else outcome
            if status != expected and not (status == "pending" and outcome == "dead"):
                report.problems.append(
                    f"webhook_delivery {delivery_id} is {status}, but its last ledgered attempt"
                    f" (seq {seq}) says {outcome}"
                )


def verify(url: str, anchors: Iterable[Anchor] = ()) -> Report:
    """Walk the chain, then check the anchors and the tables against it (a read-only role
    suffices)."""
    report = Report()
    with psycopg.connect(url) as conn:
        conn.read_only = True
        verify_chain(_ledger_rows(conn), report)
        conn.commit()
        if report.ok:
            check_anchors(conn, anchors, report)
            _check_tables(conn, report)
    return report


def as_json(report: Report) -> str:
    return json.dumps(
        {
            "ok": report.ok,
            "entries": report.entries,
            "head_seq": report.head_seq,
            "head_hash": report.head_hash,
            "chain": report.chain,
            "anchors_checked": report.anchors,
            "problems": report.problems,
        },
        ensure_ascii=False,
    )
