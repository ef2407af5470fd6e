"""How every Kafka client of tianyan authenticates and encrypts: the one place that turns the
``TIANYAN_KAFKA_SECURITY_PROTOCOL``, ``_SASL_*`` and ``_SSL_*`` settings into each client
library's configuration.

Three client libraries talk to Kafka: confluent-kafka (the publisher: simulator, replay, the
worker's quarantine, the dispatcher's commands and audit anchors), aiokafka through Faust (the
worker and the dispatcher consuming) and kafka-python (topic creation, stack status, the
anchors' reader, ACLs). Each gets its configuration from :class:`KafkaSecurity` here, never
from its own reading of the settings.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any

#: The protocols Kafka listeners speak (``security.protocol``).
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
#: The SASL mechanisms tianyan supports; PLAIN only over TLS (the password would be in clear).
SASL_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")


class KafkaSecurityError(ValueError):
    """The Kafka security settings do not go together."""


@dataclass(frozen=True)
class KafkaSecurity:
    """The security of a Kafka connection: protocol, SASL credentials and TLS files."""

    protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "SCRAM-SHA-512"
    sasl_username: str | None = None
    sasl_password: str | None = None
    #: PEM file of the certificate authorities that sign the brokers' certificates; None:
    #: the system's.
    ssl_cafile: str | None = None
    #: A client certificate and its key (PEM), for brokers that ask for one (mutual TLS).
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    #: Whether the broker's certificate must name the host connected to.
    ssl_check_hostname: bool = True

    def __post_init__(self) -> None:
        if self.protocol not in SECURITY_PROTOCOLS:
            raise KafkaSecurityError(
                f"TIANYAN_KAFKA_SECURITY_PROTOCOL={self.protocol!r}: "
                f"choose one of {', '.join(SECURITY_PROTOCOLS)}"
            )
        if self.sasl:
            if self.sasl_mechanism not in SASL_MECHANISMS:
                raise KafkaSecurityError(
                    f"TIANYAN_KAFKA_SASL_MECHANISM={self.sasl_mechanism!r}: "
                    f"choose one of {', '.join(SASL_MECHANISMS)}"
                )
            if not self.sasl_username or not self.sasl_password:
                raise KafkaSecurityError(
                    f"TIANYAN_KAFKA_SECURITY_PROTOCOL={self.protocol} needs "
                    "TIANYAN_KAFKA_SASL_USERNAME and TIANYAN_KAFKA_SASL_PASSWORD"
                )
            if self.sasl_mechanism == "PLAIN" and not self.tls:
                raise KafkaSecurityError(
                    "TIANYAN_KAFKA_SASL_MECHANISM=PLAIN sends the password in clear: "
                    "use it only with TIANYAN_KAFKA_SECURITY_PROTOCOL=SASL_SSL"
                )
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise KafkaSecurityError(
                "TIANYAN_KAFKA_SSL_CERTFILE and TIANYAN_KAFKA_SSL_KEYFILE go together"
            )

    @property
    def sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    @property
    def tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context of aiokafka and kafka-python; None without TLS."""
        if not self.tls:
            return None
        context = ssl.create_default_context(cafile=self.ssl_cafile)
        context.check_hostname = self.ssl_check_hostname
        if self.ssl_certfile and self.ssl_keyfile:
            context.load_cert_chain(self.ssl_certfile, self.ssl_keyfile)
        return context


def confluent_config(security: KafkaSecurity) -> dict[str, Any]:
    """librdkafka's (confluent-kafka's) security properties."""
    config: dict[str, Any] = {"security.protocol": security.protocol}
    if security.sasl:
        config["sasl.mechanism"] = security.sasl_mechanism
        config["sasl.username"] = security.sasl_username
        config["sasl.password"] = security.sasl_password
    if security.tls:
        if security.ssl_cafile:
            config["ssl.ca.location"] = security.ssl_cafile
        if security.ssl_certfile:
            config["ssl.certificate.location"] = security.ssl_certfile
            config["ssl.key.location"] = security.ssl_keyfile
        config["ssl.endpoint.identification.algorithm"] = (
            "https" if security.ssl_check_hostname else "none"
        )
    return config


def kafka_python_config(security: KafkaSecurity) -> dict[str, Any]:
    """kafka-python's security keyword arguments (KafkaAdminClient, KafkaConsumer, ...)."""
    config: dict[str, Any] = {"security_protocol": security.protocol}
    if security.sasl:
        config["sasl_mechanism"] = security.sasl_mechanism
        config["sasl_plain_username"] = security.sasl_username
        config["sasl_plain_password"] = security.sasl_password
    if security.tls:
        config["ssl_context"] = security.ssl_context()
    return config


def aiokafka_config(security: KafkaSecurity) -> dict[str, Any]:
    """aiokafka's security keyword arguments (AIOKafkaConsumer, AIOKafkaProducer)."""
    config: dict[str, Any] = {"security_protocol": security.protocol}
    if security.sasl:
        config["sasl_mechanism"] = security.sasl_mechanism
        config["sasl_plain_username"] = security.sasl_username
        config["sasl_plain_password"] = security.sasl_password
    if security.tls:
        config["ssl_context"] = security.ssl_context()
    return config


def faust_credentials(security: KafkaSecurity) -> Any:
    """Faust's ``broker_credentials`` (handed to its aiokafka transport); None for PLAINTEXT."""
    import faust
    from faust.types.auth import SASLMechanism

    if security.sasl:
        return faust.SASLCredentials(
            username=security.sasl_username,
            password=security.sasl_password,
            ssl_context=security.ssl_context(),
            mechanism=SASLMechanism(security.sasl_mechanism),
        )
    if security.tls:
        return faust.SSLCredentials(security.ssl_context())
    return None
