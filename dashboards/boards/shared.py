"""What the boards share: their uids (for links between them) and SQL fragments."""

from __future__ import annotations

from detectors.thresholds import Thresholds
from foundation.contract import EVENT_CODES, FAULT_CODES, DoorState, ServiceMode

OPERATION = "tianyan-operation"
ELEVATOR = "tianyan-elevator"
TRIP = "tianyan-trip"
RESCUE = "tianyan-rescue"
MAINTENANCE = "tianyan-maintenance"
SUPERVISION = "tianyan-supervision"
USE_SAFETY = "tianyan-use-safety"
PUBLIC_LOOKUP = "tianyan-public-lookup"

# The defaults, not TIANYAN_THRESHOLDS_FILE: the committed boards must not depend on where
# they were built.
_THRESHOLDS = Thresholds()
#: Maintenance at least every 15 days (TSG T5002-2017, 半月保).
MAINTENANCE_INTERVAL_DAYS = _THRESHOLDS.risk_maintenance_interval_days
#: Periodic inspection yearly (TSG T7001).
INSPECTION_INTERVAL_DAYS = _THRESHOLDS.risk_inspection_interval_days

#: The local date at the end of the board's range: dues are counted in Lianyungang's days.
LOCAL_DATE_AT_END = "($__timeTo()::timestamptz AT TIME ZONE 'Asia/Shanghai')::date"

#: A visit shorter than this is "too short" (Thresholds.maintenance_visit_min_s).
MAINTENANCE_VISIT_MIN_S = _THRESHOLDS.maintenance_visit_min_s

#: The local date the last maintenance visit the terminal showed ended, as of the end of the
#: range (``maintenance_session``, from inspection mode; ``elevator`` aliased ``e``).
LAST_VISIT_ON = (
    "(SELECT (max(m.end_time) AT TIME ZONE 'Asia/Shanghai')::date FROM maintenance_session m"
    " WHERE m.elevator_id = e.registration_code AND m.end_time <= $__timeTo())"
)
#: The last maintenance: the later of the registry's declared date and the last visit seen.
LAST_MAINTAINED_ON = f"GREATEST(e.last_maintenance_on, {LAST_VISIT_ON})"

#: Maintenance overdue at the end of the range (column of ``elevator`` aliased ``e``).
MAINTENANCE_OVERDUE = (
    f"({LAST_MAINTAINED_ON} IS NULL"
    f" OR {LAST_MAINTAINED_ON} < {LOCAL_DATE_AT_END} - {MAINTENANCE_INTERVAL_DAYS})"
)
#: Inspection overdue at the end of the range.
INSPECTION_OVERDUE = (
    f"(e.last_inspection_on IS NULL"
    f" OR e.last_inspection_on < {LOCAL_DATE_AT_END} - {INSPECTION_INTERVAL_DAYS})"
)

#: The year to the end of the range, as the two first arguments of the regulators' functions
#: (sql/idempotent/30_regulator_figures.sql): rescue figures and rankings look at a year
#: whatever the range shown — a rate per year over a few hours says nothing — as the report
#: does (dashboards/report.py RESCUE_DAYS).
YEAR_TO_END = "$__timeTo()::timestamptz - interval '365 days', $__timeTo()"

#: An incident still open at the end of the range (``incident`` aliased ``i``).
INCIDENT_OPEN_AT_END = (
    "i.opened_at <= $__timeTo() AND (i.closed_at IS NULL OR i.closed_at > $__timeTo())"
)

#: Service modes as terminals report them (foundation/contract.py), for value mappings.
SERVICE_MODES = {str(int(m)): m.name.lower().replace("_", " ") for m in ServiceMode}
#: GB/T 24476 fault and event codes, for value mappings.
CODES = {**FAULT_CODES, **EVENT_CODES}
#: Door states as terminals report them.
DOOR_STATES = {str(int(d)): d.name.lower() for d in DoorState}
