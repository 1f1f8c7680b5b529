"""Random differential testing of the RTL against the reference model.

``generate`` makes legal random programs over the whole ISA (with deliberate faults), ``run``
executes them on the model and the Verilator RTL and compares every MEM word and register,
``shrink`` reduces a failing program to a small replayable JSON file, ``campaign`` runs many
programs on a local process pool or a Dask cluster. Command line: ``python -m
openlpu.verification.fuzz --help`` (see ``docs/verification.md``).
"""

from .generate import GeneratorConfig, generate
from .program import FuzzProgram, cycle_budget
from .run import CheckResult, ModelRunner, Outcome, RtlRunner, check, compare

__all__ = ["generate", "GeneratorConfig", "FuzzProgram", "cycle_budget", "ModelRunner",
           "RtlRunner", "Outcome", "compare", "check", "CheckResult"]
