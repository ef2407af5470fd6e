"""A real worker under hostile input (issue 15 part 6, issue 13 part 2).

One worker on the real Kafka and TimescaleDB, with ``TIANYAN_REGISTERED_ONLY`` on and short
silence thresholds, takes 10,000 hostile messages mixed around valid ones — half of them
contract-valid heartbeats from random registration codes (a hostile terminal), half broken in
every way the contract refuses — and stays alive, quarantines each with its reason, stores
every valid sample, makes no state for the random ids and grows by at most
:data:`RSS_GROWTH_BOUND_MB`. Then a silent car is reported offline, evicted from memory, and
restored from its checkpoint when it speaks again (its ``device_offline`` then cleared).
"""

from __future__ import annotations

import json
import random
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from detectors.testing import car, message
from foundation import contract
from foundation.settings import Settings
from registry.generate import generate
from registry.store import upsert
from streams.producer import RawPublisher
from tianyan.demo import trip_messages
from tianyan.harness import Run, pipeline

from .conftest import consume_all
from .test_poison import _samples, _stored
from .test_worker import FLEET_DATE, FLEET_SEED, FLEET_SIZE, _metrics

HOSTILE_MESSAGES = 10_000
RANDOM_ID_HEARTBEATS = HOSTILE_MESSAGES // 2
#: How much the worker's resident memory may grow over the first flood: the worker takes up
#: to ``batch_messages`` × 10 records ahead, so a whole flood is in flight at once and its
#: buffers stay with the allocator (measured: +27 to +36 MB with the registry check; +74 MB
#: before it, each random id keeping a state).
RSS_FIRST_FLOOD_BOUND_MB = 50.0
#: How much it may grow over a later flood as large: what the first one left behind is
#: reused, so this is what hostile messages retain (measured: +1 to +3 MB with the check
#: alone; +5.4 and +9.9 MB once each in a full `make test` run, the least of two floods
#: judged since; +57 MB before the check, 5,000 states). The bound is "a few MB" (issue 13)
#: with room for the allocator's noise, and 7× below the failure.
RSS_RETAINED_BOUND_MB = 8.0
#: Short silence thresholds, so offline and eviction happen within seconds of wall time.
THRESHOLDS = (
    "heartbeat_timeout_s = 2.0\nactive_silence_timeout_s = 1.0\nstate_eviction_after_s = 4.0\n"
)


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def _health(port: int) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
    except OSError:
        return None


@dataclass
class Worker:
    run: Run
    port: int
    pid: int
    fleet: list[str]


