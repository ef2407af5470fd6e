"""The elevator registry: a synthetic city from a seed, or a real export imported from CSV."""

from .model import BUILDING_TYPES, DISTRICT_NAMES, DISTRICTS, ELEVATOR_COLUMNS, District, Elevator

__all__ = [
    "BUILDING_TYPES",
    "DISTRICTS",
    "DISTRICT_NAMES",
    "ELEVATOR_COLUMNS",
    "District",
    "Elevator",
]
