"""Transpose kernel on the Verilator RTL of ``mini`` and ``mini4`` (every slice kind; 2 and 4
superlanes): every element of ``Y`` equals numpy ``X.T``, measured cycles equal the prediction."""

import numpy as np
import pytest

from openlpu.firmware.transpose import compile_transpose
from openlpu.host.device import Device
from openlpu.params import preset

from tests.firmware.test_transpose import shapes, transpose_operand


@pytest.fixture(scope="module", params=["mini", "mini4"])
def dev(request):
    with Device.open("verilator", preset(request.param)) as d:
        yield d


@pytest.mark.parametrize("fill", ["random", "edges", -128, 127, 0, 1])
def test_transpose_rtl(dev, fill):
    p = dev.params
    for k, (rows, cols) in enumerate(shapes(p)):
        rng = np.random.default_rng(2000 * k + rows * 41 + cols)
        if isinstance(fill, str):
            X = transpose_operand(rng, rows, cols, fill)
        else:
            X = np.full((rows, cols), fill)
        pkg = compile_transpose(p, rows, cols)
        dev.load(pkg)
        dev.write_inputs({"X": X})
        assert dev.run() == pkg.predicted_cycles, f"{rows}x{cols}"
        Y = dev.read_outputs()["Y"]
        np.testing.assert_array_equal(Y, X.T, err_msg=f"{rows}x{cols} on {p.name}")