@pytest.fixture(scope="module")
def worker(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    work = tmp_path_factory.mktemp("hostile")
    thresholds = work / "thresholds.toml"
    thresholds.write_text(THRESHOLDS)
    name = f"tianyan_test_hostile_{uuid.uuid4().hex[:8]}"
    with pipeline(
        settings,
        name,
        work,
        partitions=1,
        checkpoint_interval_s=0.5,
        registered_only=True,
        thresholds_file=thresholds,
    ) as run:
        fleet = generate(FLEET_SEED, FLEET_SIZE, FLEET_DATE)
        upsert(run.admin_url, fleet)
        from tianyan.processes import free_port

        port = free_port()
        proc = run.start(
            "worker",
            ["worker", "--loglevel", "warn"],
            port=port,
            TIANYAN_WORKER_WEB_PORT=str(port),
        )
        yield Worker(run, port, proc.pid, [e.registration_code for e in fleet])


def _hostile(rng: random.Random, valid: bytes, now_ms: int, i: int) -> tuple[bytes, bytes, str]:
    """(key, value, what its quarantine reason must name: one of ``|``-separated words) of
    hostile message ``i``."""
    if i % 2 == 0:  # a contract-valid heartbeat from a random registration code
        eid = "".join(rng.choice("0123456789") for _ in range(20))
        m = message([car(t_ms=now_ms)], elevator_id=eid, seq=i, kind="heartbeat")
        return eid.encode(), contract.encode(m), "not in the registry"
    doc = json.loads(valid)
    kind = (i // 2) % 8
    if kind == 0:
        return b"x", b"\xff" + rng.randbytes(rng.randint(0, 200)), "message"
    if kind == 1:
        return b"x", valid[: rng.randint(0, len(valid) - 1)], "message:|$."
    if kind == 2:
        doc["elevator_id"] = rng.choice(["", "3207", "x" * 20, "3207000000000000000\n", 7])
        return b"x", json.dumps(doc).encode(), "elevator_id"
    if kind == 3:
        doc["samples"]["speed_mps"][0] = 1e400 if rng.random() < 0.5 else "fast"
        return b"x", json.dumps(doc).encode().replace(b"Infinity", b"1e400"), "speed_mps"
    if kind == 4:
        doc["seq"] = rng.choice([-1, 2**64, "1", None])
        return b"x", json.dumps(doc).encode(), "seq"
    if kind == 5:
        doc["schema"] = "tianyan.telemetry/99"
        return b"x", json.dumps(doc).encode(), "schema"
    if kind == 6:
        doc["samples"]["t_ms"] = []
        return b"x", json.dumps(doc).encode(), "t_ms"
    if i % 160 == 15:  # one in ten of these: over the contract's size limit
        return b"x", valid + b" " * 70_000, "larger than the 65536 bytes allowed"
    return b"x", valid + b"}", "message: not valid JSON"


def test_hostile_flood_quarantined_with_reasons_valid_stored_memory_bounded(
    worker: Worker,
) -> None:
    run, port = worker.run, worker.port
    now_ms = int(time.time() * 1000)
    cars = worker.fleet[:3]
    trips = {eid: trip_messages(eid, now_ms - 20_000) for eid in cars}
    valid = [m for ms in trips.values() for m in ms]
    warm_up, rest = valid[: len(valid) // 3], valid[len(valid) // 3 :]
    with RawPublisher(run.settings.kafka_bootstrap, run.settings.raw_topic) as pub:
        for m in warm_up:
            pub.publish(m.elevator_id.encode(), contract.encode(m))
    run.wait(
        lambda: len(_stored(run.admin_url, warm_up)),
        lambda n: n >= len(_samples(warm_up)),
        "the warm-up stored",
    )
    rss_before = _rss_mb(worker.pid)

    rng = random.Random(20261205)
    template = contract.encode(trips[cars[0]][0])
    expected: list[str] = []
    statuses = []
    with RawPublisher(run.settings.kafka_bootstrap, run.settings.raw_topic) as pub:
        every = HOSTILE_MESSAGES // len(rest)
        for i in range(HOSTILE_MESSAGES):
            key, value, names = _hostile(rng, template, now_ms, i)
            pub.publish(key, value)
            expected.append(names)
            if i % every == 0 and rest:
                m = rest.pop(0)
                pub.publish(m.elevator_id.encode(), contract.encode(m))
        for m in rest:
            pub.publish(m.elevator_id.encode(), contract.encode(m))

    def progress() -> tuple[int, float]:
        statuses.append(_health(port))
        return len(_stored(run.admin_url, valid)), _metrics(port).get(
            "tianyan_quarantined_total", 0
        )

    run.wait(
        progress,
        lambda p: p[0] >= len(_samples(valid)) and p[1] >= HOSTILE_MESSAGES,
        "every valid sample stored and every hostile message quarantined",
    )
    rss_after = _rss_mb(worker.pid)
    metrics = _metrics(port)
    quarantined = consume_all(
        run.settings.kafka_bootstrap, run.settings.quarantine_topic, HOSTILE_MESSAGES
    )
    tail = (run.work / "worker.log").read_text()[-3000:]

    assert run.group.exited() is None, tail
    assert set(statuses) == {200}, (statuses, tail)
    assert _stored(run.admin_url, valid) == _samples(valid)
    assert len(quarantined) == HOSTILE_MESSAGES
    reasons = [dict(r.headers)["reason"].decode() for r in quarantined]
    missing = [
        (i, n, r)
        for i, (n, r) in enumerate(zip(expected, reasons, strict=True))
        if not any(word in r for word in n.split("|"))
    ]
    assert not missing, missing[:5]
    assert metrics["tianyan_unregistered_messages_total"] == RANDOM_ID_HEARTBEATS
    assert metrics["tianyan_elevator_states"] <= len(cars)
    growth = rss_after - rss_before
    print(f"\nworker RSS {rss_before:.1f} MB → {rss_after:.1f} MB ({growth:+.1f} MB)")
    assert growth <= RSS_FIRST_FLOOD_BOUND_MB, (rss_before, rss_after)

    # Further floods as large retain nothing: no state, no memory. What one retains is the
    # least growth over two of them: a retention grows the worker at each (57 MB a flood
    # before the registry check), the allocator's noise not at both (+9.9 MB once).
    rss = [rss_after]
    for flood in (2, 3):
        with RawPublisher(run.settings.kafka_bootstrap, run.settings.raw_topic) as pub:
            for i in range(HOSTILE_MESSAGES):
                key, value, _ = _hostile(rng, template, now_ms, (flood - 1) * HOSTILE_MESSAGES + i)
                pub.publish(key, value)
        run.wait(
            lambda: _metrics(port)["tianyan_quarantined_total"],
            lambda q, total=flood * HOSTILE_MESSAGES: q >= total,
            f"flood {flood} quarantined",
        )
        rss.append(_rss_mb(worker.pid))
        metrics = _metrics(port)
        print(f"flood {flood}: RSS {rss[-2]:.1f} MB → {rss[-1]:.1f} MB")
        assert run.group.exited() is None
        assert metrics["tianyan_unregistered_messages_total"] == flood * RANDOM_ID_HEARTBEATS
        assert metrics["tianyan_elevator_states"] <= len(cars)
    retained = min(rss[1] - rss[0], rss[2] - rss[1])
    assert retained <= RSS_RETAINED_BOUND_MB, rss


def test_silent_car_reported_offline_evicted_and_restored(worker: Worker) -> None:
    run, port = worker.run, worker.port
    eid = worker.fleet[10]
    alerts_topic = run.settings.alerts_topic

    def alerts() -> list[tuple[str, str]]:
        got = consume_all(run.settings.kafka_bootstrap, alerts_topic, 0, timeout_s=1)
        return [
            (a["alert_type"], a["state"])
            for a in (json.loads(r.value) for r in got)
            if a["elevator_id"] == eid
        ]

    evicted_before = _metrics(port).get("tianyan_states_evicted_total", 0)
    with RawPublisher(run.settings.kafka_bootstrap, run.settings.raw_topic) as pub:
        beat = message([car(t_ms=int(time.time() * 1000))], elevator_id=eid, kind="heartbeat")
        pub.publish(eid.encode(), contract.encode(beat))
    # Silent: reported offline, then (every car on the partition silent) evicted.
    run.wait(
        lambda: (_metrics(port), alerts()),
        lambda p: (
            p[0]["tianyan_states_evicted_total"] > evicted_before
            and p[0]["tianyan_elevator_states"] == 0
            and ("device_offline", "raised") in p[1]
        ),
        "the silent car offline and evicted",
    )
    assert ("device_offline", "cleared") not in alerts()  # still open
    # It speaks again: its state is restored from the checkpoint, and the alert cleared.
    with RawPublisher(run.settings.kafka_bootstrap, run.settings.raw_topic) as pub:
        beat = message(
            [car(t_ms=int(time.time() * 1000))], elevator_id=eid, seq=1, kind="heartbeat"
        )
        pub.publish(eid.encode(), contract.encode(beat))
    run.wait(
        alerts,
        lambda a: ("device_offline", "cleared") in a,
        "the offline alert cleared when the car spoke again",
    )
    assert _metrics(port)["tianyan_states_restored_total"] >= 1
    assert run.group.exited() is None
