"""The graph compiler: a graph API over quantized int8 tensors (:mod:`.ir`), named passes that
lower it onto one chip state (:mod:`.passes`), requantization constants (:mod:`.quant`).
See docs/compiler.md."""

from .ir import DTYPE_RANGE, OPS, Graph, GraphError, Node, Quant, Value
from .passes import (PASS_NAMES, PASSES, GraphCompileError, Kernel, KernelPlan, Scheduled,
                     compile_graph)
from .quant import multiplier_for

__all__ = ["Graph", "GraphError", "Node", "Quant", "Value", "OPS", "DTYPE_RANGE", "PASSES",
           "PASS_NAMES", "GraphCompileError", "Kernel", "KernelPlan", "Scheduled",
           "compile_graph", "multiplier_for"]
