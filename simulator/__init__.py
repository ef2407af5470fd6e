"""The device fleet: a physics-based simulator of elevator terminals with labelled faults."""
