"""MiniLM's chip kernels (firmware/linear.py, firmware/gelu.py) on the reference model, bit for
bit against the integer reference (verification/models/minilm_int.py) with parameters made by
the quantizer (host/models/minilm_quant.py) from seeded random weights and scales; measured
cycles equal the predicted ones. int16 tensors are stored as int32 (sign-extended)."""

import numpy as np
import pytest

from openlpu.firmware.gelu import compile_gelu
from openlpu.firmware.linear import compile_linear, compile_residual
from openlpu.firmware.schedule import CompileError
from openlpu.host.device import Device
from openlpu.host.models.minilm_quant import make_rescale, quantize_gelu, quantize_linear
from openlpu.params import preset
from openlpu.verification.models import minilm_int

BASE = preset("base")


def _run(p, pkg, inputs):
    dev = Device.open("model", p)
    cycles, out = dev.run_package(pkg, inputs)
    assert cycles == pkg.predicted_cycles
    return out


def _linear_quant(rng, K, N, out_dtype, out_unit):
    w = rng.normal(0, 0.05, (N, K))
    b = rng.normal(0, 0.1, N)
    in_scale = rng.uniform(0.5, 1.5, K) * 0.02
    return quantize_linear(w, b, in_scale, rng.uniform(0.5, 1.5, N) * out_unit, out_dtype, "t")


def _x8(rng, M, K):
    x = rng.integers(-128, 128, (M, K))
    x[0, :] = 127                                   # edge rows: saturating accumulators
    x[1, :] = -128
    return x


@pytest.mark.parametrize("out_dtype, unit", [(0, 0.01), (1, 1e-4), (2, 1e-4), (0, 1e-3),
                                             (1, 2e-6)])
def test_linear_matches_linear_int(out_dtype, unit):
    """int8 X -> int8 / int16 / int32; the small units saturate many outputs."""
    rng = np.random.default_rng(10 + out_dtype)
    M, K, N = 9, 80, 70
    lq = _linear_quant(rng, K, N, out_dtype, unit)
    pkg = compile_linear(BASE, M, K, N, bias=lq.bias, mult=lq.out.mult, shift=lq.out.shift,
                         out_dtype=out_dtype)
    x = _x8(rng, M, K)
    out = _run(BASE, pkg, {"X": x, "W": lq.weight.astype(np.int64)})
    want = minilm_int.linear_int(x, lq)
    np.testing.assert_array_equal(out["Y"], want)
    if unit in (1e-3, 2e-6):                        # the saturating cases do saturate
        lim = 127 if out_dtype == 0 else 32767
        assert (np.abs(want) == lim).any()


def test_linear_one_multiplier_for_all_channels():
    rng = np.random.default_rng(3)
    M, K, N = 4, 64, 64
    lq = _linear_quant(rng, K, N, 0, 0.01)
    rq = make_rescale(lq.acc_scale.mean() / 0.01, 0, "one")
    pkg = compile_linear(BASE, M, K, N, bias=lq.bias, mult=rq.mult, shift=rq.shift, out_dtype=0)
    x = _x8(rng, M, K)
    out = _run(BASE, pkg, {"X": x, "W": lq.weight.astype(np.int64)})
    acc = minilm_int.mxm(x, lq.weight) + lq.bias[None]
    np.testing.assert_array_equal(out["Y"], minilm_int.rescale(acc, rq))


def test_linear_refuses_bad_constants():
    kw = dict(bias=np.zeros(8, dtype=np.int64), mult=[1 << 30], shift=40, out_dtype=0)
    with pytest.raises(CompileError, match="bias must be 8 integers"):
        compile_linear(BASE, 2, 8, 8, **dict(kw, bias=np.zeros(7, dtype=np.int64)))
    with pytest.raises(CompileError, match="3 rescale multipliers for 8 channels"):
        compile_linear(BASE, 2, 8, 8, **dict(kw, mult=[1, 2, 3]))
    with pytest.raises(CompileError, match="multipliers must be in 1..2\\*\\*31-1"):
        compile_linear(BASE, 2, 8, 8, **dict(kw, mult=[1 << 31]))
    with pytest.raises(CompileError, match="shift must be in 31..62 for dtype 0"):
        compile_linear(BASE, 2, 8, 8, **dict(kw, shift=20))
    with pytest.raises(CompileError, match="int32 VXM operands need 4 MEM slices on one side "
                                           "of the VXM; preset 'mini4' has 2 per side"):
        compile_linear(preset("mini4"), 2, 8, 8, **kw)


