"""One hand-made registry elevator for tests that need a few with known ratings."""

from __future__ import annotations

import datetime as dt
from typing import Any

from registry.model import Elevator


def registry_elevator(
    n: int, district: str, *, code_base: int = 31103207060000000000, **kw: Any
) -> Elevator:
    """Elevator ``n`` of a test fleet in ``district``: a residential 18-floor car at
    1.75 m/s and 1,000 kg, installed in 2020, maintained on 28 October 2026, inspected on
    1 March 2026, with a terminal; any field overridden by ``kw``. Its registration code
    is ``code_base + n``, placed at 34.5 + n/100 °N, 119.1 + n/100 °E."""
    fields: dict[str, Any] = dict(
        registration_code=f"{code_base + n}",
        address=f"连云港市{district}测试路{n}号",
        district=district,
        latitude=34.5 + n / 100,
        longitude=119.1 + n / 100,
        building_type="residential",
        user_unit="测试物业",
        property_managed=True,
        rated_speed_mps=1.75,
        rated_load_kg=1000.0,
        floors=18,
        installed_on=dt.date(2020, 1, 1),
        maintenance_company="测试维保",
        maintenance_contact="0518-00000000",
        last_maintenance_on=dt.date(2026, 10, 28),
        last_inspection_on=dt.date(2026, 3, 1),
        has_terminal=True,
    )
    fields.update(kw)
    return Elevator(**fields)
