"""The same program gives the same outputs and cycle count on the model, Amaranth and Verilator."""

import numpy as np
import pytest

from openlpu.firmware.compiler import compile_matmul
from openlpu.host.device import Device
from openlpu.params import preset

from ..conftest import int8_operands


@pytest.mark.parametrize("name", ["tiny", "quad"])
def test_matmul_identical_on_every_backend(name):
    p = preset(name)
    rng = np.random.default_rng(99)
    M, K, N = 3, p.vl + 2, 5
    pkg = compile_matmul(p, M, K, N)
    A, B = int8_operands(rng, (M, K)), int8_operands(rng, (K, N))
    A[0, :] = -128
    B[:, 0] = 127
    results = {}
    for backend in ("model", "amaranth", "verilator"):
        with Device.open(backend, p) as dev:
            dev.load(pkg)
            dev.write_inputs({"A": A, "B": B})
            cycles = dev.run()
            results[backend] = (cycles, dev.read_outputs()["C"])
    want = A.astype(np.int32) @ B.astype(np.int32)
    for backend, (cycles, C) in results.items():
        assert cycles == pkg.predicted_cycles, backend
        np.testing.assert_array_equal(C, want, err_msg=backend)
