"""Kernels on the Verilator RTL of the ``mini`` preset (every slice kind), bit-exact against
numpy and :mod:`openlpu.vxm_ops`, with measured cycles equal to the compiler's prediction."""

import numpy as np
import pytest

from openlpu import vxm_ops
from openlpu.firmware.compiler import CompileError, compile_matmul
from openlpu.host.device import Device
from openlpu.params import preset

P = preset("mini")


@pytest.fixture(scope="module")
def dev():
    with Device.open("verilator", P) as d:
        yield d


def _operands(kind, M, K, N, seed):
    rng = np.random.default_rng(seed)
    if kind == "random":
        return rng.integers(-128, 128, (M, K)), rng.integers(-128, 128, (K, N))
    v = {"min": -128, "max": 127, "zero": 0, "one": 1}[kind]
    return np.full((M, K), v), np.full((K, N), v)


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("kind", ["random", "min", "max", "zero", "one"])
@pytest.mark.parametrize("shape", [(1, 1, 1), (8, 8, 8), (20, 13, 11), (5, 17, 9)])
def test_matmul_requantize_relu(dev, shape, kind, relu):
    M, K, N = shape
    mult, shift = (-(3 << 28), 6) if kind == "random" and M == 5 else ((1 << 30) + 12345, 2)
    pkg = compile_matmul(P, M, K, N, requantize=(mult, shift), relu=relu)
    A, B = _operands(kind, M, K, N, seed=M * 100 + K)
    dev.load(pkg)
    dev.write_inputs({"A": A, "B": B})
    assert dev.run() == pkg.predicted_cycles
    want = vxm_ops.requantize(A.astype(np.int64) @ B, mult, shift)
    if relu:
        want = np.maximum(want, 0)
    np.testing.assert_array_equal(dev.read_outputs()["C"], want)


def test_epilogue_needs_a_vxm():
    with pytest.raises(CompileError, match="needs 1 VXM ALU"):
        compile_matmul(preset("tiny"), 2, 2, 2, requantize=(1 << 30, 0))
    with pytest.raises(CompileError, match="relu needs requantize"):
        compile_matmul(P, 2, 2, 2, relu=True)
    with pytest.raises(CompileError, match="shift 0..31"):
        compile_matmul(P, 2, 2, 2, requantize=(1 << 30, 40))


@pytest.mark.parametrize("op", ["ADD", "SUB", "MUL", "MIN", "MAX", "AND", "OR", "XOR",
                                "RELU", "ABS", "NEG"])
def test_elementwise(dev, op):
    from openlpu.firmware.compiler import compile_elementwise
    R, C = 6, P.vl + 3
    pkg = compile_elementwise(P, op, R, C)
    rng = np.random.default_rng(sum(map(ord, op)))
    A, B = rng.integers(-128, 128, (R, C)), rng.integers(-128, 128, (R, C))
    A[0, :4], B[0, :4] = [-128, 127, 0, 1], [-128, -1, 127, 1]
    dev.load(pkg)
    dev.write_inputs({"A": A, "B": B} if len(pkg.inputs) == 2 else {"A": A})
    assert dev.run() == pkg.predicted_cycles
    if len(pkg.inputs) == 2:
        want = vxm_ops.binary_op(op, A, B, 0)
    else:
        want = vxm_ops.unary_op(op, A, 0)
    np.testing.assert_array_equal(dev.read_outputs()["Y"], want)
    # rows are pipelined: one vector per cycle once the pipeline is full
    assert pkg.predicted_cycles < pkg.meta["vectors"] + 20
