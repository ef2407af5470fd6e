"""The local broker's security (``tianyan stack up --secure``): a certificate authority of its
own, SCRAM-SHA-512 users per component, and the ACLs that give each the least it needs.

Everything lives under ``var/kafka-secure/``:

- ``tls/ca.pem`` (the authority clients trust: ``TIANYAN_KAFKA_SSL_CAFILE``), ``tls/ca.key``,
  the broker's key and certificate (for ``127.0.0.1`` and ``localhost``) in ``broker.p12``;
- ``users.json`` (mode 0600): each component's SCRAM user and password, made once;
- ``clients/<component>.env``: the ``TIANYAN_KAFKA_*`` variables of each component.

The controller listener speaks TLS and asks for a client certificate (the broker's own, the
super user ``User:CN=tianyan-broker``); SCRAM cannot serve there, its credentials live in the
metadata the controller serves. No ACL, no access (``allow.everyone.if.no.acl.found=false``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from foundation.kafka_security import KafkaSecurity, kafka_python_config
from foundation.settings import Settings, kafka_security_env

from .errors import StackError

#: The super user: creates topics, grants ACLs, reads the stack's status.
ADMIN = "admin"
#: One SCRAM user per component; :func:`acl_plan` says what each may do.
COMPONENTS = ("worker", "dispatcher", "publisher", "auditor")
#: The principal of the broker's certificate (its controller connection).
BROKER_PRINCIPAL = "User:CN=tianyan-broker"
SCRAM_MECHANISM = "SCRAM-SHA-512"
_CERT_DAYS = 825


@dataclass(frozen=True)
class Grant:
    """One ACL: ``user`` may ``operation`` the ``resource`` (topic or group) named ``name``
    (or every one starting with it, when ``prefixed``)."""

    user: str
    operation: str
    resource: str
    name: str
    prefixed: bool = False


def acl_plan(settings: Settings) -> list[Grant]:
    """Each component's least rights on ``settings``'s topics and groups.

    - worker: reads raw telemetry (its group), writes quarantine and alerts, owns its Faust
      app's topics (``<worker id>-…``); as a replay worker (``--replay-run``) reads the
      replay runs' topics (``<raw topic>.replay.…``) under groups ``<worker id>.replay.…``;
    - dispatcher: reads alerts (its group), writes commands, dead letters and audit anchors,
      owns its Faust app's topics;
    - publisher (replay, simulator, terminals' gateway): writes raw telemetry; creates and
      writes the replay runs' own topics, nothing else;
    - auditor (``tianyan audit verify``): reads the audit anchors.
    """
    s = settings
    return [
        Grant("worker", "READ", "TOPIC", s.raw_topic),
        Grant("worker", "WRITE", "TOPIC", s.quarantine_topic),
        Grant("worker", "WRITE", "TOPIC", s.alerts_topic),
        Grant("worker", "READ", "GROUP", s.worker_id),
        Grant("worker", "ALL", "TOPIC", f"{s.worker_id}-", prefixed=True),
        Grant("worker", "READ", "TOPIC", f"{s.raw_topic}.replay.", prefixed=True),
        Grant("worker", "READ", "GROUP", f"{s.worker_id}.replay.", prefixed=True),
        Grant("dispatcher", "READ", "TOPIC", s.alerts_topic),
        Grant("dispatcher", "WRITE", "TOPIC", s.device_commands_topic),
        Grant("dispatcher", "WRITE", "TOPIC", s.alerts_dead_letter_topic),
        Grant("dispatcher", "WRITE", "TOPIC", s.audit_anchors_topic),
        Grant("dispatcher", "READ", "GROUP", s.dispatcher_id),
        Grant("dispatcher", "ALL", "TOPIC", f"{s.dispatcher_id}-", prefixed=True),
        Grant("publisher", "WRITE", "TOPIC", s.raw_topic),
        Grant("publisher", "CREATE", "TOPIC", f"{s.raw_topic}.replay.", prefixed=True),
        Grant("publisher", "WRITE", "TOPIC", f"{s.raw_topic}.replay.", prefixed=True),
        Grant("auditor", "READ", "TOPIC", s.audit_anchors_topic),
    ]


class SecureKafkaFiles:
    """The certificate authority, the broker's keys and the users under ``var/kafka-secure``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.tls = root / "tls"
        self.ca_cert = self.tls / "ca.pem"
        self.ca_key = self.tls / "ca.key"
        self.broker_key = self.tls / "broker.key"
        self.broker_cert = self.tls / "broker.pem"
        self.keystore = self.tls / "broker.p12"
        self.users_file = root / "users.json"
        self.clients = root / "clients"

    # -- certificates -------------------------------------------------------------------
    def _openssl(self, *args: str) -> None:
        res = subprocess.run(["openssl", *args], capture_output=True, text=True)
        if res.returncode != 0:
            raise StackError(f"openssl {args[0]} failed: {res.stderr[-2000:]}")

    def make_tls(self) -> None:
        """The authority and the broker's certificate, made once."""
        if self.keystore.exists():
            return
        self.tls.mkdir(parents=True, exist_ok=True)
        os.chmod(self.tls, 0o700)
        self._openssl(
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256",
            "-days", str(_CERT_DAYS), "-subj", "/CN=tianyan local CA",
            "-keyout", str(self.ca_key), "-out", str(self.ca_cert),
        )  # fmt: skip
        csr = self.tls / "broker.csr"
        self._openssl(
            "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=tianyan-broker",
            "-keyout", str(self.broker_key), "-out", str(csr),
        )  # fmt: skip
        ext = self.tls / "broker.ext"
        ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
        self._openssl(
            "x509", "-req", "-in", str(csr), "-CA", str(self.ca_cert),
            "-CAkey", str(self.ca_key), "-CAcreateserial", "-sha256",
            "-days", str(_CERT_DAYS), "-extfile", str(ext), "-out", str(self.broker_cert),
        )  # fmt: skip
        self._openssl(
            "pkcs12", "-export", "-in", str(self.broker_cert), "-inkey", str(self.broker_key),
            "-certfile", str(self.ca_cert), "-name", "broker",
            "-passout", f"pass:{self.keystore_password()}", "-out", str(self.keystore),
        )  # fmt: skip

    def keystore_password(self) -> str:
        return self.users()["_keystore"]

    # -- users ------------------------------------------------------------------------------
    def users(self) -> dict[str, str]:
        """Every SCRAM user's password (and the keystore's), made once and kept."""
        if self.users_file.exists():
            users: dict[str, str] = json.loads(self.users_file.read_text())
            return users
        self.root.mkdir(parents=True, exist_ok=True)
        users = {name: secrets.token_urlsafe(24) for name in (ADMIN, *COMPONENTS, "_keystore")}
        self.users_file.touch(mode=0o600)
        self.users_file.write_text(json.dumps(users, indent=1))
        return users

    def security(self, user: str) -> KafkaSecurity:
        """How ``user`` connects: SASL_SSL, SCRAM-SHA-512, trusting the local authority."""
        users = self.users()
        if user not in users or user.startswith("_"):
            raise StackError(
                f"no Kafka user {user!r}: the users are {ADMIN}, {', '.join(COMPONENTS)}"
            )
        return KafkaSecurity(
            protocol="SASL_SSL",
            sasl_mechanism=SCRAM_MECHANISM,
            sasl_username=user,
            sasl_password=users[user],
            ssl_cafile=str(self.ca_cert),
        )

    def scram_arguments(self) -> list[str]:
        """``kafka-storage format`` arguments that store every user's SCRAM credential."""
        args: list[str] = []
        for name, password in self.users().items():
            if not name.startswith("_"):
                args += ["--add-scram", f"{SCRAM_MECHANISM}=[name={name},password={password}]"]
        return args

    def write_client_envs(self, settings: Settings) -> list[Path]:
        """``clients/<user>.env``: each user's ``TIANYAN_KAFKA_*`` variables (mode 0600)."""
        self.clients.mkdir(parents=True, exist_ok=True)
        bootstrap = f"127.0.0.1:{settings.kafka_secure_port}"
        written = []
        for user in (ADMIN, *COMPONENTS):
            env = {"TIANYAN_KAFKA_BOOTSTRAP": bootstrap, **kafka_security_env(self.security(user))}
            path = self.clients / f"{user}.env"
            path.touch(mode=0o600)
            path.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
            written.append(path)
        return written

    def server_properties(self, settings: Settings) -> str:
        """The broker configuration lines of the SASL_SSL listener, mTLS controller and ACLs."""
        admin_password = self.users()[ADMIN]
        ks = self.keystore_password()
        return (
            f"listeners=SASL_SSL://127.0.0.1:{settings.kafka_secure_port},"
            f"CONTROLLER://127.0.0.1:{settings.kafka_secure_controller_port}\n"
            f"advertised.listeners=SASL_SSL://127.0.0.1:{settings.kafka_secure_port}\n"
            "controller.listener.names=CONTROLLER\n"
            "inter.broker.listener.name=SASL_SSL\n"
            "listener.security.protocol.map=CONTROLLER:SSL,SASL_SSL:SASL_SSL\n"
            f"sasl.enabled.mechanisms={SCRAM_MECHANISM}\n"
            f"sasl.mechanism.inter.broker.protocol={SCRAM_MECHANISM}\n"
            f"listener.name.sasl_ssl.{SCRAM_MECHANISM.lower()}.sasl.jaas.config="
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{ADMIN}" password="{admin_password}";\n'
            "ssl.keystore.type=PKCS12\n"
            f"ssl.keystore.location={self.keystore}\n"
            f"ssl.keystore.password={ks}\n"
            f"ssl.key.password={ks}\n"
            "ssl.truststore.type=PEM\n"
            f"ssl.truststore.location={self.ca_cert}\n"
            "listener.name.controller.ssl.client.auth=required\n"
            "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer\n"
            f"super.users=User:{ADMIN};{BROKER_PRINCIPAL}\n"
            "allow.everyone.if.no.acl.found=false\n"
        )


def grant(bootstrap: str, admin: KafkaSecurity, grants: Iterable[Grant]) -> int:
    """Create the ACLs of ``grants`` (as the super user ``admin``); returns how many."""
    from kafka import KafkaAdminClient
    from kafka.admin import (
        ACL,
        ACLOperation,
        ACLPermissionType,
        ACLResourcePatternType,
        ResourcePattern,
        ResourceType,
    )

    acls = [
        ACL(
            principal=f"User:{g.user}",
            host="*",
            operation=ACLOperation[g.operation],
            permission_type=ACLPermissionType.ALLOW,
            resource_pattern=ResourcePattern(
                ResourceType[g.resource],
                g.name,
                ACLResourcePatternType.PREFIXED if g.prefixed else ACLResourcePatternType.LITERAL,
            ),
        )
        for g in grants
    ]
    client = KafkaAdminClient(
        bootstrap_servers=bootstrap, client_id="tianyan-acls", **kafka_python_config(admin)
    )
    try:
        result = client.create_acls(acls)
    finally:
        client.close()
    failed = result.get("failed", [])
    if failed:
        raise StackError(f"Kafka refused ACLs: {failed}")
    return len(acls)


def secure_settings(settings: Settings, files: SecureKafkaFiles, user: str) -> Settings:
    """``settings`` pointed at the local secure broker as ``user``."""
    return dataclasses.replace(
        settings,
        kafka_bootstrap=f"127.0.0.1:{settings.kafka_secure_port}",
        kafka_security=files.security(user),
    )
