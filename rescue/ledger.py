"""Verifying the tamper-evident ledger (``tianyan audit verify``).

The chain is written by ``tianyan.ledger_append`` (sql/idempotent/20_functions.sql), the
only way in: no application role may write ``audit_ledger`` directly. This module
recomputes every hash independently of that function, then checks the recorded facts
against the ledger, all in one REPEATABLE READ snapshot (so a dispatcher writing meanwhile
cannot make a table and its ledger entries look out of step):

1. the chain — seq gapless from 1; each prev_hash is the entry_hash before it; each
   entry_hash is ``sha256(prev_hash || utf8(seq|recorded_at_us|entry_type|entity_id|payload))``;
2. the anchors: the dispatcher publishes the ledger's head (seq and hash, and the chain's
   genesis — the hash of entry 1) to a Kafka topic of this ledger's own as the ledger grows
   (:func:`publish_anchor`), a copy outside the database. Every anchor must be of this chain
   and name an entry still in the ledger with its hash: a ledger emptied, truncated, or
   rewritten with freshly computed hashes — from the start or from anywhere — (which the
   chain alone cannot reveal, as no secret is involved) is named against the anchor that
   contradicts it;
3. every incident event in the ledger is in ``incident_event`` unchanged, and every
   ``incident_event`` row is in the ledger; every incident's current row equals its last
   ledgered snapshot;
4. the facts: every row of the registry, ``alert``, ``incident``, ``incident_alert``,
   ``incident_action``, ``webhook_delivery`` (every column) and each incident's evidence
   samples has a ``fact`` entry with the sha256 of its content, written in the same
   transaction (``ledger_facts``). The digests are recomputed and compared both ways: a
   row whose digest differs is *edited*, a ledgered one that is gone *deleted* (the whole
   table gone: *truncated*), one not ledgered *inserted*. An alert a ``tianyan backfill``
   removed is not *deleted*: the backfill's own ledger entry, later than the alert's last
   fact, names it with that fact's digest (``backfill_remove_alerts``, migration 0016).

Anything the supervised party edits, deletes, inserts or reorders directly in SQL — in the
ledger or in the tables it vouches for — is named with its table and kind
(:attr:`Report.tampered`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator
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
    """The ledger's head as published: ``chain`` (the genesis, hash of entry 1) names the
    chain, which a rewrite from the start changes."""

    chain: str
    seq: int
    entry_hash: str
    recorded_at: str
    published_at: str


#: The tables whose rows the ledger vouches for as facts (``audit_fact_digests``).
FACT_TABLES: Final = (
    "elevator",
    "alert",
    "incident",
    "incident_alert",
    "incident_action",
    "webhook_delivery",
    "evidence_sample",
)
#: How many keys a problem names before it says "and N more".
_EXAMPLES: Final = 5


@dataclass
class Report:
    """What ``audit verify`` found. ``problems`` is empty when everything holds; each is
    also in ``tampered`` as (table, kind), kind one of edited, deleted, inserted,
    reordered, truncated, emptied, rewritten."""

    entries: int = 0
    head_seq: int = 0
    head_hash: str = ""
    chain: str = ""
    anchors: int = 0
    facts: int = 0
    problems: list[str] = field(default_factory=list)
    tampered: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def found(self, table: str, kind: str, problem: str) -> None:
        self.problems.append(problem)
        if (table, kind) not in self.tampered:
            self.tampered.append((table, kind))


def verify_chain(
    rows: Iterable[dict[str, Any]],
    report: Report,
    where: Callable[[bytes], int | None] = lambda _: None,
) -> None:
    """Check the chain; record the first break in ``report`` and stop there. ``where``
    gives the seq of the entry with a given entry_hash (to tell a reorder from an insert)."""
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
            report.found(
                "audit_ledger",
                "deleted",
                f"audit_ledger: {missing} deleted from the ledger: seq {expected_seq - 1} is"
                f" followed by {what}",
            )
            return
        if bytes(row["prev_hash"]) != prev:
            follows = where(bytes(row["prev_hash"]))
            if follows is not None and follows != seq - 1:
                report.found(
                    "audit_ledger",
                    "reordered",
                    f"audit_ledger: {what} follows the entry now at seq {follows}, not seq"
                    f" {seq - 1}: the ledger was reordered",
                )
            else:
                report.found(
                    "audit_ledger",
                    "inserted",
                    f"audit_ledger: {what} does not follow seq {seq - 1}: its prev_hash is not"
                    " that entry's hash (an entry was inserted or replaced here)",
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
            report.found(
                "audit_ledger",
                "edited",
                f"audit_ledger: {what} was altered: its content does not hash to its"
                f" entry_hash (stored {bytes(row['entry_hash']).hex()[:16]}…,"
                f" computed {computed.hex()[:16]}…)",
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
    """Every anchor on ``topic``, oldest first. The topic is the ledger's own (one per
    database): every anchor on it must be of the ledger's chain."""
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
    """Every anchor on this ledger's topic must be of this chain (its genesis, the hash of
    entry 1) and name an entry still in the ledger with its hash."""
    published = sorted(anchors, key=lambda a: (a.published_at, a.seq))
    report.anchors = len(published)
    if not published:
        return
    last = max(published, key=lambda a: a.seq)
    if report.entries == 0:
        report.found(
            "audit_ledger",
            "emptied",
            f"audit_ledger: the ledger is empty, but {len(published)} anchors were published"
            f" for it (the last at {last.published_at}, seq {last.seq}): the ledger was"
            " emptied",
        )
        return
    foreign = [a for a in published if a.chain != report.chain]
    if foreign:
        chains = sorted({a.chain[:16] + "…" for a in foreign})
        report.found(
            "audit_ledger",
            "rewritten",
            f"audit_ledger: {len(foreign)} of the {len(published)} anchors published for this"
            f" ledger name a chain it does not hold (genesis {', '.join(chains)}; the ledger's"
            f" entry 1 now hashes to {report.chain[:16]}…; the first such anchor was published"
            f" at {foreign[0].published_at}): the ledger was rewritten from the start",
        )
        return
    with conn.cursor() as cur:
        cur.execute(
            "SELECT seq, entry_hash FROM audit_ledger WHERE seq = ANY(%s)",
            (sorted({a.seq for a in published}),),
        )
        stored = {seq: bytes(h).hex() for seq, h in cur}
    for a in sorted(published, key=lambda a: a.seq):
        if a.seq not in stored:
            report.found(
                "audit_ledger",
                "truncated",
                f"audit_ledger: the ledger ends at seq {report.head_seq}, but the anchor"
                f" published at {a.published_at} recorded seq {a.seq} (hash"
                f" {a.entry_hash[:16]}…): seq {report.head_seq + 1}–{a.seq} deleted from the"
                " ledger",
            )
            return
        if stored[a.seq] != a.entry_hash:
            report.found(
                "audit_ledger",
                "rewritten",
                f"audit_ledger: ledger entry seq {a.seq} does not match the anchor published"
                f" at {a.published_at} (anchored {a.entry_hash[:16]}…, now"
                f" {stored[a.seq][:16]}…): the chain was rewritten up to there",
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
    """Incident events both ways, and each incident against its last ledgered snapshot."""
    events: dict[int, dict[str, Any]] = {}
    incidents: dict[str, tuple[int, dict[str, Any]]] = {}
    with conn.cursor(name="ledger_payloads", row_factory=dict_row) as cur:
        cur.itersize = 5000
        cur.execute(
            "SELECT seq, payload FROM audit_ledger WHERE entry_type = 'incident_event' ORDER BY seq"
        )
        for row in cur:
            p = row["payload"]
            events[p["event"]["event_id"]] = {"seq": row["seq"], **p["event"]}
            incidents[p["incident"]["incident_id"]] = (row["seq"], p["incident"])
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute("SELECT * FROM incident_event ORDER BY event_id")
        stored = {r["event_id"]: snapshot(r, EVENT_COLUMNS) for r in cur}
    for event_id, ledgered in events.items():
        seq = ledgered.pop("seq")
        found = stored.pop(event_id) if event_id in stored else None
        if found is None:
            report.found(
                "incident_event",
                "deleted",
                f"incident_event {event_id} ({ledgered['event_type']} of incident "
                f"{ledgered['incident_id']}, ledger seq {seq}) was deleted from incident_event",
            )
        elif found != ledgered:
            changed = sorted(k for k in ledgered if found.get(k) != ledgered[k])
            report.found(
                "incident_event",
                "edited",
                f"incident_event {event_id} (ledger seq {seq}) was altered:"
                f" {', '.join(changed)} differ from the ledger",
            )
    for event_id, row in stored.items():
        report.found(
            "incident_event",
            "inserted",
            f"incident_event {event_id} ({row['event_type']} of incident {row['incident_id']})"
            " is not in the ledger: inserted outside the pipeline",
        )
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute("SELECT * FROM incident")
        current = {str(r["incident_id"]): snapshot(r, SNAPSHOT_COLUMNS) for r in cur}
    for incident_id, (seq, ledgered_incident) in incidents.items():
        row_now = current.pop(incident_id) if incident_id in current else None
        if row_now is None:
            report.found(
                "incident",
                "deleted",
                f"incident {incident_id} (last ledgered at seq {seq}) was deleted",
            )
        elif row_now != ledgered_incident:
            changed = sorted(k for k in ledgered_incident if row_now.get(k) != ledgered_incident[k])
            report.found(
                "incident",
                "edited",
                f"incident {incident_id} was altered after ledger seq {seq}: "
                f"{', '.join(changed)} differ from the ledger",
            )
    for incident_id in current:
        report.found("incident", "inserted", f"incident {incident_id} is not in the ledger")


def _some(keys: list[str]) -> str:
    shown = ", ".join(keys[:_EXAMPLES])
    return shown + (f" and {len(keys) - _EXAMPLES} more" if len(keys) > _EXAMPLES else "")


def _check_facts(conn: psycopg.Connection[Any], report: Report) -> None:
    """Each table's facts against their last ledgered digests, both ways."""
    ledgered: dict[str, dict[str, tuple[int, int, str]]] = {t: {} for t in FACT_TABLES}
    with conn.cursor() as cur:
        cur.execute(
            "SELECT DISTINCT ON (entity_id) seq, payload ->> 'table', payload ->> 'key',"
            " (payload ->> 'rows')::bigint, payload ->> 'sha256' FROM audit_ledger"
            " WHERE entry_type = 'fact' ORDER BY entity_id, seq DESC"
        )
        for seq, table, key, rows, digest in cur:
            ledgered.setdefault(table, {})[key] = (seq, rows, digest)
        # Facts a backfill removed, as its slice's ledger entry names them (migration 0016):
        # (table, key) → (the entry's seq, the digest it removed).
        cur.execute(
            "SELECT l.seq, r ->> 'table', r ->> 'key', r ->> 'sha256' FROM audit_ledger l"
            " CROSS JOIN LATERAL jsonb_array_elements(l.payload -> 'removed') r"
            " WHERE l.entry_type = 'backfill' ORDER BY l.seq"
        )
        backfilled = {(table, key): (seq, digest) for seq, table, key, digest in cur}
    for table in FACT_TABLES:
        with conn.cursor() as cur:
            cur.execute("SELECT fact_key, fact_rows, sha256 FROM audit_fact_digests(%s)", (table,))
            current = {key: (rows, digest) for key, rows, digest in cur}
        facts = ledgered.get(table, {})
        report.facts += len(facts)
        fewer: list[str] = []
        more: list[str] = []
        edited: list[str] = []
        for key in sorted(facts.keys() & current.keys()):
            seq, rows, digest = facts[key]
            rows_now, digest_now = current[key]
            if digest_now != digest:
                what = f"{key} (ledger seq {seq}"
                what += f", {rows} rows now {rows_now})" if rows_now != rows else ")"
                (fewer if rows_now < rows else more if rows_now > rows else edited).append(what)
        deleted = sorted(
            key
            for key in facts.keys() - current.keys()
            if not _removed_by_backfill(facts[key], backfilled.get((table, key)))
        )
        inserted = sorted(current.keys() - facts.keys())
        rows_of = "incidents' evidence" if table == "evidence_sample" else "rows"
        if edited:
            report.found(
                table,
                "edited",
                f"{table}: {len(edited)} {rows_of} edited (their content no longer hashes to"
                f" the ledgered digest): {_some(edited)}",
            )
        if fewer:
            report.found(
                table,
                "deleted",
                f"{table}: samples deleted from the evidence of incidents {_some(fewer)}",
            )
        if more:
            report.found(
                table,
                "inserted",
                f"{table}: samples inserted into the evidence of incidents {_some(more)}",
            )
        if deleted and not current:
            report.found(
                table,
                "truncated",
                f"{table}: emptied — all {len(deleted)} ledgered {rows_of} are gone:"
                f" {_some(deleted)}",
            )
        elif deleted:
            report.found(
                table,
                "deleted",
                f"{table}: {len(deleted)} ledgered {rows_of} deleted: {_some(deleted)}",
            )
        if inserted:
            report.found(
                table,
                "inserted",
                f"{table}: {len(inserted)} {rows_of} not in the ledger (inserted outside the"
                f" pipeline): {_some(inserted)}",
            )


def _removed_by_backfill(fact: tuple[int, int, str], removal: tuple[int, str] | None) -> bool:
    """Whether a ledgered fact that is gone was removed by a backfill: a ``backfill`` entry
    after the fact's last entry names it with that last digest (a row edited before the
    backfill removed it, or deleted after it was written again, is still reported)."""
    if removal is None:
        return False
    fact_seq, _, digest = fact
    removal_seq, removed_digest = removal
    return removal_seq > fact_seq and removed_digest == digest


def verify_snapshot(
    conn: psycopg.Connection[Any], anchors: Iterable[Anchor] | None = None
) -> Report:
    """Verify in the transaction open on ``conn`` (one snapshot): the chain, then the
    anchors (unless None) and the tables against it."""
    report = Report()

    def where(entry: bytes) -> int | None:
        with conn.cursor() as cur:
            cur.execute("SELECT seq FROM audit_ledger WHERE entry_hash = %s", (entry,))
            row = cur.fetchone()
        return None if row is None else int(row[0])

    verify_chain(_ledger_rows(conn), report, where)
    if anchors is not None and report.ok:  # a broken chain is named already
        check_anchors(conn, anchors, report)
    if report.ok:
        _check_tables(conn, report)
        _check_facts(conn, report)
    return report


def verify(url: str, anchors: Iterable[Anchor] | None = None) -> Report:
    """Verify the ledger at ``url`` (a read-only role suffices) in one REPEATABLE READ,
    read-only transaction: every check sees the same committed state, whatever the
    dispatcher writes meanwhile. ``anchors`` None: the anchors are not checked."""
    with psycopg.connect(url) as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        with conn.transaction():
            return verify_snapshot(conn, anchors)


def as_json(report: Report) -> str:
    return json.dumps(
        {
            "ok": report.ok,
            "entries": report.entries,
            "head_seq": report.head_seq,
            "head_hash": report.head_hash,
            "chain": report.chain,
            "anchors_checked": report.anchors,
            "facts_checked": report.facts,
            "problems": report.problems,
            "tampered": [{"table": t, "kind": k} for t, k in report.tampered],
        },
        ensure_ascii=False,
    )
