"""The thin application package: the ``tianyan`` command, its settings, the telemetry
contract and the local stack. No domain logic lives here."""
