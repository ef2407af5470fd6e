"""What shows: Grafana boards built as code, their provisioning and their checks.

``boards/`` holds one module per board; ``tianyan dashboards build`` writes them to
``json/`` with the provisioning files in ``provisioning/``, ``check`` runs every panel's SQL
against TimescaleDB as Grafana would, ``publish`` pushes them to a Grafana.
"""

from dashboards.query import register

# Targets of PostgreSQL panels decode into dashboards.query.PostgresQuery in the SDK's models.
register()
