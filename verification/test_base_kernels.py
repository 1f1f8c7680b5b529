"""The model-scale chip's kernels: attention with head dim 32 and 64, softmax and RMSNorm over
384-wide rows (all-MiniLM-L6-v2's sizes) compiled for ``base`` and run on the reference model,
bit-exact against the integer reference (:mod:`openlpu.verification.reference`), with measured
cycles equal to the prediction."""

import numpy as np
import pytest

from openlpu.firmware.attention import attention_tensor_names, compile_attention
from openlpu.firmware.norm import compile_rmsnorm, compile_softmax
from openlpu.host.device import Device
from openlpu.params import preset
from openlpu.verification import reference as ref

BASE = preset("base")
EDGES = np.array([-128, 127, 0, 1])


def _int8(rng, shape, fill):
    X = rng.integers(-128, 128, shape)
    if fill == "edges":
        idx = rng.integers(0, X.size, X.size // 2)
        X.flat[idx] = rng.choice(EDGES, idx.size)
        X.flat[:4] = EDGES
    return X


@pytest.fixture(scope="module")
def dev():
    with Device.open("model", BASE) as d:
        yield d


@pytest.mark.parametrize("lq,lk,d,heads,causal,fill", [
    (64, 64, 32, 2, True, "random"),     # MiniLM's head dim, two heads, a full VL of queries
    (16, 40, 32, 1, False, "edges"),     # fewer queries than keys, a partial key block
    (32, 32, 64, 1, True, "edges"),      # head dim 64
])
def test_attention(dev, lq, lk, d, heads, causal, fill):
    scale = 1 / np.sqrt(d)
    pkg = compile_attention(BASE, lq, lk, d, heads=heads, scale=scale, causal=causal)
    rng = np.random.default_rng(lq * 1000 + lk * 10 + d)
    names = attention_tensor_names(heads)
    inputs, want = {}, {}
    for h in range(heads):
        Q, K, V = (_int8(rng, (n, d), fill) for n in (lq, lk, lk))
        inputs.update({names["Q"][h]: Q, names["K"][h]: K, names["V"][h]: V})
        want[names["O"][h]] = ref.attention_int(Q, K, V, ref.attention_consts(scale), causal)["O"]
    cycles, out = dev.run_package(pkg, inputs)
    assert cycles == pkg.predicted_cycles
    for name, w in want.items():
        np.testing.assert_array_equal(out[name], w, err_msg=name)


@pytest.mark.parametrize("rows,fill", [(64, "random"), (20, "edges")])
def test_softmax_384(dev, rows, fill):
    scale = 0.03
    X = _int8(np.random.default_rng(rows), (rows, 384), fill)
    pkg = compile_softmax(BASE, rows, 384, scale=scale)
    cycles, out = dev.run_package(pkg, {"X": X})
    assert cycles == pkg.predicted_cycles
    np.testing.assert_array_equal(out["Y"], ref.softmax_int(X, ref.softmax_consts(scale))["Y"])


@pytest.mark.parametrize("rows,fill", [(64, "edges"), (16, "random")])
def test_rmsnorm_384(dev, rows, fill):
    rng = np.random.default_rng(100 + rows)
    kw = dict(gamma=rng.uniform(-2.0, 2.0, 384), eps=1e-3, in_scale=1 / 32, out_scale=1 / 64)
    X = _int8(rng, (rows, 384), fill)
    pkg = compile_rmsnorm(BASE, rows, 384, **kw)
    cycles, out = dev.run_package(pkg, {"X": X})
    assert cycles == pkg.predicted_cycles
    np.testing.assert_array_equal(out["Y"], ref.rmsnorm_int(X, ref.rmsnorm_consts(384, **kw))["Y"])
