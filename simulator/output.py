"""Where simulated messages go: a JSONL or Parquet file, or Kafka; and where labels go.

Outputs are thin adapters: the engine hands them each message's exact bytes (and, unless
the message is deliberately malformed, the same message as a dict) in emission order.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any, Final

from foundation.contract import COLUMNS

from .fleet import FaultLabel

try:  # only Parquet output needs pyarrow
    import pyarrow as pa
    import pyarrow.parquet as pq
except ImportError:  # pragma: no cover - pyarrow is a pinned dependency
    pa = pq = None

#: Rows buffered before a Parquet row group is written.
PARQUET_ROW_GROUP: Final = 500_000


class OutputError(RuntimeError):
    """An output cannot be opened or written; the message names it."""


def labels_path_for(path: Path) -> Path:
    """``out.jsonl`` → ``out.labels.jsonl``: the labels file beside an output file."""
    return path.with_name(f"{path.stem}.labels.jsonl")


def _iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).isoformat(timespec="milliseconds")


def write_labels_file(path: Path, run_id: str, labels: Sequence[FaultLabel]) -> None:
    """One JSON object per label, ordered by ``label_id``, with ISO and ms times."""
    with path.open("w", encoding="utf-8") as f:
        for label in labels:
            row = label.as_dict(run_id)
            row["onset"], row["ended"] = _iso(label.onset_ms), _iso(label.ended_ms)
            f.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")


def write_labels_db(url: str, run_id: str, labels: Sequence[FaultLabel]) -> None:
    """Insert the labels into ``tianyan.fault_label`` in one transaction (replacing a run's)."""
    import psycopg
    from psycopg.types.json import Jsonb

    rows = [
        (
            run_id,
            lb.label_id,
            lb.elevator_id,
            lb.fault_type,
            lb.gb_code,
            dt.datetime.fromtimestamp(lb.onset_ms / 1000, tz=dt.UTC),
            None
            if lb.ended_ms is None
            else dt.datetime.fromtimestamp(lb.ended_ms / 1000, tz=dt.UTC),
            Jsonb(lb.params),
        )
        for lb in labels
    ]
    try:
        with (
            psycopg.connect(url) as conn,
            conn.cursor() as cur,
            cur.copy(
                "COPY tianyan.fault_label (run_id, label_id, elevator_id, fault_type, gb_code, "
                "onset, ended, params) FROM STDIN"
            ) as copy,
        ):
            for row in rows:
                copy.write_row(row)
    except psycopg.Error as e:
        raise OutputError(f"cannot write {len(rows)} fault labels to {url}: {e}") from e


class FileOutput:
    """Write messages to ``path``: ``.jsonl`` (the exact bytes, one per line) or ``.parquet``.

    Parquet has one row per sample (``elevator_id``, ``seq``, ``kind``, every contract sample
    column, and ``faults`` / ``events`` as the codes raised at that sample's time). A
    malformed message has no rows: it is left out and counted in ``skipped``. Labels go to
    ``<stem>.labels.jsonl`` beside the file.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.format = self.path.suffix.lower().lstrip(".")
        if self.format not in ("jsonl", "parquet"):
            raise OutputError(f"{self.path}: the output file must end in .jsonl or .parquet")
        if self.format == "parquet" and pa is None:
            raise OutputError("Parquet output needs pyarrow, which is not installed")
        self.labels_path: Path | None = labels_path_for(self.path)
        self.skipped = 0
        self._file: IO[bytes] | None = None
        self._writer: Any = None
        self._rows: dict[str, list[Any]] = {}

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.format == "jsonl":
            self._file = self.path.open("wb", buffering=1 << 20)
        else:
            self._rows = {
                c: [] for c in ("elevator_id", "seq", "kind", *COLUMNS, "faults", "events")
            }

    def write(self, key: bytes, payload: bytes, message: dict[str, Any] | None) -> None:
        if self._file is not None:
            self._file.write(payload + b"\n")
            return
        if message is None:
            self.skipped += 1
            return
        rows = self._rows
        samples = message["samples"]
        n = len(samples["t_ms"])
        rows["elevator_id"].extend([message["elevator_id"]] * n)
        rows["seq"].extend([message["seq"]] * n)
        rows["kind"].extend([message["kind"]] * n)
        for c in COLUMNS:
            rows[c].extend(samples[c])
        for name in ("faults", "events"):
            codes: dict[int, list[str]] = {}
            for c in message[name]:
                codes.setdefault(c["t_ms"], []).append(c["code"])
            rows[name].extend([codes.get(t, []) for t in samples["t_ms"]])
        if len(rows["seq"]) >= PARQUET_ROW_GROUP:
            self._flush_rows()

    def _flush_rows(self) -> None:
        if not self._rows.get("seq"):
            return
        schema = pa.schema(
            [
                ("elevator_id", pa.string()),
                ("seq", pa.int64()),
                ("kind", pa.string()),
                ("t_ms", pa.int64()),
                ("speed_mps", pa.float64()),
                ("accel_mps2", pa.float64()),
                ("position_m", pa.float64()),
                ("floor", pa.int16()),
                ("direction", pa.int8()),
                ("load_kg", pa.float64()),
                ("door", pa.int8()),
                ("door_zone", pa.bool_()),
                ("leveling_offset_mm", pa.float64()),
                ("passengers", pa.bool_()),
                ("alarm", pa.bool_()),
                ("service_mode", pa.int8()),
                ("faults", pa.list_(pa.string())),
                ("events", pa.list_(pa.string())),
            ]
        )
        table = pa.table(self._rows, schema=schema)
        if self._writer is None:
            self._writer = pq.ParquetWriter(self.path, schema, compression="zstd")
        self._writer.write_table(table)
        self._rows = {c: [] for c in self._rows}

    def close(self, run_id: str, labels: Sequence[FaultLabel]) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        else:
            self._flush_rows()
            if self._writer is None:  # no rows at all: still a valid, empty file
                self._rows = {c: [] for c in self._rows}
                self._rows["seq"] = []
                pq.write_table(pa.table({c: pa.array([]) for c in self._rows}), self.path)
            else:
                self._writer.close()
                self._writer = None
        assert self.labels_path is not None
        write_labels_file(self.labels_path, run_id, labels)


class KafkaOutput:
    """Publish messages with a :class:`streams.producer.RawPublisher`, keyed by elevator id.

    Parameters
    ----------
    publisher
        The raw-topic publisher; flushed (every message acknowledged) at the end of the run.
    labels_db_url
        If given, labels are also written to ``tianyan.fault_label`` there.
    labels_path
        If given, labels are also written to this JSONL file.
    """

    def __init__(
        self,
        publisher: Any,
        labels_db_url: str | None = None,
        labels_path: Path | str | None = None,
    ) -> None:
        self.publisher = publisher
        self.labels_db_url = labels_db_url
        self.labels_path = None if labels_path is None else Path(labels_path)
        self.skipped = 0

    def open(self) -> None:
        return None

    def write(self, key: bytes, payload: bytes, message: dict[str, Any] | None) -> None:
        self.publisher.publish(key=key, value=payload)

    def close(self, run_id: str, labels: Sequence[FaultLabel]) -> None:
        self.publisher.flush()
        if self.labels_path is not None:
            write_labels_file(self.labels_path, run_id, labels)
        if self.labels_db_url is not None:
            write_labels_db(self.labels_db_url, run_id, labels)
