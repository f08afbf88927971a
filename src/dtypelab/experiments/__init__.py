"""Experiments: one :func:`evaluate`, one result store, one executor layer, and the sweep
(:mod:`dtypelab.experiments.sweep`) and the search (:mod:`dtypelab.experiments.search`) on them.

Example:
    >>> from dtypelab import experiments
    >>> sorted(experiments.EXECUTORS)
    ['process', 'ray', 'serial']
"""

from dtypelab.experiments.evaluate import Outcome, evaluate, example_batch
from dtypelab.experiments.executors import EXECUTORS, Executor, make_executor
from dtypelab.experiments.store import Result, ResultStore, RunDirBusy

__all__ = ["evaluate", "Outcome", "example_batch", "Result", "ResultStore", "RunDirBusy", "Executor", "EXECUTORS",
           "make_executor"]
