"""Sweeps: search spaces, experiment files, run storage with resume, and the runner that ties them."""
from .experiment import Experiment, load_experiment
from .runner import Executor, LocalExecutor, Phase1Spec, RunSpec, run_sweep
from .space import FAMILIES, draw

__all__ = ["Experiment", "load_experiment", "Executor", "LocalExecutor", "Phase1Spec", "RunSpec", "run_sweep",
           "FAMILIES", "draw"]
