"""What shows: Grafana boards built as code, their provisioning and their checks."""
