"""Facts of the city tianyan serves, shared by every package that needs them."""

from __future__ import annotations

from typing import Final
from zoneinfo import ZoneInfo

#: Lianyungang keeps China Standard Time (UTC+8, no daylight saving): the "day" of a
#: maintenance interval, a report or a risk grade is a day there.
CITY_TZ: Final = ZoneInfo("Asia/Shanghai")
