"""The local MQTT broker terminals connect to: Debian's Mosquitto, configured under ``var/``.

Each terminal has its own username (its elevator's registration code) and password, hashed
in Mosquitto's password file by ``mosquitto_passwd``. Passwords rather than client
certificates: a terminal is revoked by deleting one line and reloading the broker (SIGHUP),
at once, with no certificate revocation list to publish and keep current; the TLS listener
still encrypts everything a terminal sends over the mobile network.

The ACL file lets a terminal publish only to ``tianyan/v1/{its code}/telemetry`` and
``…/events`` and subscribe only to its own ``…/commands``; the gateway user reads every
terminal's telemetry and events and writes every terminal's commands.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path

from foundation.settings import Settings

from .errors import StackError
from .mosquitto_persistence import restore_shared_subscriptions

#: A terminal id: its elevator's registration code (20 digits in the city's registry; any
#: letters, digits, ``-`` and ``_`` accepted, nothing that could widen an ACL pattern).
TERMINAL_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

ACL = """\
# Written by `tianyan stack up`; edits are overwritten.
# Every terminal (username = its elevator's registration code) speaks only for its elevator.
pattern write tianyan/v1/%u/telemetry
pattern write tianyan/v1/%u/events
pattern read tianyan/v1/%u/commands

user {gateway}
topic read tianyan/v1/+/telemetry
topic read tianyan/v1/+/events
topic write tianyan/v1/+/commands
"""


def _require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise StackError(
            f"the MQTT broker needs {tool}, which is not installed: "
            "install it (apt-get install mosquitto) and run again"
        )
    return path


def _run(*args: str) -> None:
    res = subprocess.run(list(args), capture_output=True, text=True)
    if res.returncode != 0:
        raise StackError(f"{' '.join(args[:2])} failed: {res.stdout}{res.stderr}")


class LocalMosquitto:
    """The broker under ``var/mosquitto``: configuration, password and ACL files, TLS keys."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.root = settings.var_dir / "mosquitto"
        self.config = self.root / "mosquitto.conf"
        self.passwords = self.root / "passwords"
        self.acl = self.root / "acl"
        self.tls = self.root / "tls"
        self.credentials = self.root / "terminals"
        self.gateway_password_file = self.root / "gateway.password"
        self.pid_file = self.root / "mosquitto.pid"
        self.data = self.root / "data"
        #: Each gateway session's shared subscriptions (client id → filters), put back
        #: into the persistence file at every start (see :mod:`.mosquitto_persistence`).
        self.shared_subscriptions = self.root / "shared-subscriptions.json"
        self.log = settings.var_dir / "log" / "mosquitto.log"

    # -- software -----------------------------------------------------------------------------
    def install(self) -> None:
        """Install Debian's mosquitto package once (as root), like PostgreSQL."""
        if shutil.which("mosquitto") or Path("/usr/sbin/mosquitto").exists():
            return
        if os.geteuid() != 0:
            raise StackError("missing package mosquitto: install it (apt-get install mosquitto)")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "mosquitto"]
        if subprocess.run(cmd, env=env, capture_output=True).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
            res = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if res.returncode != 0:
                raise StackError(f"apt-get install mosquitto failed: {res.stderr[-2000:]}")

    @staticmethod
    def _binary() -> str:
        return shutil.which("mosquitto") or "/usr/sbin/mosquitto"

    # -- configuration ------------------------------------------------------------------------
    def _write_tls(self) -> None:
        """A local CA and a server certificate for the TLS listener (made once)."""
        if (self.tls / "server.crt").exists():
            return
        openssl = shutil.which("openssl")
        if openssl is None:
            raise StackError("the MQTT TLS listener needs openssl: apt-get install openssl")
        self.tls.mkdir(parents=True, exist_ok=True)
        t = self.tls
        _run(openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650",
             "-subj", "/CN=tianyan local MQTT CA", "-keyout", str(t / "ca.key"),
             "-out", str(t / "ca.crt"))  # fmt: skip
        _run(openssl, "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
             "-keyout", str(t / "server.key"), "-out", str(t / "server.csr"))  # fmt: skip
        ext = t / "server.ext"
        ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
        _run(openssl, "x509", "-req", "-in", str(t / "server.csr"), "-CA", str(t / "ca.crt"),
             "-CAkey", str(t / "ca.key"), "-CAcreateserial", "-days", "3650",
             "-extfile", str(ext), "-out", str(t / "server.crt"))  # fmt: skip
        for key in ("ca.key", "server.key"):
            (t / key).chmod(0o600)

    def _write_config(self) -> None:
        s = self.settings
        self.root.mkdir(parents=True, exist_ok=True)
        self.data.mkdir(parents=True, exist_ok=True)
        self.credentials.mkdir(parents=True, exist_ok=True)
        self._write_tls()
        self.acl.write_text(ACL.format(gateway=s.mqtt_gateway_username))
        if not self.passwords.exists():
            self.passwords.touch(mode=0o600)
        if not self.gateway_password_file.exists():
            self.gateway_password_file.write_text(secrets.token_urlsafe(24))
            self.gateway_password_file.chmod(0o600)
            self._passwd(s.mqtt_gateway_username, self.gateway_password_file.read_text())
        self.config.write_text(
            "# Written by `tianyan stack up`; edits are overwritten.\n"
            "per_listener_settings false\n"
            "allow_anonymous false\n"
            f"password_file {self.passwords}\n"
            f"acl_file {self.acl}\n"
            "persistence true\n"
            f"persistence_location {self.data}/\n"
            "autosave_interval 10\n"
            # Messages queued for an offline QoS 1 subscriber (a gateway restarting).
            "max_queued_messages 1000000\n"
            "max_inflight_messages 0\n"
            # stderr: unbuffered, so the log is whole even when the broker is killed.
            "log_dest stderr\n"
            "log_type error\nlog_type warning\nlog_type notice\nlog_type information\n"
            "connection_messages true\n"
            # Plain, for development: localhost only.
            f"listener {s.mqtt_port} 127.0.0.1\n"
            "max_connections -1\n"
            f"listener {s.mqtt_tls_port}\n"
            "max_connections -1\n"
            f"cafile {self.tls / 'ca.crt'}\n"
            f"certfile {self.tls / 'server.crt'}\n"
            f"keyfile {self.tls / 'server.key'}\n"
        )
        self._own()

    def _passwd(self, username: str, password: str) -> None:
        _run(_require("mosquitto_passwd"), "-b", str(self.passwords), username, password)
        self._own()

    def _own(self) -> None:
        """Started as root, Mosquitto drops to the ``mosquitto`` user before it reads its
        password and ACL files and writes its persistence: hand it ``var/mosquitto``."""
        if os.geteuid() != 0:
            return
        try:
            pw = pwd.getpwnam("mosquitto")
        except KeyError:
            return
        for path in [self.root, *self.root.rglob("*")]:
            # The broker's own files come and go (its persistence is written anew).
            with contextlib.suppress(FileNotFoundError):
                os.chown(path, pw.pw_uid, pw.pw_gid)

    # -- credentials --------------------------------------------------------------------------
    def issue(self, terminal_id: str) -> str:
        """Give ``terminal_id`` a new password (replacing any); returns it, keeps it 0600."""
        return self.issue_many([terminal_id])[terminal_id]

    def issue_many(self, terminal_ids: list[str]) -> dict[str, str]:
        """New passwords for ``terminal_ids`` (replacing any), hashed by one
        ``mosquitto_passwd -U`` run; call :meth:`reload` for a running broker to see them."""
        for terminal_id in terminal_ids:
            if not TERMINAL_ID.match(terminal_id) or (
                terminal_id == self.settings.mqtt_gateway_username
            ):
                raise StackError(
                    f"terminal id {terminal_id!r}: use the elevator's registration code "
                    "(letters, digits, - and _, at most 64)"
                )
        self._write_config()
        issued = {t: secrets.token_urlsafe(18) for t in terminal_ids}
        plain = self.root / f"new-passwords.{os.getpid()}"
        plain.touch(mode=0o600)
        try:
            plain.write_text("".join(f"{t}:{p}\n" for t, p in issued.items()))
            _run(_require("mosquitto_passwd"), "-U", str(plain))
            hashed = plain.read_text()
        finally:
            plain.unlink(missing_ok=True)
        kept = [
            ln
            for ln in self.passwords.read_text().splitlines()
            if ln and ln.split(":", 1)[0] not in issued
        ]
        self.passwords.write_text("".join(ln + "\n" for ln in kept) + hashed)
        for terminal_id, password in issued.items():
            path = self.credentials / terminal_id
            path.write_text(password)
            path.chmod(0o600)
        self._own()
        return issued

    def revoke(self, terminal_id: str) -> bool:
        """Take ``terminal_id``'s credential away; False when it had none."""
        return bool(self.revoke_many([terminal_id]))

    def revoke_many(self, terminal_ids: list[str]) -> list[str]:
        """Take the credentials of ``terminal_ids`` away; returns those that had one. Call
        :meth:`reload` for a running broker to refuse them."""
        wanted = {t for t in terminal_ids if TERMINAL_ID.match(t)}
        if not wanted or not self.passwords.exists():
            return []
        lines = self.passwords.read_text().splitlines()
        kept = [ln for ln in lines if ln.split(":", 1)[0] not in wanted]
        revoked = [ln.split(":", 1)[0] for ln in lines if ln.split(":", 1)[0] in wanted]
        for terminal_id in wanted:
            (self.credentials / terminal_id).unlink(missing_ok=True)
        if revoked:
            self.passwords.write_text("".join(ln + "\n" for ln in kept))
            self._own()
        return revoked

    def password(self, terminal_id: str) -> str | None:
        """The password issued to ``terminal_id`` on this machine, if any."""
        try:
            return (self.credentials / terminal_id).read_text()
        except FileNotFoundError:
            return None

    def gateway_password(self) -> str:
        if self.settings.mqtt_gateway_password:
            return self.settings.mqtt_gateway_password
        try:
            return self.gateway_password_file.read_text()
        except FileNotFoundError:
            raise StackError(
                f"no gateway password: start the local broker (`tianyan stack up`) or set "
                f"TIANYAN_MQTT_GATEWAY_PASSWORD (looked in {self.gateway_password_file})"
            ) from None

    # -- lifecycle ----------------------------------------------------------------------------
    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text())
            os.kill(pid, 0)
        except (FileNotFoundError, ValueError, ProcessLookupError):
            return None
        return pid

    def reload(self) -> None:
        """Make the running broker read its password and ACL files again (SIGHUP)."""
        pid = self.pid()
        if pid is not None:
            os.kill(pid, signal.SIGHUP)

    # -- shared subscriptions across restarts ------------------------------------------------
    def remember_shared_subscriptions(self, client_id: str, filters: list[str]) -> None:
        """Keep ``client_id``'s shared subscriptions (QoS 1) across broker restarts."""
        sessions = self._remembered_sessions()
        if sessions.get(client_id) == filters:
            return
        sessions[client_id] = filters
        self._remember_sessions(sessions)

    def retire_gateway(self, client_id: str | None = None) -> None:
        """End a gateway's broker session (the settings' gateway id by default; see
        :func:`streams.gateway.retire`) and, for the local broker, stop putting its shared
        subscriptions back at restarts. Raises ConnectionError when the broker refuses."""
        from streams.gateway import retire

        client_id = client_id or self.settings.gateway_id
        retire(self.settings, self.gateway_password(), client_id)
        if self.settings.mqtt_local:
            sessions = self._remembered_sessions()
            if sessions.pop(client_id, None) is not None:
                self._remember_sessions(sessions)

    def _remember_sessions(self, sessions: dict[str, list[str]]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.shared_subscriptions.with_suffix(f".{os.getpid()}")
        tmp.write_text(json.dumps(sessions, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, self.shared_subscriptions)

    def _remembered_sessions(self) -> dict[str, list[str]]:
        try:
            sessions = json.loads(self.shared_subscriptions.read_text())
        except FileNotFoundError:
            return {}
        except ValueError as e:
            raise StackError(f"{self.shared_subscriptions} is not JSON ({e}): delete it") from e
        return {str(k): [str(f) for f in v] for k, v in sessions.items()}

    def _restore_shared_subscriptions(self) -> list[tuple[str, str]]:
        """Mosquitto before 2.0.19 does not save shared subscriptions: put them back."""
        if _version() >= (2, 0, 19):
            return []
        return restore_shared_subscriptions(self.data / "mosquitto.db", self._remembered_sessions())

    def start(self, timeout_s: float = 20.0) -> None:
        if self.pid() is not None:
            return
        self._write_config()
        restored = self._restore_shared_subscriptions()
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            if restored:
                log.write(
                    f"{int(time.time())}: tianyan: restored shared subscriptions "
                    f"{', '.join(f'{c} {f}' for c, f in restored)}\n".encode()
                )
                log.flush()
            proc = subprocess.Popen(
                [self._binary(), "-c", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.pid_file.write_text(str(proc.pid))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-10:])
                raise StackError(f"the MQTT broker exited with {proc.returncode}:\n{tail}")
            try:
                check_mqtt(self.settings, timeout_s=2)
                return
            except StackError:
                time.sleep(0.2)
        raise StackError(f"the MQTT broker did not answer within {timeout_s:.0f} s; see {self.log}")

    def stop(self, timeout_s: float = 20.0) -> None:
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            # A broker this process started stays a zombie, "alive", until it is reaped.
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            os.kill(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)


def _version() -> tuple[int, ...]:
    """Mosquitto's version, from the first line of ``mosquitto -h``."""
    res = subprocess.run([LocalMosquitto._binary(), "-h"], capture_output=True, text=True)
    found = re.search(r"mosquitto version (\d+)\.(\d+)\.(\d+)", res.stdout + res.stderr)
    if found is None:
        raise StackError(f"cannot tell Mosquitto's version from: {res.stdout[:200]!r}")
    return tuple(int(n) for n in found.groups())


def check_mqtt(settings: Settings, timeout_s: float = 5.0) -> str:
    """Connect as the gateway; raises :class:`StackError` if the broker does not accept it."""
    import paho.mqtt.client as mqtt

    from streams.mqtt import connect_gateway_client

    try:
        password = LocalMosquitto(settings).gateway_password()
        client = connect_gateway_client(settings, password, "tianyan-status", timeout_s=timeout_s)
    except (OSError, ConnectionError, mqtt.WebsocketConnectionError) as e:
        raise StackError(f"MQTT broker does not answer at {_where(settings)}: {e}") from e
    client.disconnect()
    return f"broker at {_where(settings)} accepts the gateway"


def _where(settings: Settings) -> str:
    port = settings.mqtt_tls_port if settings.mqtt_tls else settings.mqtt_port
    return f"{settings.mqtt_host}:{port}"
