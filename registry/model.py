"""The elevator registry's record and the city it describes.

One :class:`Elevator` per registration code: the fusion of the user units', the inspection
agency's and the regulator's records. Field names match ``tianyan.elevator`` column for
column.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, fields
from typing import Final

BUILDING_TYPES: Final = (
    "residential",
    "office",
    "hospital",
    "school",
    "mall",
    "station",
    "government",
)

#: 20 digits (TSG 08 special-equipment registration code).
REGISTRATION_CODE = re.compile(r"^[0-9]{20}$")


@dataclass(frozen=True)
class District:
    """A unit of Lianyungang that reports its own progress (district, county or zone)."""

    name: str
    name_zh: str
    kind: str  # district | county | zone
    admin_code: str  # six digits; the zones' are synthetic (they have none of their own)
    latitude: float  # centre
    longitude: float
    radius_km: float
    elevator_share: float  # of the city's elevators
    terminal_share: float  # of its elevators fitted with an IoT terminal


#: Lianyungang's districts, counties and development zones (MISSION.md). Centres and
#: shares are approximate and synthetic: they shape the simulated city, nothing else.
DISTRICTS: Final = (
    District("Haizhou", "海州区", "district", "320706", 34.573, 119.163, 9.0, 0.38, 0.55),
    District("Lianyun", "连云区", "district", "320703", 34.720, 119.372, 7.0, 0.08, 0.45),
    District("Ganyu", "赣榆区", "district", "320707", 34.840, 119.120, 9.0, 0.12, 0.35),
    District("Donghai", "东海县", "county", "320722", 34.542, 118.770, 8.0, 0.08, 0.31),
    District("Guanyun", "灌云县", "county", "320723", 34.284, 119.240, 7.0, 0.06, 0.28),
    District("Guannan", "灌南县", "county", "320724", 34.090, 119.350, 6.0, 0.05, 0.26),
    District(
        "Development Zone", "经济技术开发区", "zone", "320771", 34.640, 119.300, 5.0, 0.10, 0.60
    ),
    District("Xuwei", "徐圩新区", "zone", "320772", 34.570, 119.550, 6.0, 0.02, 0.70),
    District("High-tech Zone", "高新区", "zone", "320773", 34.600, 119.205, 4.0, 0.10, 0.65),
    District("Yuntaishan", "云台山景区", "zone", "320774", 34.660, 119.330, 3.0, 0.01, 0.40),
)
DISTRICT_NAMES: Final = tuple(d.name for d in DISTRICTS)


@dataclass(frozen=True)
class Elevator:
    registration_code: str
    address: str
    district: str
    latitude: float | None
    longitude: float | None
    building_type: str
    user_unit: str | None
    property_managed: bool
    rated_speed_mps: float
    rated_load_kg: float
    floors: int
    installed_on: dt.date | None
    maintenance_company: str | None
    maintenance_contact: str | None
    last_maintenance_on: dt.date | None
    last_inspection_on: dt.date | None
    has_terminal: bool
    # product-quality tracing (migration 0014); last, so that older exports stay readable
    manufacturer: str | None = None
    model: str | None = None


#: Column order, as in the table and the CSV format.
ELEVATOR_COLUMNS: Final = tuple(f.name for f in fields(Elevator))
