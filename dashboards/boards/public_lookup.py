"""Public information lookup (公众信息查询, "Sky Eye lookup"): one elevator by its
registration code. Reads only the view ``public_elevator`` — its data source logs in as
``tianyan_public``, which may read nothing else."""

from __future__ import annotations

from dashboards.board import GRADE_COLOURS, Board, BoardBuilder, coloured_values, stat, table
from dashboards.boards import shared
from dashboards.datasources import PUBLIC

#: The code typed, as a quoted SQL literal (whatever the public types stays a literal).
_THIS = "registration_code = ${registration_code:sqlstring}"


#: Overdue (true) in red, in time (false) in green.
_DUE = {"true": ("overdue", "red"), "false": ("in time", "green")}


def build() -> Board:
    b = BoardBuilder(
        shared.PUBLIC_LOOKUP,
        "Elevator lookup",
        PUBLIC,
        "Look up an elevator by the 20-digit registration code on its certificate: where it "
        "is, who maintains it, whether maintenance and inspection are up to date, and its "
        "risk grade.",
        "public",
    )
    b.textbox_variable(
        "registration_code",
        "Registration code",
        checked_with="SELECT registration_code FROM public_elevator ORDER BY registration_code"
        " LIMIT 1",
    )
    b.panel(
        table(),
        "Elevator",
        f"""SELECT registration_code, address, district, building_type, installed_on,
       has_terminal AS online_monitoring
FROM public_elevator WHERE {_THIS}""",
        shows=f"SELECT 1 FROM public_elevator WHERE {_THIS}",
        width=24,
        height=4,
    )
    b.panel(
        table()
        .override_by_name(*coloured_values("maintenance_overdue", _DUE))
        .override_by_name(*coloured_values("inspection_overdue", _DUE)),
        "Maintenance and inspection",
        f"""SELECT maintenance_company, last_maintenance_on, maintenance_overdue,
       last_inspection_on, inspection_overdue
FROM public_elevator WHERE {_THIS}""",
        shows=f"SELECT 1 FROM public_elevator WHERE {_THIS}",
        width=16,
        height=4,
    )
    b.panel(
        stat().mappings(GRADE_COLOURS),
        "Risk grade",
        f"SELECT risk_grade, risk_graded_at FROM public_elevator WHERE {_THIS}",
        shows=f"SELECT 1 FROM public_elevator WHERE {_THIS}",
        width=8,
        height=4,
    )
    return b.build()
