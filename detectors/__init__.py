"""What decides: pure detectors (no Kafka, no database) that turn windows and trips into
alerts. Filled by the detectors issue."""
