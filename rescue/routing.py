"""Which incidents go to whom: the routing policy and the endpoints of each kind (pure, no I/O).

Every alert records an incident (the boards show them all); its *route* says who is told:

- ``rescue``: the rescue platform (96333) — trappings and safety faults at or above
  ``TIANYAN_RESCUE_MIN_SEVERITY`` (``critical``) by default — and the response level the
  incident has reached (enterprise first, then street, district and city as it escalates);
- ``maintenance``: every other incident, told only to the maintenance company's endpoint,
  if one is set; otherwise recorded only.

Endpoints are the entries of ``TIANYAN_RESCUE_WEBHOOK_URL``, each optionally prefixed with
its kind: ``https://…`` (the rescue platform), ``maintenance=https://…``, and per response
level ``street=https://…`` (any district) or ``district@朝阳区=https://…`` (that district's own,
preferred over the level's endpoint for any district). Their secrets stay one entry per
endpoint, in order, in ``TIANYAN_RESCUE_WEBHOOK_SECRET``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Literal

from detectors.alerts import TRAPPED_TYPES

from .lifecycle import ESCALATION_LEVELS, SEVERITY_RANK

Route = Literal["rescue", "maintenance"]
#: Endpoint kinds: the rescue platform, the maintenance company, and each response level.
ENDPOINT_KINDS: Final = ("rescue", "maintenance", *ESCALATION_LEVELS)
_PREFIX: Final = re.compile(r"(?P<kind>[a-z]+)(@(?P<district>[^=\s]+))?=(?P<url>\S+)")


class RoutingError(ValueError):
    """A routing setting tianyan cannot use; the message names the variable and the value."""


@dataclass(frozen=True)
class EndpointRoute:
    """Where one configured endpoint sits: its kind and, for a response level, its district
    (``None``: the level's endpoint for every district without its own)."""

    kind: str
    district: str | None = None


#: Where an endpoint without a kind sits: the rescue platform.
RESCUE_PLATFORM: Final = EndpointRoute("rescue")


def parse_endpoint_entry(entry: str) -> tuple[str, EndpointRoute]:
    """``(url, route)`` of one ``TIANYAN_RESCUE_WEBHOOK_URL`` entry.

    >>> parse_endpoint_entry("https://96333.example/hook")
    ('https://96333.example/hook', EndpointRoute(kind='rescue', district=None))
    >>> parse_endpoint_entry("district@朝阳区=https://cy.example/h?a=b")
    ('https://cy.example/h?a=b', EndpointRoute(kind='district', district='朝阳区'))

    Raises
    ------
    RoutingError
        For an unknown kind, or a district on an endpoint that is not a response level.
    """
    m = _PREFIX.fullmatch(entry)
    if m is None or "://" in entry.split("=", 1)[0]:
        return entry, RESCUE_PLATFORM
    kind, district = m["kind"], m["district"]
    if kind not in ENDPOINT_KINDS:
        raise RoutingError(
            f"TIANYAN_RESCUE_WEBHOOK_URL entry {kind}=…: unknown endpoint kind {kind!r};"
            f" expected one of {', '.join(ENDPOINT_KINDS)}"
        )
    if district is not None and kind not in ESCALATION_LEVELS:
        raise RoutingError(
            f"TIANYAN_RESCUE_WEBHOOK_URL entry {kind}@{district}=…: only a response level"
            f" ({', '.join(ESCALATION_LEVELS)}) has per-district endpoints"
        )
    return m["url"], EndpointRoute(kind, district)


@dataclass(frozen=True)
class Routing:
    """The routing policy and the endpoints (by stored name) of each kind.

    >>> r = Routing(rescue=("r",), maintenance=("m",),
    ...             levels=(("district", None, "d"), ("district", "朝阳区", "cy")))
    >>> r.route("trapped_at_level", "critical"), r.route("device_offline", "minor")
    ('rescue', 'maintenance')
    >>> r.route("overspeed", "critical")
    'rescue'
    >>> r.endpoints_for("rescue", "street", "朝阳区")
    ('r',)
    >>> r.endpoints_for("rescue", "district", "朝阳区"), r.endpoints_for("rescue", "city", "x")
    (('r', 'cy'), ('r', 'd'))
    >>> r.endpoints_for("maintenance", "enterprise", "朝阳区")
    ('m',)
    """

    #: Alert types that always go to the rescue platform, whatever their severity.
    rescue_types: frozenset[str] = TRAPPED_TYPES
    #: Any alert at or above this severity goes to the rescue platform too.
    rescue_min_severity: str = "critical"
    rescue: tuple[str, ...] = ()
    maintenance: tuple[str, ...] = ()
    #: ``(level, district or None, endpoint name)``
    levels: tuple[tuple[str, str | None, str], ...] = ()

    def __post_init__(self) -> None:
        if self.rescue_min_severity not in SEVERITY_RANK:
            raise RoutingError(
                f"TIANYAN_RESCUE_MIN_SEVERITY={self.rescue_min_severity!r}: expected one of"
                f" {', '.join(SEVERITY_RANK)}"
            )

    def route(self, alert_type: str, severity: str) -> Route:
        """Who is told of an incident of ``alert_type`` at ``severity``."""
        if alert_type in self.rescue_types or SEVERITY_RANK.get(severity, 0) >= SEVERITY_RANK.get(
            self.rescue_min_severity, 3
        ):
            return "rescue"
        return "maintenance"

    def level_endpoints(self, level: str, district: str | None) -> tuple[str, ...]:
        """The endpoints of response ``level`` for ``district``: its own, else the level's
        endpoints for every district."""
        own = tuple(n for lv, d, n in self.levels if lv == level and d and d == district)
        return own or tuple(n for lv, d, n in self.levels if lv == level and d is None)

    def endpoints_for(self, route: str, level: str, district: str | None) -> tuple[str, ...]:
        """The endpoints an event of an incident on ``route``, at response ``level``, in
        ``district``, is queued for: a rescue incident's go to the rescue platform and to
        every level it has reached (a level, once told, follows the incident to its end)."""
        if route != "rescue":
            return self.maintenance
        reached = ESCALATION_LEVELS[: ESCALATION_LEVELS.index(level) + 1]
        names = list(self.rescue)
        for lv in reached:
            names += [n for n in self.level_endpoints(lv, district) if n not in names]
        return tuple(names)

    @property
    def all_endpoints(self) -> tuple[str, ...]:
        """Every endpoint's name: what this dispatcher claims deliveries for."""
        return (*self.rescue, *self.maintenance, *(n for _, _, n in self.levels))


def routing_from(
    endpoints: Iterable[tuple[str, EndpointRoute]],
    *,
    rescue_types: frozenset[str] = TRAPPED_TYPES,
    rescue_min_severity: str = "critical",
) -> Routing:
    """A :class:`Routing` of ``(endpoint name, where it sits)`` pairs."""
    pairs = list(endpoints)
    return Routing(
        rescue_types=rescue_types,
        rescue_min_severity=rescue_min_severity,
        rescue=tuple(n for n, r in pairs if r.kind == "rescue"),
        maintenance=tuple(n for n, r in pairs if r.kind == "maintenance"),
        levels=tuple((r.kind, r.district, n) for n, r in pairs if r.kind in ESCALATION_LEVELS),
    )
