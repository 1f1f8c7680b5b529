"""Row softmax and RMSNorm on the Verilator RTL of the ``mini`` preset: every output element
equal to the integer references of verification/reference.py, measured cycles equal to the
compiler's prediction."""

import numpy as np
import pytest

from openlpu.firmware.norm import compile_rmsnorm, compile_softmax
from openlpu.host.device import Device
from openlpu.params import preset
from openlpu.verification import reference as ref

P = preset("mini")
VL = P.vl
EDGES = np.array([-128, 127, 0, 1])
pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def dev():
    with Device.open("verilator", P) as d:
        yield d


def _data(rng, rows, cols, fill):
    if fill == "random":
        X = rng.integers(-128, 128, (rows, cols))
        X.flat[:4] = EDGES[:min(4, X.size)]
        return X
    if fill == "rows":                      # constant rows, different per row
        v = rng.integers(-128, 128, rows)
        v[:4] = EDGES[:min(4, rows)]
        return np.repeat(v[:, None], cols, axis=1)
    return np.full((rows, cols), fill)


def _run(dev, pkg, X):
    dev.load(pkg)
    dev.write_inputs({"X": X})
    assert dev.run() == pkg.predicted_cycles
    return dev.read_outputs()["Y"]


@pytest.mark.parametrize("rows, cols, fill", [
    (1, 1, "random"), (7, 5, "random"), (VL, 21, "random"), (3 * VL, 9, "random"),
    (VL, 8, "rows"), (5, 6, -128), (5, 6, 127)])
def test_softmax_rtl(dev, rows, cols, fill):
    rng = np.random.default_rng(rows * 100 + cols)
    scale = 1 / 16
    X = _data(rng, rows, cols, fill)
    Y = _run(dev, compile_softmax(P, rows, cols, scale=scale), X)
    want = ref.softmax_int(X, ref.softmax_consts(scale))
    np.testing.assert_array_equal(Y, want["Y"])
    assert np.abs(Y / ref.SOFTMAX_ONE - ref.softmax_float(X, scale)).max() <= 0.0045


@pytest.mark.parametrize("rows, dim, fill", [
    (1, 1, "random"), (7, 5, "random"), (VL, 8, "random"), (3 * VL, 9, "random"),
    (5, 21, "random"), (VL, 8, "rows"), (5, 6, -128), (5, 6, 0)])
def test_rmsnorm_rtl(dev, rows, dim, fill):
    rng = np.random.default_rng(rows * 100 + dim)
    kw = dict(gamma=rng.uniform(-2.0, 2.0, dim), eps=1e-3, in_scale=1 / 32, out_scale=1 / 64)
    X = _data(rng, rows, dim, fill)
    Y = _run(dev, compile_rmsnorm(P, rows, dim, **kw), X)
    np.testing.assert_array_equal(Y, ref.rmsnorm_int(X, ref.rmsnorm_consts(dim, **kw))["Y"])
