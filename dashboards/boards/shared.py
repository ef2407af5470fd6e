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

#: Maintenance overdue at the end of the range (column of ``elevator`` aliased ``e``).
MAINTENANCE_OVERDUE = (
    f"(e.last_maintenance_on IS NULL"
    f" OR e.last_maintenance_on < {LOCAL_DATE_AT_END} - {MAINTENANCE_INTERVAL_DAYS})"
)
#: Inspection overdue at the end of the range.
INSPECTION_OVERDUE = (
    f"(e.last_inspection_on IS NULL"
    f" OR e.last_inspection_on < {LOCAL_DATE_AT_END} - {INSPECTION_INTERVAL_DAYS})"
)

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
