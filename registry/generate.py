"""A synthetic Lianyungang: elevators across its districts, counties and zones, from a seed.

Deterministic: the same ``seed``, ``count`` and ``as_of`` give the same registry, byte for
byte. Registration codes are synthetic but well-formed: ``3110`` (traction passenger lift)
+ the district's six-digit code + the installation year + a six-digit serial.
"""

from __future__ import annotations

import datetime as dt

import numpy as np

from .model import BUILDING_TYPES, DISTRICTS, Elevator

BUILDING_TYPE_SHARE = {
    "residential": 0.62,
    "office": 0.12,
    "mall": 0.07,
    "government": 0.06,
    "hospital": 0.05,
    "school": 0.05,
    "station": 0.03,
}
#: Storeys (inclusive ranges) by building type; residential mixes mid- and high-rise.
FLOORS = {
    "residential": ((7, 11), (12, 18), (19, 33)),
    "office": ((8, 20), (21, 40)),
    "hospital": ((6, 20),),
    "school": ((4, 8),),
    "mall": ((3, 7),),
    "station": ((2, 4),),
    "government": ((5, 20),),
}
#: Rated loads in kg by building type (GB/T 7025.1 series); hospitals carry beds.
LOADS = {
    "residential": (800, 1000, 1050),
    "office": (1000, 1050, 1350, 1600),
    "hospital": (1600,),
    "school": (1000, 1050),
    "mall": (1350, 1600),
    "station": (1000, 1350, 1600),
    "government": (800, 1000, 1050),
}
#: Share of elevators that are 4 m/s lifts in towers of 45-70 storeys.
TOWER_SHARE = 0.004
MAINTENANCE_COMPANIES = (
    ("连云港安达电梯工程有限公司", "0518-85510001"),
    ("江苏通力电梯维保有限公司连云港分公司", "0518-85510002"),
    ("连云港华信电梯服务有限公司", "0518-85510003"),
    ("港城迅达电梯安装维修有限公司", "0518-85510004"),
    ("连云港恒昌机电设备有限公司", "0518-85510005"),
    ("苏北日立电梯维保有限公司", "0518-85510006"),
    ("海州三菱电梯工程有限公司", "0518-85510007"),
    ("连云港奥达电梯技术服务有限公司", "0518-85510008"),
    ("赣榆永安电梯维修有限公司", "0518-85510009"),
    ("东海宏远电梯有限公司", "0518-85510010"),
)
#: Makers and their models (product-quality tracing); synthetic, shaped on the brands common
#: in Jiangsu.
PRODUCTS = (
    ("通力电梯有限公司", ("KONE MonoSpace 500", "KONE MiniSpace")),
    ("日立电梯（中国）有限公司", ("HGP", "UAX")),
    ("上海三菱电梯有限公司", ("LEHY-III", "NEXIEZ-MRL")),
    ("迅达（中国）电梯有限公司", ("Schindler 3300", "Schindler 5500")),
    ("奥的斯电梯（中国）有限公司", ("GeN2", "SkyWay")),
    ("康力电梯股份有限公司", ("KLK2", "KLW")),
)
ROADS = (
    "朝阳",
    "解放",
    "通灌",
    "海连",
    "凌州",
    "郁洲",
    "新浦",
    "苍梧",
    "花果山",
    "港城",
    "振华",
    "人民",
    "建设",
    "幸福",
    "海宁",
    "瀛洲",
)


def _speed_for(floors: int, rng: np.random.Generator) -> float:
    if floors <= 11:
        return 1.0
    if floors <= 18:
        return float(rng.choice([1.5, 1.6, 1.75]))
    if floors <= 33:
        return float(rng.choice([1.75, 2.0, 2.5], p=[0.5, 0.3, 0.2]))
    return 2.5


def generate(seed: int, count: int, as_of: dt.date) -> list[Elevator]:
    """Build ``count`` elevators of a synthetic Lianyungang as of ``as_of``."""
    if count < 1:
        raise ValueError(f"count: {count} is not a positive number of elevators")
    rng = np.random.default_rng(seed)
    # a stream of its own, so that adding makers left every other generated field as it was
    product_rng = np.random.default_rng([seed, 14])
    shares = np.array([d.elevator_share for d in DISTRICTS])
    district_idx = rng.choice(len(DISTRICTS), size=count, p=shares / shares.sum())
    types = list(BUILDING_TYPE_SHARE)
    type_idx = rng.choice(len(types), size=count, p=list(BUILDING_TYPE_SHARE.values()))
    elevators = []
    for i in range(count):
        d = DISTRICTS[district_idx[i]]
        btype = types[type_idx[i]]
        assert btype in BUILDING_TYPES
        if rng.random() < TOWER_SHARE:
            floors, speed, btype = int(rng.integers(45, 71)), 4.0, "office"
        else:
            bands = FLOORS[btype]
            lo, hi = bands[rng.integers(len(bands))]
            floors = int(rng.integers(lo, hi + 1))
            speed = _speed_for(floors, rng)
        load = float(rng.choice(LOADS[btype]))
        # Ages: mostly under 15 years, a tail of old lifts (> 15 years counts as old).
        age_days = int(min(rng.gamma(2.2, 1600.0), 30 * 365.25))
        installed = as_of - dt.timedelta(days=age_days)
        r_km = d.radius_km * np.sqrt(rng.random())
        theta = rng.random() * 2 * np.pi
        lat = d.latitude + r_km * np.cos(theta) / 111.0
        lon = d.longitude + r_km * np.sin(theta) / (111.0 * np.cos(np.radians(d.latitude)))
        company, contact = MAINTENANCE_COMPANIES[int(rng.integers(len(MAINTENANCE_COMPANIES)))]
        # Half-monthly maintenance: most on time, some overdue (TSG T5002-2017: 15 days).
        maint_age = int(rng.integers(0, 15)) if rng.random() < 0.92 else int(rng.integers(16, 60))
        insp_age = int(rng.integers(0, 365)) if rng.random() < 0.95 else int(rng.integers(366, 500))
        managed = btype == "residential" and rng.random() < 0.8
        terminal_p = min(1.0, d.terminal_share * (1.3 if managed else 1.0))
        road = ROADS[int(rng.integers(len(ROADS)))]
        number, block, car = (
            int(rng.integers(1, 300)),
            int(rng.integers(1, 30)),
            int(rng.integers(1, 5)),
        )
        maker, models = PRODUCTS[int(product_rng.integers(len(PRODUCTS)))]
        elevators.append(
            Elevator(
                registration_code=f"3110{d.admin_code}{installed.year:04d}{i + 1:06d}",
                address=f"连云港市{d.name_zh}{road}路{number}号{block}栋{car}号梯",
                district=d.name,
                latitude=round(float(lat), 6),
                longitude=round(float(lon), 6),
                building_type=btype,
                user_unit=f"{d.name_zh}{road}{'物业' if managed else '管理处'}",
                property_managed=managed,
                rated_speed_mps=speed,
                rated_load_kg=load,
                floors=floors,
                installed_on=installed,
                maintenance_company=company,
                maintenance_contact=contact,
                last_maintenance_on=max(installed, as_of - dt.timedelta(days=maint_age)),
                last_inspection_on=max(installed, as_of - dt.timedelta(days=insp_age)),
                has_terminal=bool(rng.random() < terminal_p),
                manufacturer=maker,
                model=models[int(product_rng.integers(len(models)))],
            )
        )
    return elevators
