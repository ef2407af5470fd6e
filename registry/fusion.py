"""Fusing one source's claims into the registry: the precedence rule, with no I/O.

The registry is the fusion of several sources' exports — the regulator's registry, the
inspection agency's inspection dates, a user unit's contact list — each possibly partial.
Every stored value keeps its :class:`Provenance`: the source that gave it and the date
(``as_of``) that source's export describes. An import offers, for some columns of some
elevators, a value from one source as of one date; :func:`fuse` decides, column by column:

- the same value as stored: nothing changes but the provenance, which moves to the offer
  when the offer is not older (the value is confirmed, by this source, as of that date);
- another value from the **same source**: a newer-or-equal offer is that source's own
  correction and replaces the value; an older one is stale and changes nothing;
- another value from **another source**: a :class:`Conflict`, always recorded. The offer
  replaces the stored value only when it is strictly newer (``as_of`` after the stored
  value's); on the same date or older, the stored value is kept.
- nothing stored yet (a new elevator, or a NULL column): the offer is taken.

Columns an import does not carry, and elevators it does not name, are not touched. An
empty cell carries nothing: it never erases a value.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class Provenance:
    """Where a stored value came from: the source's name and the date its export describes."""

    source: str
    as_of: dt.date


@dataclass(frozen=True)
class Conflict:
    """Two sources disagree on one value; ``outcome`` says which value the registry holds."""

    registration_code: str
    column: str
    stored_value: object
    stored: Provenance
    offered_value: object
    offered: Provenance
    outcome: Literal["replaced", "kept"]


@dataclass
class Fused:
    """What :func:`fuse` decided for one elevator.

    Attributes
    ----------
    changes
        column → new value, the values to write into the elevator's row.
    provenance
        column → new provenance, for every column whose value was set or confirmed.
    conflicts
        the disagreements with another source, replaced or kept.
    stale
        columns whose offer was an older value of the same source, ignored.
    """

    changes: dict[str, object] = field(default_factory=dict)
    provenance: dict[str, Provenance] = field(default_factory=dict)
    conflicts: list[Conflict] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)


def fuse(
    registration_code: str,
    stored: Mapping[str, object],
    stored_provenance: Mapping[str, Provenance],
    offered: Mapping[str, object],
    offer: Provenance,
) -> Fused:
    """Apply the precedence rule to one elevator's offered values.

    Parameters
    ----------
    registration_code
        The elevator.
    stored
        column → value as the registry holds it (empty for an elevator not yet stored).
    stored_provenance
        column → provenance of the stored value (absent where none is recorded).
    offered
        column → value the import carries (empty cells left out).
    offer
        The importing source and the date its export describes.

    Examples
    --------
    >>> import datetime as dt
    >>> agency = Provenance("inspection agency", dt.date(2026, 12, 1))
    >>> registry = Provenance("registry", dt.date(2026, 11, 1))
    >>> r = fuse("31103207062019000001",
    ...          {"last_inspection_on": dt.date(2026, 3, 1)},
    ...          {"last_inspection_on": registry},
    ...          {"last_inspection_on": dt.date(2026, 11, 20)}, agency)
    >>> r.changes, r.conflicts[0].outcome
    ({'last_inspection_on': datetime.date(2026, 11, 20)}, 'replaced')
    """
    result = Fused()
    for column, value in offered.items():
        old = stored.get(column)
        had = stored_provenance.get(column)
        if old is None or had is None:
            if old != value:
                result.changes[column] = value
            result.provenance[column] = offer
            continue
        newer_or_same_date = offer.as_of >= had.as_of
        if old == value:
            if newer_or_same_date and had != offer:
                result.provenance[column] = offer
            continue
        if had.source == offer.source:
            if newer_or_same_date:
                result.changes[column] = value
                result.provenance[column] = offer
            else:
                result.stale.append(column)
            continue
        replaced = offer.as_of > had.as_of
        result.conflicts.append(
            Conflict(
                registration_code,
                column,
                old,
                had,
                value,
                offer,
                "replaced" if replaced else "kept",
            )
        )
        if replaced:
            result.changes[column] = value
            result.provenance[column] = offer
    return result


def display(value: object) -> str:
    """A stored value as text, as the provenance and conflict tables show it (as jsonb
    prints it: ``true``, ``1.75``, ``1``, ``2026-12-01``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, float):
        text = repr(value)
        return text[:-2] if text.endswith(".0") else text
    return str(value)
