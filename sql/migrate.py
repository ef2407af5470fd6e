"""Apply tianyan's schema: numbered, frozen migrations, then the idempotent objects.

Numbered files in ``sql/migrations`` (``NNNN_name.sql``) run once each, in order, every
one in its own transaction with its SHA-256 recorded. A migration whose file changed after
it was applied is refused: released migrations are frozen, and a change goes into a new
file. Files in ``sql/idempotent`` (views, grants) are re-applied on every run, so they may
be edited freely. Concurrent runs serialise on an advisory lock.

No migration library is used: yoyo and alembic record which migrations ran but not what
they contained, so neither can refuse an edited one, which is this module's main duty.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

HERE = Path(__file__).parent
MIGRATIONS_DIR = HERE / "migrations"
IDEMPOTENT_DIR = HERE / "idempotent"
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
#: Any constant; it only has to be the same for every tianyan process.
_ADVISORY_LOCK_KEY = 0x7469616E79616E


class MigrationError(RuntimeError):
    """The migrations on disk and those recorded in the database disagree, or one failed."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path
    sha256: str

    @property
    def filename(self) -> str:
        return self.path.name


@dataclass
class MigrationReport:
    applied: list[str] = field(default_factory=list)
    already_applied: int = 0
    idempotent: list[str] = field(default_factory=list)


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """The numbered migrations in ``directory``, in order."""
    found: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        m = _NAME.match(path.name)
        if m is None:
            raise MigrationError(f"{path}: a migration's file name must be NNNN_lowercase_name.sql")
        version = int(m.group(1))
        if version in found:
            raise MigrationError(
                f"{path.name} and {found[version].filename} share version {version:04d}"
            )
        found[version] = Migration(
            version, m.group(2), path, hashlib.sha256(path.read_bytes()).hexdigest()
        )
    return [found[v] for v in sorted(found)]


def migrate(
    url: str,
    migrations_dir: Path = MIGRATIONS_DIR,
    idempotent_dir: Path = IDEMPOTENT_DIR,
) -> MigrationReport:
    """Bring the database at ``url`` up to date; re-running is a no-op.

    Raises
    ------
    MigrationError
        An applied migration was edited or removed, or a migration failed (its
        transaction is rolled back and nothing after it runs).
    """
    migrations = discover(migrations_dir)
    by_version = {m.version: m for m in migrations}
    report = MigrationReport()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", [_ADVISORY_LOCK_KEY])
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS public.tianyan_schema_migration ("
                " version integer PRIMARY KEY, name text NOT NULL, sha256 text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            applied = conn.execute(
                "SELECT version, name, sha256, applied_at FROM public.tianyan_schema_migration "
                "ORDER BY version"
            ).fetchall()
            for version, name, sha, applied_at in applied:
                current = by_version.get(version)
                if current is None:
                    raise MigrationError(
                        f"migration {version:04d}_{name}.sql was applied on "
                        f"{applied_at:%Y-%m-%d %H:%M} "
                        "but its file is gone; restore it (applied migrations are never removed)"
                    )
                if current.sha256 != sha:
                    raise MigrationError(
                        f"migration {current.filename} was edited after it was applied on "
                        f"{applied_at:%Y-%m-%d %H:%M} (recorded sha256 {sha[:12]}…, the file now "
                        f"has {current.sha256[:12]}…). Applied migrations are frozen: revert the "
                        "edit and put the change in a new numbered migration"
                    )
            done = {row[0] for row in applied}
            report.already_applied = len(done)
            for m in migrations:
                if m.version in done:
                    continue
                _run(conn, m.path, record=m)
                report.applied.append(m.filename)
            with conn.transaction():
                conn.execute("SET LOCAL search_path = tianyan, public")
                for path in sorted(idempotent_dir.glob("*.sql")):
                    _execute(conn, path)
                    report.idempotent.append(path.name)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", [_ADVISORY_LOCK_KEY])
    return report


def _run(conn: psycopg.Connection, path: Path, record: Migration) -> None:
    with conn.transaction():
        conn.execute("SET LOCAL search_path = tianyan, public")
        _execute(conn, path)
        conn.execute(
            "INSERT INTO public.tianyan_schema_migration (version, name, sha256)"
            " VALUES (%s, %s, %s)",
            [record.version, record.name, record.sha256],
        )


def _execute(conn: psycopg.Connection, path: Path) -> None:
    try:
        # No parameters: psycopg sends the file as one simple query, statements and all.
        conn.execute(path.read_text())
    except psycopg.Error as e:
        raise MigrationError(f"{path.name} failed: {e}") from e