def test_residual_matches_residual_int():
    rng = np.random.default_rng(4)
    R, C = 7, 100
    rq = make_rescale(0.37, 2, "res")
    a = rng.integers(-40000, 40000, (R, C))
    a[0, :3] = [2 ** 20, -2 ** 20, 0]               # saturate to int16
    x = rng.integers(-32768, 32768, (R, C))
    x[1, :2] = [-32768, 32767]
    pkg = compile_residual(BASE, R, C, mult=rq.mult, shift=rq.shift)
    out = _run(BASE, pkg, {"A": a, "X": x})
    want = minilm_int.residual_int(a, x, rq)
    np.testing.assert_array_equal(out["Y"], want)
    assert (np.abs(want) == 32767).any()


@pytest.mark.parametrize("out_dtype", [0, 1])
def test_gelu_matches_gelu_int(out_dtype):
    rng = np.random.default_rng(20 + out_dtype)
    R, C = 6, 72
    in_scale = 25.0 / 32767
    unit = 0.1 if out_dtype == 0 else in_scale
    gq = quantize_gelu(in_scale, rng.uniform(0.5, 1.5, C) * unit, "t", out_dtype)
    x = rng.integers(-32768, 32768, (R, C))
    x[0, :8] = [-32768, 32767, 0, 1, -1, 300, -300, 5000]
    x[1, :] = rng.integers(-2000, 2000, C)          # the table's range (|x| < 4)
    pkg = compile_gelu(BASE, R, C, table=gq.table, idx_mult=gq.idx.mult, idx_shift=gq.idx.shift,
                       c_mult=gq.c_to_x.mult, c_shift=gq.c_to_x.shift, out_mult=gq.out.mult,
                       out_shift=gq.out.shift, out_dtype=out_dtype)
    out = _run(BASE, pkg, {"X": x})
    np.testing.assert_array_equal(out["Y"], minilm_int.gelu_int(x, gq))


def test_gelu_refuses_what_does_not_fit():
    gq = quantize_gelu(1e-3, np.ones(8), "t", 0)
    kw = dict(table=gq.table, idx_mult=gq.idx.mult, idx_shift=gq.idx.shift,
              c_mult=gq.c_to_x.mult, c_shift=gq.c_to_x.shift, out_mult=gq.out.mult,
              out_shift=gq.out.shift, out_dtype=0)
    with pytest.raises(CompileError, match="table needs 256 words of one bank, a bank holds 64"):
        compile_gelu(preset("mini4"), 2, 8, **kw)
    with pytest.raises(CompileError, match="table must be 256 integers in 0..127"):
        compile_gelu(BASE, 2, 8, **dict(kw, table=np.full(256, 200)))
    with pytest.raises(CompileError, match="out_dtype must be 0"):
        compile_gelu(BASE, 2, 8, **dict(kw, out_dtype=2))
    with pytest.raises(CompileError, match="3 rescale multipliers for 8 channels"):
        compile_gelu(BASE, 2, 8, **dict(kw, out_mult=[1, 2, 3]))
    with pytest.raises(CompileError, match="gelu R must be a positive integer"):
        compile_gelu(BASE, 0, 8, **kw)


@pytest.mark.parametrize("chip, L, n_real, heads", [("base", 20, 13, 2), ("mini4", 12, 7, 1),
                                                    ("base", 70, 67, 1)])
def test_attention_with_padding_keys_matches_attention_head_int(chip, L, n_real, heads):
    """Self-attention of L tokens of which the last L - n_real are padding (keys masked for
    every query), head dim 32 (mini4: 16), against ``attention_head_int``; the real queries'
    rows equal the unpadded sequence's."""
    from openlpu.firmware.attention import attention_consts, attention_tensor_names, \
        compile_attention
    p = preset(chip)
    d = min(32, p.vl)
    scale = (1 / 32) ** 2 / np.sqrt(d)
    mask = np.array([1] * n_real + [0] * (L - n_real))
    pkg = compile_attention(p, L, L, d, heads=heads, scale=scale, key_mask=mask)
    assert pkg.meta["padding_keys"] == L - n_real
    rng = np.random.default_rng(L + n_real)
    names = attention_tensor_names(heads)
    consts = attention_consts(scale)
    inputs, want = {}, {}
    for h in range(heads):
        Q, K, V = (rng.integers(-128, 128, (L, d)) for _ in range(3))
        Q[0], K[1], V[2] = 127, -128, 127                     # edge rows
        inputs.update({names["Q"][h]: Q, names["K"][h]: K, names["V"][h]: V})
        want[names["O"][h]] = minilm_int.attention_head_int(Q, K, V, consts, mask)["O"]
        unpadded = minilm_int.attention_head_int(Q[:n_real], K[:n_real], V[:n_real], consts,
                                                 np.ones(n_real))["O"]
        np.testing.assert_array_equal(want[names["O"][h]][:n_real], unpadded)
    out = _run(p, pkg, inputs)
    for name, w in want.items():
        np.testing.assert_array_equal(out[name], w, err_msg=name)


