"""The device fleet: a physics-based simulator of elevator terminals with labelled faults.

>>> from simulator import load_scenario, simulate, FileOutput   # doctest: +SKIP
>>> summary = simulate(load_scenario("simulator/scenarios/default.toml"), elevators,
...                    start=start, duration_s=3600, output=FileOutput("out.jsonl"))
"""

from .fleet import FaultLabel, FleetEngine
from .motion import SCurve, eval_scurve, plan_scurve
from .mqtt_output import MqttOutput
from .output import FileOutput, KafkaOutput, OutputError
from .run import SimulationSummary, default_run_id, simulate
from .scenario import SCENARIO_DIR, Scenario, ScenarioError, load_scenario

__all__ = [
    "SCENARIO_DIR",
    "FaultLabel",
    "FileOutput",
    "FleetEngine",
    "KafkaOutput",
    "MqttOutput",
    "OutputError",
    "SCurve",
    "Scenario",
    "ScenarioError",
    "SimulationSummary",
    "default_run_id",
    "eval_scurve",
    "load_scenario",
    "plan_scurve",
    "simulate",
]
