"""What re-feeds history: reads stored telemetry or files and publishes it back to Kafka."""
