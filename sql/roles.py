"""The database roles' passwords, limits and scopes, applied by ``tianyan db migrate``.

Roles are created by the migrations (0001, 0007); what differs between a laptop and a
deployment — passwords, how long a read may run, how many connections and how much temporary
disk a reader may take — comes from the settings and is (re)applied here on every migrate.
Role settings are cluster-wide, like the roles themselves.

Passwords are sent as SCRAM-SHA-256 verifiers computed by libpq on this side
(``PQencryptPasswordConn``): the clear text never reaches the server, its logs or
``pg_stat_statements``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import psycopg
from psycopg import sql

from foundation.settings import Settings

#: The roles that only read (and so get the read limits): the all-seeing readers, the
#: public lookup and the scoped groups. Group roles' settings do not pass to their members,
#: so each scoped login role gets them too (:func:`create_scoped_role`).
READ_ROLES = ("tianyan_analyst", "tianyan_regulator", "tianyan_public")
SCOPED_GROUPS = {"user_unit": "tianyan_unit", "maintenance_company": "tianyan_maintenance"}


@dataclass(frozen=True)
class ReadLimits:
    """What one connection of a read role may take."""

    statement_timeout_ms: int = 60_000
    connection_limit: int = 20
    temp_file_limit_mb: int = 1024

    @classmethod
    def from_settings(cls, s: Settings) -> ReadLimits:
        return cls(
            s.pg_read_statement_timeout_ms, s.pg_read_connection_limit, s.pg_read_temp_file_limit_mb
        )

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if value < 1:
                raise ValueError(f"read limit {name} must be at least 1, got {value}")


def apply_read_limits(
    conn: psycopg.Connection, limits: ReadLimits, roles: Iterable[str] = READ_ROLES
) -> None:
    """Set statement_timeout, temp_file_limit and the connection limit on ``roles``."""
    for role in roles:
        r = sql.Identifier(role)
        conn.execute(
            sql.SQL("ALTER ROLE {} SET statement_timeout = {}").format(
                r, sql.Literal(f"{limits.statement_timeout_ms}ms")
            )
        )
        conn.execute(
            sql.SQL("ALTER ROLE {} SET temp_file_limit = {}").format(
                r, sql.Literal(f"{limits.temp_file_limit_mb}MB")
            )
        )
        conn.execute(
            sql.SQL("ALTER ROLE {} CONNECTION LIMIT {}").format(
                r, sql.Literal(limits.connection_limit)
            )
        )


def set_password(conn: psycopg.Connection, role: str, password: str) -> None:
    """Give ``role`` a SCRAM-SHA-256 password (the verifier is computed here)."""
    verifier = conn.pgconn.encrypt_password(password.encode(), role.encode(), b"scram-sha-256")
    conn.execute(
        sql.SQL("ALTER ROLE {} PASSWORD {}").format(
            sql.Identifier(role), sql.Literal(verifier.decode())
        )
    )


def apply_role_settings(url: str, settings: Settings) -> None:
    """Passwords from the settings and the read limits, as the database owner at ``url``."""
    with psycopg.connect(url, autocommit=True) as conn:
        apply_read_limits(conn, ReadLimits.from_settings(settings))
        for role, password in settings.pg_role_passwords:
            set_password(conn, role, password)


def create_scoped_role(
    url: str,
    role: str,
    *,
    user_unit: str | None = None,
    maintenance_company: str | None = None,
    password: str | None = None,
    limits: ReadLimits | None = None,
) -> None:
    """Create (or update) the login role of one user unit or one maintenance company.

    It joins ``tianyan_unit`` or ``tianyan_maintenance`` and is mapped in
    ``tianyan.data_scope``: row-level security then shows it only that unit's or company's
    elevators and their data. Idempotent.
    """
    if (user_unit is None) == (maintenance_company is None):
        raise ValueError("a scoped role stands for exactly one user unit or maintenance company")
    kind = "user_unit" if user_unit is not None else "maintenance_company"
    group = SCOPED_GROUPS[kind]
    with psycopg.connect(url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role]).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(group), sql.Identifier(role)))
        other = SCOPED_GROUPS["maintenance_company" if kind == "user_unit" else "user_unit"]
        conn.execute(
            sql.SQL("REVOKE {} FROM {}").format(sql.Identifier(other), sql.Identifier(role))
        )
        conn.execute(
            "INSERT INTO tianyan.data_scope (role_name, user_unit, maintenance_company)"
            " VALUES (%s, %s, %s) ON CONFLICT (role_name) DO UPDATE"
            " SET user_unit = excluded.user_unit,"
            " maintenance_company = excluded.maintenance_company",
            [role, user_unit, maintenance_company],
        )
        apply_read_limits(conn, limits or ReadLimits(), [role])
        if password:
            set_password(conn, role, password)


def create_sample_scoped_roles(
    url: str, unit_role: str = "tianyan_demo_unit", company_role: str = "tianyan_demo_company"
) -> tuple[str | None, str | None]:
    """One user-unit and one maintenance-company login role for the data at ``url`` (the unit
    with the most alerts, the company with the most samples out of normal service), so that
    ``dashboards check`` can run the scoped boards as a real unit and company would (the
    demo does this). Returns the unit and the company (None where there is none)."""
    with psycopg.connect(url) as conn:
        unit = conn.execute(
            "SELECT e.user_unit FROM tianyan.elevator e"
            " LEFT JOIN tianyan.alert a ON a.elevator_id = e.registration_code"
            " WHERE e.user_unit IS NOT NULL GROUP BY 1 ORDER BY count(a.alert_id) DESC, 1 LIMIT 1"
        ).fetchone()
        company = conn.execute(
            "SELECT e.maintenance_company FROM tianyan.elevator e"
            " LEFT JOIN tianyan.service_mode_sample s ON s.elevator_id = e.registration_code"
            " AND s.service_mode <> 1 WHERE e.maintenance_company IS NOT NULL"
            " GROUP BY 1 ORDER BY count(s.time) DESC, 1 LIMIT 1"
        ).fetchone()
    if unit is not None:
        create_scoped_role(url, unit_role, user_unit=str(unit[0]))
    if company is not None:
        create_scoped_role(url, company_role, maintenance_company=str(company[0]))
    return (
        None if unit is None else str(unit[0]),
        None if company is None else str(company[0]),
    )
