"""Hostile input to the three parsers of outside data: the telemetry contract, the scenario
files and the registry exports. Property-based (hypothesis): whatever the input, each
raises only its documented error type, and every rejection names what is wrong.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from foundation import contract
from registry.generate import generate
from registry.model import ELEVATOR_COLUMNS
from registry.store import RegistryError, parse_row, read_csv, write_csv
from simulator.scenario import SCENARIO_DIR, Scenario, ScenarioError
from tianyan.demo import trip_messages

T0 = 1_763_625_600_000
_VALID = [contract.encode(m) for m in trip_messages("32070000000000000001", T0)[:3]]
_CONTRACT_FIELDS = {
    "schema",
    "elevator_id",
    "seq",
    "kind",
    "samples",
    "faults",
    "events",
    "message",
} | set(json.loads(_VALID[0]).get("samples", {}))
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5)
    ),
    max_leaves=20,
)


def _mutated_message(data: st.DataObject) -> bytes:
    """A valid message with one field replaced, dropped or added."""
    doc: dict[str, Any] = json.loads(data.draw(st.sampled_from(_VALID)))
    where = doc
    if data.draw(st.booleans()):
        where = doc["samples"]
    key = data.draw(st.sampled_from(sorted(where)) | st.text(max_size=10))
    action = data.draw(st.sampled_from(["replace", "drop", "list_item"]))
    if action == "drop":
        where.pop(key, None)
    elif action == "list_item" and isinstance(where.get(key), list) and where[key]:
        items = where[key]
        items[data.draw(st.integers(0, len(items) - 1))] = data.draw(json_values)
    else:
        where[key] = data.draw(json_values)
    return json.dumps(doc, allow_nan=False).encode()


def _check_reason(reason: str) -> None:
    assert reason.strip(), "an empty reason"
    named = (
        reason.startswith("message:")
        or "$." in reason
        or "`" in reason
        or any(f in reason for f in _CONTRACT_FIELDS)
    )
    assert named, f"the reason names no field: {reason!r}"


# -- the telemetry contract ---------------------------------------------------------------------


@SETTINGS
@given(raw=st.binary(max_size=400) | st.text(max_size=400).map(str.encode))
def test_contract_arbitrary_bytes_rejected_with_a_reason(raw: bytes) -> None:
    try:
        contract.decode(raw)
    except contract.InvalidMessage as e:
        _check_reason(e.reason)


@SETTINGS
@given(doc=json_values)
def test_contract_arbitrary_json_rejected_with_a_reason(doc: Any) -> None:
    with pytest.raises(contract.InvalidMessage) as e:
        contract.decode(json.dumps(doc).encode())
    _check_reason(e.value.reason)


@SETTINGS
@given(data=st.data())
def test_contract_mutated_message_accepted_whole_or_rejected_with_a_reason(
    data: st.DataObject,
) -> None:
    raw = _mutated_message(data)
    try:
        message = contract.decode(raw)
    except contract.InvalidMessage as e:
        _check_reason(e.reason)
        return
    # Accepted: it survives a round trip and every sample value is a finite number.
    assert contract.decode(contract.encode(message)) == message
    s = message.samples
    assert all(math.isfinite(v) for v in s.speed_mps + s.position_m + s.load_kg)


# -- the scenario parser ------------------------------------------------------------------------

_SCENARIO = tomllib.loads((SCENARIO_DIR / "default.toml").read_text(encoding="utf-8"))


def _paths(doc: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for k, v in doc.items():
        out.append((*prefix, k))
        if isinstance(v, dict):
            out += _paths(v, (*prefix, k))
    return out


_SCENARIO_PATHS = _paths(_SCENARIO)
toml_values = st.recursive(
    st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats()
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)


@SETTINGS
@given(data=st.data())
def test_scenario_mutated_rejected_naming_the_key(data: st.DataObject) -> None:
    doc = json.loads(json.dumps(_SCENARIO))  # deep copy (TOML here has no dates)
    path = data.draw(st.sampled_from(_SCENARIO_PATHS))
    parent = doc
    for k in path[:-1]:
        parent = parent[k]
    if data.draw(st.booleans()):
        parent[path[-1]] = data.draw(toml_values)
    else:
        parent.pop(path[-1])
    try:
        Scenario.from_dict(doc)
    except ScenarioError as e:
        reason = str(e)
        # The message starts with the key path (or the section) that is wrong.
        assert any(k in reason for k in path), (path, reason)


@SETTINGS
@given(doc=st.dictionaries(st.text(max_size=10), toml_values, max_size=6))
def test_scenario_arbitrary_tables_rejected_with_a_reason(doc: dict[str, Any]) -> None:
    with pytest.raises(ScenarioError) as e:
        Scenario.from_dict(doc)
    assert str(e.value).strip()


# -- the registry parser ------------------------------------------------------------------------

_FLEET = generate(7, 3, dt.date(2026, 12, 1))
_buf = io.StringIO()
write_csv(_FLEET, _buf)
_ROWS = list(csv.DictReader(io.StringIO(_buf.getvalue())))
cell = st.text(max_size=15) | st.sampled_from(["nan", "inf", "-inf", "1e309", "NaN", "2.5", "0"])


@SETTINGS
@given(data=st.data())
def test_registry_row_mutated_accepted_or_rejected_naming_the_column(data: st.DataObject) -> None:
    row = dict(data.draw(st.sampled_from(_ROWS)))
    column = data.draw(st.sampled_from(ELEVATOR_COLUMNS))
    row[column] = data.draw(cell)
    try:
        e = parse_row(row)
    except ValueError as err:
        assert type(err).__name__ == "_RowError", repr(err)  # the documented row error only
        assert str(err).split(":")[0] in ELEVATOR_COLUMNS, str(err)
        return
    assert math.isfinite(e.rated_speed_mps) and math.isfinite(e.rated_load_kg)
    for v in (e.latitude, e.longitude):
        assert v is None or math.isfinite(v)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(text=st.text(max_size=600) | st.binary(max_size=600))
def test_registry_file_arbitrary_rejected_or_every_bad_row_with_a_reason(
    tmp_path: Path, text: str | bytes
) -> None:
    path = tmp_path / "registry.csv"
    header = ",".join(ELEVATOR_COLUMNS) + "\n"
    if isinstance(text, str):
        path.write_text(header + text, encoding="utf-8")
    else:
        path.write_bytes(header.encode() + text)
    try:
        result = read_csv(path)
    except RegistryError as e:
        assert str(path) in str(e)
        return
    for bad in result.bad_rows:
        assert bad.line >= 2
        first = bad.reason.split(":")[0]
        assert first in ELEVATOR_COLUMNS or "more than the header" in bad.reason, bad.reason
