"""The boards, one module each: the plan's six platforms and the drill-down below
operation monitoring (city → district → elevator → trip)."""

from __future__ import annotations

from dashboards.board import Board
from dashboards.boards import (
    elevator,
    maintenance,
    operation,
    public_lookup,
    rescue,
    supervision,
    trip,
    use_safety,
)

#: Board builders in the order the folder lists them.
BUILDERS = (
    operation.build,
    elevator.build,
    trip.build,
    rescue.build,
    maintenance.build,
    supervision.build,
    use_safety.build,
    public_lookup.build,
)


def all_boards() -> list[Board]:
    """Every board, freshly built."""
    return [build() for build in BUILDERS]
