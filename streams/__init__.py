"""What moves data: Kafka topics, the Faust application and its agents, and the sinks into
TimescaleDB. Nothing here decides whether an elevator is faulty; ``detectors`` does."""
