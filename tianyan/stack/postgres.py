"""The local PostgreSQL + TimescaleDB cluster: installed once, run as the postgres user."""

from __future__ import annotations

import os
import pwd
import subprocess
from pathlib import Path

import psycopg
from psycopg import sql

from foundation.settings import Settings

from .errors import StackError

INSTALL_SCRIPT = Path(__file__).with_name("install-postgres.sh")
#: The database's owner: runs migrations, owns every object.
OWNER_ROLE = "tianyan"
#: The local cluster trusts 127.0.0.1 (development), except for this one database, which
#: asks for a SCRAM-SHA-256 password: where the tests prove that the roles' passwords work
#: as production's pg_hba (README § Production) will ask for them.
SCRAM_CHECK_DATABASE = "tianyan_scram_check"
_SCRAM_HBA_LINE = f"host {SCRAM_CHECK_DATABASE} all 127.0.0.1/32 scram-sha-256"


def _pg_major() -> int:
    debian = (
        Path("/etc/debian_version").read_text().split(".")[0]
        if Path("/etc/debian_version").exists()
        else ""
    )
    return 17 if debian == "13" else 15


def _bin(name: str) -> str:
    return f"/usr/lib/postgresql/{_pg_major()}/bin/{name}"


class LocalPostgres:
    """The cluster under ``var/pg``: data, socket and log."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.root = settings.var_dir / "pg"
        self.data = self.root / "data"
        self.run_dir = self.root / "run"
        self.log = settings.var_dir / "log" / "postgres.log"
        self.build_dir = settings.var_dir / "build"

    # -- running commands as the cluster's owner -------------------------------------------
    def _as_owner(self, args: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        # initdb and postgres refuse to run as root: run them as the postgres user.
        if os.geteuid() == 0:
            args = ["runuser", "-u", "postgres", "--", *args]
        return subprocess.run(args, check=check, capture_output=True, text=True)

    def _chown(self, path: Path) -> None:
        if os.geteuid() != 0:
            return
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            raise StackError(
                "there is no postgres user: install PostgreSQL (apt-get install postgresql-15)"
            ) from None
        os.chown(path, pw.pw_uid, pw.pw_gid)

    # -- lifecycle ----------------------------------------------------------------------------
    def install(self) -> None:
        """Install PostgreSQL and build TimescaleDB if they are not there (idempotent)."""
        self.build_dir.mkdir(parents=True, exist_ok=True)
        res = subprocess.run(["bash", str(INSTALL_SCRIPT), str(self.build_dir)])
        if res.returncode != 0:
            raise StackError("installing PostgreSQL with TimescaleDB failed (see the lines above)")

    def initialised(self) -> bool:
        return (self.data / "PG_VERSION").exists()

    def running(self) -> bool:
        if not self.initialised():
            return False
        return (
            self._as_owner([_bin("pg_ctl"), "status", "-D", str(self.data)], check=False).returncode
            == 0
        )

    def pid(self) -> int | None:
        """The postmaster's process id, if the cluster is running (its ``postmaster.pid``)."""
        try:
            pid = int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
            os.kill(pid, 0)
        except (OSError, ValueError):
            return None
        return pid

    def init(self) -> None:
        for d in (self.root, self.run_dir, self.log.parent):
            d.mkdir(parents=True, exist_ok=True)
        for d in (self.root, self.run_dir):
            self._chown(d)
        if not self.log.exists():
            self.log.touch()
        self._chown(self.log)
        if os.geteuid() == 0:
            probe = self._as_owner(["test", "-w", str(self.root)], check=False)
            if probe.returncode != 0:
                raise StackError(
                    f"the postgres user cannot reach {self.root}: every parent folder must be "
                    "searchable by others (chmod o+x), or set TIANYAN_VAR_DIR to a folder "
                    "it can reach"
                )
        if self.initialised():
            return
        res = self._as_owner(
            [
                _bin("initdb"),
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
            ],
            check=False,
        )
        if res.returncode != 0:
            raise StackError(f"initdb failed: {res.stderr.strip()}")
        conf = self.data / "postgresql.conf"
        with conf.open("a") as f:
            f.write(
                "\n# tianyan local stack\n"
                f"port = {self.settings.pg_port}\n"
                "listen_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.run_dir}'\n"
                "shared_preload_libraries = 'timescaledb'\n"
                "timescaledb.telemetry_level = off\n"
                "max_connections = 200\n"
                "shared_buffers = 1GB\n"
                "work_mem = 32MB\n"
                "maintenance_work_mem = 256MB\n"
                "max_wal_size = 4GB\n"
                "checkpoint_timeout = 15min\n"
                "timescaledb.max_background_workers = 4\n"
            )

    def _ensure_scram_check_hba(self) -> bool:
        """Put the SCRAM-only line for :data:`SCRAM_CHECK_DATABASE` first in pg_hba.conf
        (before the trust lines); True if the file changed."""
        hba = self.data / "pg_hba.conf"
        text = hba.read_text()
        if _SCRAM_HBA_LINE in text.splitlines():
            return False
        hba.write_text(f"# tianyan: password checks (tests)\n{_SCRAM_HBA_LINE}\n" + text)
        return True

    def start(self) -> None:
        changed = self._ensure_scram_check_hba()
        if self.running():
            if changed:
                self._as_owner([_bin("pg_ctl"), "reload", "-D", str(self.data)])
            return
        # The port as set now (TIANYAN_PG_PORT), not as it was when the cluster was made.
        res = self._as_owner(
            [
                *[_bin("pg_ctl"), "start", "-D", str(self.data), "-l", str(self.log)],
                *["-o", f"-p {self.settings.pg_port}", "-w", "-t", "60"],
            ],
            check=False,
        )
        if res.returncode != 0:
            tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-5:])
            raise StackError(f"PostgreSQL did not start: {res.stderr.strip()}\n{tail}")

    def stop(self) -> None:
        if self.running():
            self._as_owner([_bin("pg_ctl"), "stop", "-D", str(self.data), "-m", "fast", "-w"])

    def bootstrap(self) -> None:
        """Create the owner role, the database and the TimescaleDB extension (idempotent)."""
        dbname = psycopg.conninfo.conninfo_to_dict(self.settings.admin_database_url).get(
            "dbname", "tianyan"
        )
        su = dict(host="127.0.0.1", port=self.settings.pg_port, user="postgres", autocommit=True)
        with psycopg.connect(dbname="postgres", **su) as conn:
            conn.execute(
                sql.SQL(
                    "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {r}) THEN "
                    "CREATE ROLE {i} LOGIN CREATEROLE; END IF; END $$"
                ).format(r=sql.Literal(OWNER_ROLE), i=sql.Identifier(OWNER_ROLE))
            )
            # temp_file_limit may only be set by a superuser or a role granted it: the owner
            # sets it on the read roles (sql/roles.py)
            conn.execute(
                sql.SQL("GRANT SET ON PARAMETER temp_file_limit TO {}").format(
                    sql.Identifier(OWNER_ROLE)
                )
            )
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", [dbname]
            ).fetchone()
            if not exists:
                conn.execute(
                    sql.SQL("CREATE DATABASE {} OWNER {}").format(
                        sql.Identifier(str(dbname)), sql.Identifier(OWNER_ROLE)
                    )
                )
        with psycopg.connect(dbname=str(dbname), **su) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")


def check_database(url: str) -> str:
    """Connect and describe the server; raises :class:`StackError` if it does not answer."""
    try:
        with psycopg.connect(url, connect_timeout=5) as conn:
            row = conn.execute(
                "SELECT current_setting('server_version'), "
                "(SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'), "
                "current_setting('timescaledb.license', true)"
            ).fetchone()
    except psycopg.Error as e:
        raise StackError(f"TimescaleDB does not answer at {_redact(url)}: {e}".strip()) from e
    assert row is not None
    version, tsdb, license_ = row
    if tsdb is None:
        raise StackError(
            f"PostgreSQL {version} answers but the timescaledb extension is not created"
        )
    return f"PostgreSQL {version}, TimescaleDB {tsdb} ({license_} edition)"


def _redact(url: str) -> str:
    params = psycopg.conninfo.conninfo_to_dict(url)
    params.pop("password", None)
    return psycopg.conninfo.make_conninfo(**params)
