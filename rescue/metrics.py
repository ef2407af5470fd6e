"""Prometheus metrics of the incident dispatcher (served at its ``/metrics``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry()

ALERTS_APPLIED = Counter(
    "tianyan_dispatcher_alerts_total",
    "Alerts consumed, by what became of them",
    ["result"],  # applied (repeats included) | retried | dead_lettered
    registry=REGISTRY,
)
INCIDENT_CHANGES = Counter(
    "tianyan_incident_changes_total", "Incident changes recorded", ["event_type"], registry=REGISTRY
)
DEVICE_COMMANDS = Counter(
    "tianyan_device_commands_total",
    "Commands published to terminals",
    ["command"],
    registry=REGISTRY,
)
ANSWERS_UNMATCHED = Counter(
    "tianyan_dispatcher_answers_unmatched_total",
    "Terminals' answers to commands whose incident was still not found after"
    " ANSWER_RETRY_S of tries (an unknown incident, or another elevator's)",
    registry=REGISTRY,
)
ATTEMPTS = Counter(
    "tianyan_webhook_attempts_total", "Webhook delivery attempts", ["endpoint"], registry=REGISTRY
)
OUTCOMES = Counter(
    "tianyan_webhook_outcomes_total",
    "Attempt outcomes: delivered, retry (will be retried) or dead (dead-lettered)",
    ["outcome"],
    registry=REGISTRY,
)
FAILURES = Counter(
    "tianyan_webhook_failures_total",
    "Failed attempts by HTTP status, or 'error' when no answer came",
    ["status"],
    registry=REGISTRY,
)
AUTH_OR_ROUTE_REFUSALS = Counter(
    "tianyan_webhook_auth_or_route_refusals_total",
    "Attempts the receiver refused for authentication (401, 403) or route (404, 410), by"
    " endpoint: retried for TIANYAN_WEBHOOK_AUTH_RETRY_S, then dead; alert on any increase",
    ["endpoint", "status"],
    registry=REGISTRY,
)
BACKLOG = Gauge(
    "tianyan_webhook_backlog",
    "Deliveries waiting: pending (all not yet delivered) and retrying (failed at least once)",
    ["kind"],
    registry=REGISTRY,
)
DEAD_LETTERS = Gauge(
    "tianyan_webhook_dead_letters",
    "Deliveries dead-lettered (awaiting redelivery)",
    registry=REGISTRY,
)
REQUEST_SECONDS = Histogram(
    "tianyan_webhook_request_seconds",
    "Time of one webhook HTTP request",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
CHANGE_TO_SEND_SECONDS = Histogram(
    "tianyan_webhook_change_to_send_seconds",
    "From the change (the alert on Kafka, or the action received) to the first request sent",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60),
    registry=REGISTRY,
)
ACTION_REQUESTS = Counter(
    "tianyan_incident_action_requests_total",
    "Acknowledgement API requests by HTTP status",
    ["status"],
    registry=REGISTRY,
)
ANCHORS = Counter(
    "tianyan_ledger_anchors_total",
    "Ledger heads published to the anchors topic",
    registry=REGISTRY,
)

BACKGROUND_ERRORS = Counter(
    "tianyan_dispatcher_background_errors_total",
    "Failures of a background task (timer), logged and survived; by task",
    ["task"],
    registry=REGISTRY,
)
EVIDENCE_SAMPLES = Counter(
    "tianyan_evidence_samples_total",
    "Raw samples copied to evidence_sample for incidents",
    registry=REGISTRY,
)
