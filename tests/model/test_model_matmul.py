"""The reference model runs compiled matmuls bit-exactly against numpy, with cycles as predicted."""

import numpy as np
import pytest

from openlpu.firmware.compiler import compile_matmul
from openlpu.host.device import Device
from openlpu.host.backends.model import ModelBackend

from ..conftest import int8_operands


def shapes(p):
    vl = p.vl
    return [(1, 1, 1), (vl, vl, vl), (5, 13, 7), (3, 2 * vl + 3, vl + 1),
            (p.mxm_acc_words + 3, 4, 5)]


@pytest.mark.parametrize("kind", ["random", "min", "max", "zero", "one"])
def test_matmul_on_model(params, kind):
    rng = np.random.default_rng(1234)
    for M, K, N in shapes(params):
        pkg = compile_matmul(params, M, K, N)
        dev = Device(ModelBackend(params, strict=True))
        A, B = int8_operands(rng, (M, K), kind), int8_operands(rng, (K, N), kind)
        dev.load(pkg)
        dev.write_inputs({"A": A, "B": B})
        assert dev.run() == pkg.predicted_cycles
        C = dev.read_outputs()["C"]
        np.testing.assert_array_equal(C, A.astype(np.int32) @ B.astype(np.int32))