def test_attention_key_mask_refused():
    from openlpu.firmware.attention import compile_attention
    with pytest.raises(CompileError, match="key_mask must be 8 values 0 or 1"):
        compile_attention(preset("mini4"), 8, 8, 16, scale=0.01, key_mask=[1] * 7)
    with pytest.raises(CompileError, match="key_mask must be 8 values 0 or 1"):
        compile_attention(preset("mini4"), 8, 8, 16, scale=0.01, key_mask=[2] * 8)


@pytest.mark.parametrize("rows, n", [(70, 40), (16, 384)])
def test_layer_norm_matches_layer_norm_int(rows, n):
    """Two row tiles (70 rows) and MiniLM's 384 channels; rows of small variance (the fine
    range), int16 extremes and large variances (the coarse range), a constant row."""
    from openlpu.firmware.layernorm import compile_layer_norm
    from openlpu.host.models.minilm_quant import quantize_layer_norm
    rng = np.random.default_rng(rows + n)
    ln = quantize_layer_norm(rng.uniform(0.5, 1.5, n), rng.normal(0, 0.1, n), 1e-12, 0.01,
                             rng.uniform(0.5, 1.5, n) * 0.05, 3 / 32767, "t")
    x = rng.integers(-3000, 3000, (rows, n))
    x[1] = rng.integers(-3, 3, n)
    x[2] = 5
    x[3] = rng.integers(-32768, 32768, n)
    x[4, ::2], x[4, 1::2] = 32767, -32768
    x[5:9] = rng.integers(-30000, 30000, (4, n))
    pkg = compile_layer_norm(BASE, rows, ln)
    out = _run(BASE, pkg, {"R": x})
    want = minilm_int.layer_norm_int(x, ln)
    assert want["fine"].any() and not want["fine"].all()
    np.testing.assert_array_equal(out["Y8"], want["y8"])
    np.testing.assert_array_equal(out["Y16"], want["y16"])


def test_layer_norm_refuses_what_does_not_fit():
    from openlpu.firmware.layernorm import compile_layer_norm
    from openlpu.host.models.minilm_quant import quantize_layer_norm
    ln = quantize_layer_norm(np.ones(8), np.zeros(8), 1e-12, 0.01, 0.05, 3 / 32767, "t")
    with pytest.raises(CompileError, match="int32 VXM operands need 4 MEM slices"):
        compile_layer_norm(preset("mini4"), 4, ln)
    with pytest.raises(CompileError, match="layer_norm rows must be a positive integer"):
        compile_layer_norm(BASE, 0, ln)


@pytest.mark.parametrize("M, K, N, out_dtype", [(5, 80, 70, 0), (4, 1536, 70, 2),
                                                (9, 300, 64, 1)])
def test_int16_operand_linear_matches_linear_int(M, K, N, out_dtype):
    """int16 X as two int8 MXM passes over its byte planes (wide_shift 0 for K < 1000, 2 for
    1536, as FFN 2), int16 extremes in the first rows."""
    from openlpu.firmware.linear import compile_linear_wide
    rng = np.random.default_rng(M * K + N)
    lq = quantize_linear(rng.normal(0, 0.05, (N, K)), rng.normal(0, 0.1, N),
                         rng.uniform(0.5, 1.5, K) * 1e-4,
                         rng.uniform(0.5, 1.5, N) * (0.01 if out_dtype == 0 else 1e-4),
                         out_dtype, "t", in_dtype=1)
    assert lq.wide_shift == (2 if K == 1536 else 0)
    x = rng.integers(-32768, 32768, (M, K))
    x[0], x[1] = 32767, -32768
    pkg = compile_linear_wide(BASE, M, K, N, bias=lq.bias, lo_bias=lq.lo_bias,
                              wide_shift=lq.wide_shift, mult=lq.out.mult, shift=lq.out.shift,
                              out_dtype=out_dtype)
    assert pkg.meta["shape"] == [2 * M, K, N]
    out = _run(BASE, pkg, {"X": x, "W": lq.weight.astype(np.int64)})
    np.testing.assert_array_equal(out["Y"], minilm_int.linear_int(x, lq))


def test_int16_operand_linear_refuses_an_overflowing_bias():
    from openlpu.firmware.linear import compile_linear_wide
    kw = dict(bias=np.full(8, 2 ** 29), lo_bias=np.zeros(8, dtype=np.int64), wide_shift=2,
              mult=[1 << 30], shift=40, out_dtype=0)
    with pytest.raises(CompileError, match=r"lo_bias \+ bias \* 2\*\*wide_shift could overflow"):
        compile_linear_wide(BASE, 2, 64, 8, **kw)
    with pytest.raises(CompileError, match="wide_shift must be in 0..8"):
        compile_linear_wide(BASE, 2, 64, 8, **dict(kw, wide_shift=9))
