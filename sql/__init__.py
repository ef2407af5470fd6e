"""What tianyan stores: the TimescaleDB schema as numbered migrations, and the runner.

``sql/migrations``  numbered, frozen migrations (tables, hypertables, roles)
``sql/idempotent``  views and grants, re-applied on every ``tianyan db migrate``
"""
