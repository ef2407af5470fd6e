"""The Grafana data sources: one PostgreSQL (TimescaleDB) source per database role.

A Grafana data source connects as one database user, and what a board may read is decided by
the database, not by Grafana: so each board points at the source of the role its users have
(``sql/idempotent/90_grants.sql``), and a board for the public can read nothing but the view
``public_elevator`` whatever its SQL says.

======================================  ===================  =================================
uid                                     database role        boards
======================================  ===================  =================================
``tianyan-timescaledb-analyst``         tianyan_analyst      operation, elevator, trip,
                                                             rescue
``tianyan-timescaledb-regulator``       tianyan_regulator    comprehensive supervision
``tianyan-timescaledb-public``          tianyan_public       public lookup
``tianyan-timescaledb-unit``            one unit's login     use safety
                                        role (tianyan_unit)
``tianyan-timescaledb-maintenance``     one company's login  maintenance
                                        role
                                        (tianyan_maintenance)
======================================  ===================  =================================

The unit and maintenance sources are scoped: in each user unit's (maintenance company's)
Grafana organisation they connect as its own login role (``tianyan db scoped-role``), and
row-level security shows it only its elevators (migration 0007); in the analysts'
organisation they connect as ``tianyan_analyst`` and show everything.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from grafana_foundation_sdk.models import dashboard

from dashboards.query import POSTGRES_TYPE
from foundation.settings import SSL_MODES

#: The smallest ``$__interval`` Grafana computes for these sources: the 1-s window features
#: are the finest aggregate stored (streams/windows.py).
MIN_INTERVAL = "1s"


@dataclass(frozen=True)
class RoleDataSource:
    """A Grafana PostgreSQL data source connecting as one database role."""

    role: str  # the PostgreSQL role it logs in as
    uid: str
    name: str
    users: str  # who reads through it
    #: For a scoped source (``role`` a group of per-unit login roles): the ``data_scope``
    #: column its login roles are mapped by, e.g. ``user_unit``.
    scope: str | None = None

    @property
    def ref(self) -> dashboard.DataSourceRef:
        """What a panel, target or variable names to use this source."""
        return dashboard.DataSourceRef(type_val=POSTGRES_TYPE, uid=self.uid)

    @property
    def login_variable(self) -> str:
        """For a scoped source: the variable Grafana's provisioning reads its login role from
        (the organisation's unit or company role)."""
        return f"TIANYAN_GRAFANA_{self.role.removeprefix('tianyan_').upper()}_ROLE"

    @property
    def password_variable(self) -> str:
        """The environment variable Grafana's provisioning reads this role's password from."""
        return f"TIANYAN_GRAFANA_{self.role.removeprefix('tianyan_').upper()}_PASSWORD"

    def json_data(self, database: str, sslmode: str) -> dict[str, object]:
        """The source's ``jsonData``: TimescaleDB on, so ``$__timeGroup`` uses time_bucket;
        ``sslmode`` as libpq's (``verify-full`` in production: README § Production)."""
        return {
            "database": database,
            "sslmode": sslmode,
            "postgresVersion": 1500,
            "timescaledb": True,
            "timeInterval": MIN_INTERVAL,
            "maxOpenConns": 10,
            "maxIdleConns": 10,
            "connMaxLifetime": 14400,
        }

    def api_payload(
        self, database_url: str, sslmode: str = "disable", user: str | None = None
    ) -> dict[str, object]:
        """The body of Grafana's ``/api/datasources`` for a database at ``database_url``.

        Host, port, database name and ``?sslmode=`` (else ``sslmode``: the setting
        ``TIANYAN_PG_SSLMODE``) are taken from the URL; the user is this source's
        role (for a scoped source, ``user``: the login role of the organisation's unit, or
        ``tianyan_analyst`` in the analysts' organisation). No password is sent: Grafana keeps
        a password set on the source before, and a source without one works where the
        database trusts Grafana's host (the local stack).
        """
        parts = urlsplit(database_url)
        if not parts.hostname or not parts.path.strip("/"):
            raise ValueError(f"{database_url!r}: expected postgresql://user@host:port/database")
        sslmode = parse_qs(parts.query).get("sslmode", [sslmode])[-1]
        if sslmode not in SSL_MODES:
            raise ValueError(f"sslmode {sslmode!r}: expected one of {', '.join(SSL_MODES)}")
        return {
            "uid": self.uid,
            "name": self.name,
            "type": POSTGRES_TYPE,
            "access": "proxy",
            "url": f"{parts.hostname}:{parts.port or 5432}",
            "user": user or (ANALYST.role if self.scope else self.role),
            "isDefault": False,
            "jsonData": self.json_data(parts.path.strip("/"), sslmode),
        }


ANALYST = RoleDataSource(
    role="tianyan_analyst",
    uid="tianyan-timescaledb-analyst",
    name="TimescaleDB (analyst)",
    users="analysts, rescue dispatchers, maintenance supervisors, user units",
)
REGULATOR = RoleDataSource(
    role="tianyan_regulator",
    uid="tianyan-timescaledb-regulator",
    name="TimescaleDB (regulator)",
    users="the market-supervision bureau",
)
PUBLIC = RoleDataSource(
    role="tianyan_public",
    uid="tianyan-timescaledb-public",
    name="TimescaleDB (public lookup)",
    users="anyone looking up an elevator",
)
UNIT = RoleDataSource(
    role="tianyan_unit",
    uid="tianyan-timescaledb-unit",
    name="TimescaleDB (user unit)",
    users="one user unit, in its own Grafana organisation",
    scope="user_unit",
)
MAINTENANCE = RoleDataSource(
    role="tianyan_maintenance",
    uid="tianyan-timescaledb-maintenance",
    name="TimescaleDB (maintenance company)",
    users="one maintenance company, in its own Grafana organisation",
    scope="maintenance_company",
)
DATASOURCES = (ANALYST, REGULATOR, PUBLIC, UNIT, MAINTENANCE)


def for_role(role: str) -> RoleDataSource:
    """The data source of a database role."""
    for source in DATASOURCES:
        if source.role == role:
            return source
    raise KeyError(f"no data source for role {role!r}; roles: {[s.role for s in DATASOURCES]}")


def provisioning_datasources() -> dict[str, object]:
    """Grafana's ``provisioning/datasources`` file for the sources (one copy per
    organisation: ``$TIANYAN_GRAFANA_UNIT_ROLE`` and ``$TIANYAN_GRAFANA_MAINTENANCE_ROLE`` are
    the organisation's unit and company login roles, or ``tianyan_analyst`` in the analysts'
    organisation).

    Where the database is comes from Grafana's environment (``$TIANYAN_GRAFANA_DB_ADDRESS``,
    ``host:port``, and ``$TIANYAN_GRAFANA_DB_NAME``), how TLS is used from
    ``$TIANYAN_GRAFANA_DB_SSLMODE`` (``disable`` for the local stack, ``verify-full`` in
    production) and ``$TIANYAN_GRAFANA_DB_SSL_ROOT_CERT`` (the CA that signed the server's
    certificate), each role's password from :attr:`RoleDataSource.password_variable`.
    """
    sources = []
    for s in DATASOURCES:
        json_data = s.json_data("${TIANYAN_GRAFANA_DB_NAME}", "${TIANYAN_GRAFANA_DB_SSLMODE}")
        json_data["tlsConfigurationMethod"] = "file-path"
        json_data["sslRootCertFile"] = "${TIANYAN_GRAFANA_DB_SSL_ROOT_CERT}"
        sources.append(
            {
                "name": s.name,
                "uid": s.uid,
                "type": POSTGRES_TYPE,
                "access": "proxy",
                "url": "${TIANYAN_GRAFANA_DB_ADDRESS}",
                # a scoped source logs in as the organisation's unit role
                "user": "${" + s.login_variable + "}" if s.scope else s.role,
                "isDefault": False,
                "editable": False,
                "jsonData": json_data,
                "secureJsonData": {"password": "${" + s.password_variable + "}"},
            }
        )
    return {"apiVersion": 1, "datasources": sources}
