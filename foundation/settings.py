"""Settings from the environment: where Kafka and TimescaleDB are, and where the local stack lives.

Every setting has a ``TIANYAN_*`` variable and a default that points at the local stack
(``tianyan stack up``). Point the variables at an existing Kafka cluster and TimescaleDB
to run tianyan against them instead.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from foundation.kafka_security import KafkaSecurity, KafkaSecurityError

#: The repository root: the local stack keeps its data and logs under ``var/`` here.
PROJECT_ROOT = Path(__file__).resolve().parent.parent


class SettingsError(ValueError):
    """A ``TIANYAN_*`` variable holds a value tianyan cannot use."""


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not an integer") from None


def _env_positive(name: str, default: int) -> int:
    value = _env_int(name, default)
    if value < 1:
        raise SettingsError(f"{name}={value}: must be at least 1")
    return value


def _env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    if raw.lower() in ("1", "true", "on", "yes"):
        return True
    if raw.lower() in ("0", "false", "off", "no"):
        return False
    raise SettingsError(f"{name}={raw!r} is not on/off")


def _env_ints(name: str, default: tuple[int, ...], *, count: int) -> tuple[int, ...]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        values = tuple(int(v) for v in raw.replace(",", " ").split())
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a list of integers") from None
    if len(values) != count or any(b <= a for a, b in itertools.pairwise(values)):
        raise SettingsError(f"{name}={raw!r}: give {count} increasing integers")
    return values


#: libpq's sslmode values (Grafana's PostgreSQL source takes the same).
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
#: The database roles whose passwords the environment may set, and their variables.
ROLE_PASSWORD_VARIABLES = {
    f"tianyan_{r}": f"TIANYAN_PG_{r.upper()}_PASSWORD"
    for r in ("writer", "analyst", "regulator", "public")
}


def _env_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    raw = os.environ.get(name, default)
    if raw not in choices:
        raise SettingsError(f"{name}={raw!r}: expected one of {', '.join(choices)}")
    return raw


@dataclass(frozen=True)
class Settings:
    """Resolved settings; build with :meth:`from_env`."""

    var_dir: Path
    kafka_port: int
    kafka_controller_port: int
    kafka_heap_mb: int
    #: Brokers of the local stack (``tianyan stack up --brokers N``): one, or a cluster of
    #: N on this machine (see README § Scaling).
    kafka_brokers: int
    kafka_bootstrap: str
    pg_port: int
    database_url: str
    admin_database_url: str
    raw_topic: str
    quarantine_topic: str
    alerts_topic: str
    alerts_dead_letter_topic: str
    kafka_delivery_timeout_ms: int
    #: Copies of every partition of the pipeline's topics (Faust's changelogs included);
    #: topics are made with ``min.insync.replicas`` = this − 1 (at least 1), so with 3 an
    #: acknowledged write (``acks=all``) survives the loss of a broker.
    kafka_replication_factor: int
    detectors_enabled: bool
    #: Quarantine messages from elevators not in the registry (no state is made for them),
    #: rather than detect with default limits. Off by default: see README § Configuration.
    registered_only: bool
    thresholds_file: Path | None
    raw_partitions: int
    worker_id: str
    worker_web_port: int
    grace_ms: int
    batch_messages: int
    batch_linger_ms: int
    checkpoint_interval_s: float
    raw_retention_days: int
    raw_pack_after_minutes: int
    evidence_window_s: int
    grading_interval_s: int
    # the incident dispatcher (rescue/)
    rescue_webhook_urls: tuple[str, ...]
    #: The webhook-signing secrets, one entry per endpoint of ``rescue_webhook_urls`` (in
    #: order, separated by spaces); an entry is one ``whsec_…`` secret, or several joined by
    #: commas while a rotation is under way (each webhook is then signed with every one).
    #: They only sign what we send: they authorise nothing that comes in.
    rescue_webhook_secret: str | None
    #: The rescue platform's own credentials for the acknowledgement API: a bearer token,
    #: and/or a ``whsec_…`` secret for Standard Webhooks-signed requests (method, path and
    #: body signed). Neither is a webhook-signing secret.
    rescue_api_token: str | None
    rescue_action_secret: str | None
    #: Send webhooks over plain ``http://`` (a local receiver in development and the tests
    #: only; the harness turns it on). Off: every endpoint must be ``https://``.
    rescue_allow_http: bool
    #: Where the acknowledgement API listens (behind the TLS reverse proxy, README
    #: § "The acknowledgement API"), and its rate limit per credential and peer address.
    rescue_api_bind: str
    rescue_api_port: int
    rescue_api_rate_per_minute: int
    dispatcher_id: str
    #: Where the dispatcher's /metrics and /health listen (not the API's address).
    dispatcher_web_bind: str
    dispatcher_web_port: int
    device_commands_topic: str
    webhook_timeout_s: float
    webhook_max_age_s: int
    #: How long a delivery refused with 401, 403, 404 or 410 (a rotated secret, a moved
    #: endpoint: an operator can put it right) is retried, counted from when it was queued,
    #: before it is dead-lettered; each refusal is logged at ERROR and counted in
    #: ``tianyan_webhook_auth_or_route_refusals_total``. Other 4xx are dead at once.
    webhook_auth_retry_s: int
    webhook_retry_base_s: float
    webhook_retry_cap_s: float
    webhook_concurrency: int
    escalation_after_s: tuple[int, ...]
    #: The plan's arrival rule (maintenance unit on site within 30 min, README § "The rescue
    #: webhook"): each incident's target; an acknowledged trapping with no arrival this long
    #: after it was recorded escalates one response level.
    arrival_target_s: int
    audit_anchors_topic: str
    audit_anchor_interval_s: int
    # PostgreSQL security (README § Production)
    #: libpq/Grafana sslmode the Grafana data sources connect with ("verify-full" in
    #: production); the Python services take theirs from their URLs (``?sslmode=``).
    pg_sslmode: str
    #: Limits on every read role (analyst, regulator, public, the scoped unit/company
    #: roles), applied by ``tianyan db migrate``.
    pg_read_statement_timeout_ms: int
    pg_read_connection_limit: int
    pg_read_temp_file_limit_mb: int
    #: How every Kafka client connects: protocol, SASL user, TLS files
    #: (``TIANYAN_KAFKA_SECURITY_PROTOCOL``, ``_SASL_*``, ``_SSL_*``); the client
    #: configurations are built from it in
    #: :mod:`foundation.kafka_security` alone.
    kafka_security: KafkaSecurity
    #: The local secure broker (``tianyan stack up --secure``): its SASL_SSL listener and its
    #: controller's (mutual TLS) port.
    kafka_secure_port: int
    kafka_secure_controller_port: int
    # the MQTT broker terminals connect to, and the gateway that bridges it to Kafka
    #: Start the broker under ``var/mosquitto`` with the stack (off: an existing broker).
    mqtt_local: bool
    mqtt_host: str
    #: The plain listener (the local broker binds it to localhost only, for development).
    mqtt_port: int
    #: The TLS listener terminals use.
    mqtt_tls_port: int
    #: The gateway connects with TLS (to ``mqtt_tls_port``, trusting ``mqtt_ca_file``).
    mqtt_tls: bool
    mqtt_ca_file: Path
    mqtt_gateway_username: str
    #: None: the local broker's generated password, read from ``var/mosquitto``.
    mqtt_gateway_password: str | None
    #: Shared-subscription group the gateways split the terminals' telemetry in.
    mqtt_share_group: str
    #: MQTT v5 Receive Maximum of each gateway: QoS 1 messages the broker sends before it
    #: waits for acknowledgements, which are given only once Kafka has the message.
    gateway_inflight_messages: int
    gateway_id: str
    gateway_web_port: int
    #: Terminals' answers to commands (played, failed), keyed by elevator.
    device_events_topic: str
    #: A command not yet delivered to its terminal expires after this (MQTT v5 message
    #: expiry of the retained command).
    command_expiry_s: int
    #: A trapping whose terminal has not confirmed the reassurance message this long after
    #: the incident was recorded is reported (event and webhook); 0: not checked.
    reassurance_answer_s: int
    #: Passwords ``tianyan db migrate`` gives the roles (SCRAM-SHA-256 verifiers, computed
    #: client-side), role → password; a role without one keeps what it has.
    pg_role_passwords: tuple[tuple[str, str], ...] = ()
    #: The routing policy (rescue/routing.py): alert types that always go to the rescue
    #: platform, and the severity at or above which any alert does too; every other
    #: incident is recorded and told only to the maintenance endpoint, if one is set.
    rescue_route_types: tuple[str, ...] = ("trapped_at_level", "trapped_between_levels")
    rescue_min_severity: str = "critical"

    @classmethod
    def from_env(cls) -> Settings:
        var_dir = Path(_env("TIANYAN_VAR_DIR", str(PROJECT_ROOT / "var"))).resolve()
        kafka_port = _env_int("TIANYAN_KAFKA_PORT", 19092)
        brokers = _env_positive("TIANYAN_KAFKA_BROKERS", 1)
        pg_port = _env_int("TIANYAN_PG_PORT", 55432)
        db = _env("TIANYAN_DATABASE_NAME", "tianyan")
        return cls(
            var_dir=var_dir,
            kafka_port=kafka_port,
            kafka_controller_port=_env_int("TIANYAN_KAFKA_CONTROLLER_PORT", kafka_port + 1),
            kafka_heap_mb=_env_int("TIANYAN_KAFKA_HEAP_MB", 768),
            kafka_brokers=brokers,
            kafka_bootstrap=_env("TIANYAN_KAFKA_BOOTSTRAP", f"127.0.0.1:{kafka_port}"),
            pg_port=pg_port,
            database_url=_env(
                "TIANYAN_DATABASE_URL", f"postgresql://tianyan_writer@127.0.0.1:{pg_port}/{db}"
            ),
            admin_database_url=_env(
                "TIANYAN_ADMIN_DATABASE_URL", f"postgresql://tianyan@127.0.0.1:{pg_port}/{db}"
            ),
            raw_topic=_env("TIANYAN_RAW_TOPIC", "tianyan.telemetry.raw"),
            quarantine_topic=_env("TIANYAN_QUARANTINE_TOPIC", "tianyan.telemetry.quarantine"),
            alerts_topic=_env("TIANYAN_ALERTS_TOPIC", "tianyan.alerts"),
            alerts_dead_letter_topic=_env(
                "TIANYAN_ALERTS_DEAD_LETTER_TOPIC", "tianyan.alerts.dead-letter"
            ),
            # librdkafka's message.timeout.ms: how long a produced record is retried before
            # it is reported failed (its default, 300 s). Nothing is lost either way: the
            # publisher keeps failed records and sends them again.
            kafka_delivery_timeout_ms=_env_int("TIANYAN_KAFKA_DELIVERY_TIMEOUT_MS", 300_000),
            kafka_replication_factor=_env_positive(
                "TIANYAN_KAFKA_REPLICATION_FACTOR", min(3, brokers)
            ),
            detectors_enabled=_env_bool("TIANYAN_DETECTORS", True),
            registered_only=_env_bool("TIANYAN_REGISTERED_ONLY", False),
            thresholds_file=Path(os.environ["TIANYAN_THRESHOLDS_FILE"])
            if os.environ.get("TIANYAN_THRESHOLDS_FILE")
            else None,
            raw_partitions=_env_int("TIANYAN_RAW_PARTITIONS", 8),
            worker_id=_env("TIANYAN_WORKER_ID", "tianyan-worker"),
            worker_web_port=_env_int("TIANYAN_WORKER_WEB_PORT", 6066),
            grace_ms=_env_int("TIANYAN_GRACE_MS", 5_000),
            batch_messages=_env_int("TIANYAN_BATCH_MESSAGES", 2_000),
            batch_linger_ms=_env_int("TIANYAN_BATCH_LINGER_MS", 100),
            checkpoint_interval_s=_env_int("TIANYAN_CHECKPOINT_INTERVAL_MS", 5_000) / 1000,
            raw_retention_days=_env_int("TIANYAN_RAW_RETENTION_DAYS", 7),
            raw_pack_after_minutes=_env_int("TIANYAN_RAW_PACK_AFTER_MINUTES", 60),
            evidence_window_s=_env_int("TIANYAN_EVIDENCE_WINDOW_S", 300),
            grading_interval_s=_env_int("TIANYAN_GRADING_INTERVAL_S", 3600),
            rescue_webhook_urls=tuple(
                _env("TIANYAN_RESCUE_WEBHOOK_URL", "").replace(",", " ").split()
            ),
            rescue_webhook_secret=os.environ.get("TIANYAN_RESCUE_WEBHOOK_SECRET") or None,
            rescue_api_token=os.environ.get("TIANYAN_RESCUE_API_TOKEN") or None,
            rescue_action_secret=os.environ.get("TIANYAN_RESCUE_ACTION_SECRET") or None,
            rescue_allow_http=_env_bool("TIANYAN_RESCUE_ALLOW_HTTP", False),
            rescue_api_bind=_env("TIANYAN_RESCUE_API_BIND", "127.0.0.1"),
            rescue_api_port=_env_int("TIANYAN_RESCUE_API_PORT", 6068),
            rescue_api_rate_per_minute=_env_int("TIANYAN_RESCUE_API_RATE_PER_MINUTE", 120),
            dispatcher_id=_env("TIANYAN_DISPATCHER_ID", "tianyan-dispatcher"),
            dispatcher_web_bind=_env("TIANYAN_DISPATCHER_WEB_BIND", "127.0.0.1"),
            dispatcher_web_port=_env_int("TIANYAN_DISPATCHER_WEB_PORT", 6067),
            device_commands_topic=_env("TIANYAN_DEVICE_COMMANDS_TOPIC", "tianyan.device.commands"),
            webhook_timeout_s=_env_int("TIANYAN_WEBHOOK_TIMEOUT_MS", 10_000) / 1000,
            webhook_max_age_s=_env_int("TIANYAN_WEBHOOK_MAX_AGE_S", 6 * 3600),
            webhook_auth_retry_s=_env_int("TIANYAN_WEBHOOK_AUTH_RETRY_S", 3600),
            webhook_retry_base_s=_env_int("TIANYAN_WEBHOOK_RETRY_BASE_MS", 1_000) / 1000,
            webhook_retry_cap_s=_env_int("TIANYAN_WEBHOOK_RETRY_CAP_MS", 300_000) / 1000,
            webhook_concurrency=_env_int("TIANYAN_WEBHOOK_CONCURRENCY", 64),
            escalation_after_s=_env_ints("TIANYAN_ESCALATION_AFTER_S", (300, 900, 1800), count=3),
            arrival_target_s=_env_int("TIANYAN_ARRIVAL_TARGET_S", 1800),
            audit_anchors_topic=_env("TIANYAN_AUDIT_ANCHORS_TOPIC", "tianyan.audit.anchors"),
            audit_anchor_interval_s=_env_int("TIANYAN_AUDIT_ANCHOR_INTERVAL_S", 60),
            pg_sslmode=_env_choice("TIANYAN_PG_SSLMODE", "disable", SSL_MODES),
            pg_read_statement_timeout_ms=_env_int("TIANYAN_PG_READ_STATEMENT_TIMEOUT_MS", 60_000),
            pg_read_connection_limit=_env_int("TIANYAN_PG_READ_CONNECTION_LIMIT", 20),
            pg_read_temp_file_limit_mb=_env_int("TIANYAN_PG_READ_TEMP_FILE_LIMIT_MB", 1024),
            pg_role_passwords=tuple(
                (role, os.environ[var])
                for role, var in ROLE_PASSWORD_VARIABLES.items()
                if os.environ.get(var)
            ),
            kafka_security=_kafka_security(),
            kafka_secure_port=_env_int("TIANYAN_KAFKA_SECURE_PORT", kafka_port + 2),
            kafka_secure_controller_port=_env_int(
                "TIANYAN_KAFKA_SECURE_CONTROLLER_PORT", kafka_port + 3
            ),
            mqtt_local=_env_bool("TIANYAN_MQTT_LOCAL", True),
            mqtt_host=_env("TIANYAN_MQTT_HOST", "127.0.0.1"),
            mqtt_port=_env_int("TIANYAN_MQTT_PORT", 1883),
            mqtt_tls_port=_env_int("TIANYAN_MQTT_TLS_PORT", 8883),
            mqtt_tls=_env_bool("TIANYAN_MQTT_TLS", False),
            mqtt_ca_file=Path(
                _env("TIANYAN_MQTT_CA_FILE", str(var_dir / "mosquitto" / "tls" / "ca.crt"))
            ),
            mqtt_gateway_username=_env("TIANYAN_MQTT_GATEWAY_USERNAME", "tianyan-gateway"),
            mqtt_gateway_password=os.environ.get("TIANYAN_MQTT_GATEWAY_PASSWORD") or None,
            mqtt_share_group=_env("TIANYAN_MQTT_SHARE_GROUP", "tianyan-gateways"),
            gateway_inflight_messages=_env_int("TIANYAN_GATEWAY_INFLIGHT_MESSAGES", 2_000),
            gateway_id=_env("TIANYAN_GATEWAY_ID", "tianyan-gateway"),
            gateway_web_port=_env_int("TIANYAN_GATEWAY_WEB_PORT", 6070),
            device_events_topic=_env("TIANYAN_DEVICE_EVENTS_TOPIC", "tianyan.device.events"),
            command_expiry_s=_env_int("TIANYAN_COMMAND_EXPIRY_S", 300),
            reassurance_answer_s=_env_int("TIANYAN_REASSURANCE_ANSWER_S", 0),
            rescue_route_types=tuple(
                _env("TIANYAN_RESCUE_ROUTE_TYPES", "trapped_at_level trapped_between_levels")
                .replace(",", " ")
                .split()
            ),
            rescue_min_severity=_env_choice(
                "TIANYAN_RESCUE_MIN_SEVERITY", "critical", ("critical", "major", "minor", "info")
            ),
        )

    def faust_datadir(self, app_id: str) -> str:
        """Where the Faust app ``app_id`` keeps its data folder: under ``var/faust/`` (made
        here if missing), never in the folder the service was started from."""
        parent = self.var_dir / "faust"
        parent.mkdir(parents=True, exist_ok=True)
        return str(parent / f"{app_id}-data")

    def to_env(self) -> dict[str, str]:
        """The ``TIANYAN_*`` environment that :meth:`from_env` reads back as these settings:
        how a command hands its settings to the services it starts."""

        def ms(seconds: float) -> str:
            return str(round(seconds * 1000))

        env = {
            "TIANYAN_VAR_DIR": str(self.var_dir),
            "TIANYAN_KAFKA_PORT": str(self.kafka_port),
            "TIANYAN_KAFKA_CONTROLLER_PORT": str(self.kafka_controller_port),
            "TIANYAN_KAFKA_HEAP_MB": str(self.kafka_heap_mb),
            "TIANYAN_KAFKA_BROKERS": str(self.kafka_brokers),
            "TIANYAN_KAFKA_BOOTSTRAP": self.kafka_bootstrap,
            "TIANYAN_PG_PORT": str(self.pg_port),
            "TIANYAN_DATABASE_URL": self.database_url,
            "TIANYAN_ADMIN_DATABASE_URL": self.admin_database_url,
            "TIANYAN_RAW_TOPIC": self.raw_topic,
            "TIANYAN_QUARANTINE_TOPIC": self.quarantine_topic,
            "TIANYAN_ALERTS_TOPIC": self.alerts_topic,
            "TIANYAN_ALERTS_DEAD_LETTER_TOPIC": self.alerts_dead_letter_topic,
            "TIANYAN_KAFKA_DELIVERY_TIMEOUT_MS": str(self.kafka_delivery_timeout_ms),
            "TIANYAN_KAFKA_REPLICATION_FACTOR": str(self.kafka_replication_factor),
            "TIANYAN_DETECTORS": "on" if self.detectors_enabled else "off",
            "TIANYAN_REGISTERED_ONLY": "on" if self.registered_only else "off",
            "TIANYAN_RAW_PARTITIONS": str(self.raw_partitions),
            "TIANYAN_WORKER_ID": self.worker_id,
            "TIANYAN_WORKER_WEB_PORT": str(self.worker_web_port),
            "TIANYAN_GRACE_MS": str(self.grace_ms),
            "TIANYAN_BATCH_MESSAGES": str(self.batch_messages),
            "TIANYAN_BATCH_LINGER_MS": str(self.batch_linger_ms),
            "TIANYAN_CHECKPOINT_INTERVAL_MS": ms(self.checkpoint_interval_s),
            "TIANYAN_RAW_RETENTION_DAYS": str(self.raw_retention_days),
            "TIANYAN_RAW_PACK_AFTER_MINUTES": str(self.raw_pack_after_minutes),
            "TIANYAN_EVIDENCE_WINDOW_S": str(self.evidence_window_s),
            "TIANYAN_GRADING_INTERVAL_S": str(self.grading_interval_s),
            "TIANYAN_RESCUE_WEBHOOK_URL": " ".join(self.rescue_webhook_urls),
            "TIANYAN_RESCUE_ALLOW_HTTP": "on" if self.rescue_allow_http else "off",
            "TIANYAN_RESCUE_API_BIND": self.rescue_api_bind,
            "TIANYAN_RESCUE_API_PORT": str(self.rescue_api_port),
            "TIANYAN_RESCUE_API_RATE_PER_MINUTE": str(self.rescue_api_rate_per_minute),
            "TIANYAN_DISPATCHER_ID": self.dispatcher_id,
            "TIANYAN_DISPATCHER_WEB_BIND": self.dispatcher_web_bind,
            "TIANYAN_DISPATCHER_WEB_PORT": str(self.dispatcher_web_port),
            "TIANYAN_DEVICE_COMMANDS_TOPIC": self.device_commands_topic,
            "TIANYAN_WEBHOOK_TIMEOUT_MS": ms(self.webhook_timeout_s),
            "TIANYAN_WEBHOOK_MAX_AGE_S": str(self.webhook_max_age_s),
            "TIANYAN_WEBHOOK_AUTH_RETRY_S": str(self.webhook_auth_retry_s),
            "TIANYAN_WEBHOOK_RETRY_BASE_MS": ms(self.webhook_retry_base_s),
            "TIANYAN_WEBHOOK_RETRY_CAP_MS": ms(self.webhook_retry_cap_s),
            "TIANYAN_WEBHOOK_CONCURRENCY": str(self.webhook_concurrency),
            "TIANYAN_ESCALATION_AFTER_S": ",".join(str(s) for s in self.escalation_after_s),
            "TIANYAN_ARRIVAL_TARGET_S": str(self.arrival_target_s),
            "TIANYAN_AUDIT_ANCHORS_TOPIC": self.audit_anchors_topic,
            "TIANYAN_AUDIT_ANCHOR_INTERVAL_S": str(self.audit_anchor_interval_s),
            "TIANYAN_PG_SSLMODE": self.pg_sslmode,
            "TIANYAN_PG_READ_STATEMENT_TIMEOUT_MS": str(self.pg_read_statement_timeout_ms),
            "TIANYAN_PG_READ_CONNECTION_LIMIT": str(self.pg_read_connection_limit),
            "TIANYAN_PG_READ_TEMP_FILE_LIMIT_MB": str(self.pg_read_temp_file_limit_mb),
            "TIANYAN_KAFKA_SECURE_PORT": str(self.kafka_secure_port),
            "TIANYAN_KAFKA_SECURE_CONTROLLER_PORT": str(self.kafka_secure_controller_port),
            **kafka_security_env(self.kafka_security),
            "TIANYAN_MQTT_LOCAL": "on" if self.mqtt_local else "off",
            "TIANYAN_MQTT_HOST": self.mqtt_host,
            "TIANYAN_MQTT_PORT": str(self.mqtt_port),
            "TIANYAN_MQTT_TLS_PORT": str(self.mqtt_tls_port),
            "TIANYAN_MQTT_TLS": "on" if self.mqtt_tls else "off",
            "TIANYAN_MQTT_CA_FILE": str(self.mqtt_ca_file),
            "TIANYAN_MQTT_GATEWAY_USERNAME": self.mqtt_gateway_username,
            "TIANYAN_MQTT_SHARE_GROUP": self.mqtt_share_group,
            "TIANYAN_GATEWAY_INFLIGHT_MESSAGES": str(self.gateway_inflight_messages),
            "TIANYAN_GATEWAY_ID": self.gateway_id,
            "TIANYAN_GATEWAY_WEB_PORT": str(self.gateway_web_port),
            "TIANYAN_DEVICE_EVENTS_TOPIC": self.device_events_topic,
            "TIANYAN_COMMAND_EXPIRY_S": str(self.command_expiry_s),
            "TIANYAN_REASSURANCE_ANSWER_S": str(self.reassurance_answer_s),
            "TIANYAN_RESCUE_ROUTE_TYPES": " ".join(self.rescue_route_types),
            "TIANYAN_RESCUE_MIN_SEVERITY": self.rescue_min_severity,
        }
        env.update({ROLE_PASSWORD_VARIABLES[role]: pw for role, pw in self.pg_role_passwords})
        optional = {
            "TIANYAN_THRESHOLDS_FILE": self.thresholds_file,
            "TIANYAN_RESCUE_WEBHOOK_SECRET": self.rescue_webhook_secret,
            "TIANYAN_RESCUE_API_TOKEN": self.rescue_api_token,
            "TIANYAN_RESCUE_ACTION_SECRET": self.rescue_action_secret,
            "TIANYAN_MQTT_GATEWAY_PASSWORD": self.mqtt_gateway_password,
        }
        env.update({k: str(v) for k, v in optional.items() if v is not None})
        return env


def _kafka_security() -> KafkaSecurity:
    try:
        return KafkaSecurity(
            protocol=_env("TIANYAN_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT").upper(),
            sasl_mechanism=_env("TIANYAN_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512").upper(),
            sasl_username=os.environ.get("TIANYAN_KAFKA_SASL_USERNAME") or None,
            sasl_password=os.environ.get("TIANYAN_KAFKA_SASL_PASSWORD") or None,
            ssl_cafile=os.environ.get("TIANYAN_KAFKA_SSL_CAFILE") or None,
            ssl_certfile=os.environ.get("TIANYAN_KAFKA_SSL_CERTFILE") or None,
            ssl_keyfile=os.environ.get("TIANYAN_KAFKA_SSL_KEYFILE") or None,
            ssl_check_hostname=_env_bool("TIANYAN_KAFKA_SSL_CHECK_HOSTNAME", True),
        )
    except KafkaSecurityError as e:
        raise SettingsError(str(e)) from None


def kafka_security_env(security: KafkaSecurity) -> dict[str, str]:
    """The ``TIANYAN_KAFKA_*`` security variables that :meth:`Settings.from_env` reads back as
    ``security``."""
    env = {
        "TIANYAN_KAFKA_SECURITY_PROTOCOL": security.protocol,
        "TIANYAN_KAFKA_SASL_MECHANISM": security.sasl_mechanism,
        "TIANYAN_KAFKA_SSL_CHECK_HOSTNAME": "on" if security.ssl_check_hostname else "off",
    }
    optional = {
        "TIANYAN_KAFKA_SASL_USERNAME": security.sasl_username,
        "TIANYAN_KAFKA_SASL_PASSWORD": security.sasl_password,
        "TIANYAN_KAFKA_SSL_CAFILE": security.ssl_cafile,
        "TIANYAN_KAFKA_SSL_CERTFILE": security.ssl_certfile,
        "TIANYAN_KAFKA_SSL_KEYFILE": security.ssl_keyfile,
    }
    env.update({k: v for k, v in optional.items() if v is not None})
    return env


def role_url(database_url: str, role: str) -> str:
    """``database_url`` with its user swapped for ``role`` (and its password dropped)."""
    parts = urlsplit(database_url)
    if parts.scheme not in ("postgresql", "postgres") or not parts.hostname:
        raise ValueError(f"{database_url!r}: expected postgresql://user@host:port/database")
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    netloc = f"{role}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
