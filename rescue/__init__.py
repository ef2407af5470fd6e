"""Incidents, the rescue webhook and the tamper-evident ledger: the incident dispatcher.

``lifecycle`` holds the pure rules (states, escalation, retry schedule), ``store`` the
transactions (incident changes with their outbox rows and ledger entries), ``delivery`` the
signed HTTP sender, ``dispatcher`` the Faust app that ties them together (alerts in,
webhooks out, the acknowledgement API), ``receiver`` the reference receiver for integrators.
"""
