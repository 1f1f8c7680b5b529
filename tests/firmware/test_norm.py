"""Softmax and RMSNorm compilers: inputs that must be refused, the integer algorithms' accuracy
against float64, and bit-exact runs on the reference model with the predicted cycle counts
(the RTL runs are in verification/test_norm_rtl.py)."""

import dataclasses

import numpy as np
import pytest

from openlpu.firmware.norm import compile_rmsnorm, compile_softmax
from openlpu.firmware.schedule import CompileError
from openlpu.host.device import Device
from openlpu.params import PRESETS, preset
from openlpu.verification import reference as ref

PRESET_NAMES = [n for n in ("mini", "mini4") if n in PRESETS]
P = preset("mini")
# documented tolerances (docs/kernels.md): softmax probabilities Y / 127 against float64
# (measured worst 0.0039: the int8 rounding, 0.5 / 127)
SOFTMAX_TOL = 0.0045
EDGES = np.array([-128, 127, 0, 1])


def _data(rng, rows, cols, fill):
    """int8 test matrices: random, random with many edge values, constant rows, one value."""
    if fill == "random":
        return rng.integers(-128, 128, (rows, cols))
    if fill == "edges":
        X = rng.integers(-128, 128, (rows, cols))
        idx = rng.integers(0, X.size, max(1, X.size // 2))
        X.flat[idx] = rng.choice(EDGES, idx.size)
        X.flat[:4] = EDGES[:min(4, X.size)]
        return X
    if fill == "rows":                      # every row constant, rows differ (incl. the edges)
        v = rng.integers(-128, 128, rows)
        v[:4] = EDGES[:min(4, rows)]
        return np.repeat(v[:, None], cols, axis=1)
    return np.full((rows, cols), fill)


def _rms_kwargs(rng, dim):
    return dict(gamma=rng.uniform(-2.0, 2.0, dim), eps=1e-3, in_scale=1 / 32, out_scale=1 / 64)


# -- compile errors -------------------------------------------------------------------------
def test_softmax_refuses_what_does_not_fit():
    with pytest.raises(CompileError, match="needs a VXM with 4 ALUs; preset 'tiny' has 0"):
        compile_softmax(preset("tiny"), 4, 4, scale=0.1)
    with pytest.raises(CompileError, match="rows must be a positive integer"):
        compile_softmax(P, 0, 4, scale=0.1)
    with pytest.raises(CompileError, match="cols must be a positive integer"):
        compile_softmax(P, 4, 2.5, scale=0.1)
    with pytest.raises(CompileError, match=r"X \(row tiles x cols\) in mem_w0 bank 0 needs 66 "
                                           r"words, a bank holds 64"):
        compile_softmax(P, 3 * P.vl, 22, scale=0.1)
    for bad in (0.0, -1.0, float("nan"), float("inf"), "x"):
        with pytest.raises(CompileError, match="softmax scale must be a positive finite"):
            compile_softmax(P, 4, 4, scale=bad)
    with pytest.raises(CompileError, match="too large for an int32 multiplier"):
        compile_softmax(P, 4, 4, scale=1e6)


def test_rmsnorm_refuses_what_does_not_fit():
    kw = dict(gamma=np.ones(4), eps=1e-5, in_scale=0.05, out_scale=0.05)
    with pytest.raises(CompileError, match="needs a VXM with 4 ALUs"):
        compile_rmsnorm(preset("tiny"), 4, 4, **kw)
    with pytest.raises(CompileError, match="dim must be a positive integer"):
        compile_rmsnorm(P, 4, 0, **kw)
    with pytest.raises(CompileError, match=r"one-hot vectors \(VL \+ dim\) in mem_w1 bank 0 "
                                           r"needs 68 words"):
        compile_rmsnorm(P, 1, 60, **dict(kw, gamma=np.ones(60)))
    with pytest.raises(CompileError, match=r"X \(row tiles x dim\) in mem_w0 bank 0 needs 80"):
        compile_rmsnorm(P, 4 * P.vl + 1, 16, **dict(kw, gamma=np.ones(16)))
    with pytest.raises(CompileError, match="gamma has 3 values, expected dim = 4"):
        compile_rmsnorm(P, 4, 4, **dict(kw, gamma=np.ones(3)))
    with pytest.raises(CompileError, match="gamma must be finite"):
        compile_rmsnorm(P, 4, 4, **dict(kw, gamma=[1, 2, np.nan, 1]))
    with pytest.raises(CompileError, match="eps must be a finite number >= 0"):
        compile_rmsnorm(P, 4, 4, **dict(kw, eps=-1e-3))
    with pytest.raises(CompileError, match="in_scale must be a positive finite"):
        compile_rmsnorm(P, 4, 4, **dict(kw, in_scale=0.0))
    with pytest.raises(CompileError, match="out_scale must be a positive finite"):
        compile_rmsnorm(P, 4, 4, **dict(kw, out_scale=float("inf")))
    with pytest.raises(CompileError, match="out of the fixed-point range"):
        compile_rmsnorm(P, 4, 4, **dict(kw, in_scale=1e6))
    with pytest.raises(CompileError, match="out_scale = .* is too large"):
        compile_rmsnorm(P, 4, 4, **dict(kw, out_scale=1e-9))


def test_instruction_memory_overflow_is_a_compile_error():
    small = dataclasses.replace(P, name="mini_small_imem", imem_words=8)
    with pytest.raises(CompileError, match="softmax 7x5 on preset 'mini_small_imem': queue .* "
                                           "instruction words; preset 'mini_small_imem' has 8"):
        compile_softmax(small, 7, 5, scale=0.1)
    with pytest.raises(CompileError, match="softmax 512x1 .* mxm_w.compute needs 386 instruction"):
        compile_softmax(P, 512, 1, scale=0.1)
    with pytest.raises(CompileError, match="instruction words"):
        compile_rmsnorm(small, 7, 5, gamma=np.ones(5), eps=0.0, in_scale=0.1, out_scale=0.1)


# -- integer algorithms against float64 ---------------------------------------------------------
@pytest.mark.parametrize("scale", [1 / 16, 1 / 64, 0.003, 0.5])
@pytest.mark.parametrize("cols", [1, 2, 7, 8, 21, 64])
def test_softmax_integer_accuracy(cols, scale):
    rng = np.random.default_rng(cols * 1000 + int(1 / scale))
    worst = 0.0
    for fill in ("random", "edges", "rows"):
        X = _data(rng, 24, cols, fill)
        got = ref.softmax_int(X, ref.softmax_consts(scale))
        assert got["Y"].min() >= 0 and got["Y"].max() <= ref.SOFTMAX_ONE
        worst = max(worst, float(np.abs(got["P"] - ref.softmax_float(X, scale)).max()))
    assert worst <= SOFTMAX_TOL


@pytest.mark.parametrize("scales", [(1 / 32, 1 / 64, 1e-3), (0.01, 0.002, 1e-5), (0.1, 0.3, 0.0),
                                    (1 / 128, 1 / 16, 0.05)])
@pytest.mark.parametrize("dim", [1, 3, 8, 16, 40])
def test_rmsnorm_integer_accuracy(dim, scales):
    in_scale, out_scale, eps = scales
    rng = np.random.default_rng(dim * 7 + int(1 / in_scale))
    for fill in ("random", "edges", "rows"):
        X = _data(rng, 24, dim, fill)
        if eps == 0:
            X[X.any(axis=1) == 0, 0] = 1    # x / sqrt(0) is undefined in float64
        gamma = rng.uniform(-2.0, 2.0, dim)
        c = ref.rmsnorm_consts(dim, gamma, eps, in_scale, out_scale)
        _check_rmsnorm_accuracy(X, ref.rmsnorm_int(X, c)["Y"], c,
                                dict(gamma=gamma, eps=eps, in_scale=in_scale,
                                     out_scale=out_scale))


def _check_rmsnorm_accuracy(X, Y, c, kw):
    """int8 ``Y`` against float64 RMSNorm: within rounding (0.5) plus the VRSQRT error
    (relative 2e-3) when gamma is the int8 gamma the chip uses, and within that plus
    ``|x / rms| * g_scale / (2 out_scale)`` (the gamma quantization) for the real gamma."""
    gq = np.asarray(c.gamma_q) * c.g_scale
    fq = ref.rmsnorm_float(X, **dict(kw, gamma=gq))
    assert (np.abs(Y - np.clip(fq, -128, 127)) <= 0.5 + 2e-3 * np.abs(fq) + 1e-9).all()
    f = ref.rmsnorm_float(X, **kw)
    xhat = np.abs(f / np.where(kw["gamma"] == 0, 1, kw["gamma"]) * kw["out_scale"])
    bound = 0.5 + 2e-3 * np.abs(f) + xhat * c.g_scale / (2 * kw["out_scale"]) + 1e-9
    assert (np.abs(Y - np.clip(f, -128, 127)) <= bound).all()


# -- bit-exact on the reference model -----------------------------------------------------------
def _shapes(p):
    vl = p.vl
    out = [(1, 1), (7, 5), (vl, 8), (vl, 21), (1, 64), (2 * vl + 3, 6)]
    if 3 * 9 <= p.mem_words:                # three row tiles of 9 columns
        out.append((3 * vl, 9))
    return out


def _run(p, pkg, X):
    with Device.open("model", p) as dev:
        cycles, out = dev.run_package(pkg, {"X": X})
    return cycles, out["Y"]


@pytest.mark.parametrize("fill", ["random", "edges", "rows", -128, 127])
@pytest.mark.parametrize("pname", PRESET_NAMES)
def test_softmax_bit_exact_on_the_model(pname, fill):
    p = preset(pname)
    for rows, cols in _shapes(p):
        rng = np.random.default_rng(rows * 100 + cols)
        scale = 1 / 16 if cols < 10 else 0.01
        X = _data(rng, rows, cols, fill)
        pkg = compile_softmax(p, rows, cols, scale=scale)
        cycles, Y = _run(p, pkg, X)
        assert cycles == pkg.predicted_cycles
        np.testing.assert_array_equal(Y, ref.softmax_int(X, ref.softmax_consts(scale))["Y"],
                                      err_msg=f"{rows}x{cols}")


@pytest.mark.parametrize("fill", ["random", "edges", "rows", -128, 127, 0])
@pytest.mark.parametrize("pname", PRESET_NAMES)
def test_rmsnorm_bit_exact_on_the_model(pname, fill):
    p = preset(pname)
    for rows, dim in _shapes(p):
        if p.vl + dim > p.mem_words:
            dim = p.mem_words - p.vl
        rng = np.random.default_rng(rows * 100 + dim)
        kw = _rms_kwargs(rng, dim)
        X = _data(rng, rows, dim, fill)
        pkg = compile_rmsnorm(p, rows, dim, **kw)
        cycles, Y = _run(p, pkg, X)
        assert cycles == pkg.predicted_cycles
        want = ref.rmsnorm_int(X, ref.rmsnorm_consts(dim, **kw))["Y"]
        np.testing.assert_array_equal(Y, want, err_msg=f"{rows}x{dim}")
        if fill in ("random", "edges"):     # the chip's result is also close to float64
            _check_rmsnorm_accuracy(X, Y, ref.rmsnorm_consts(dim, **kw), kw)


def test_instruction_images_stay_small():
    """Columns are uniform, so REPEAT keeps every queue short whatever the length."""
    short = compile_softmax(P, 8, 8, scale=0.1)
    long = compile_softmax(P, 8, 64, scale=0.1)
    assert max(len(w) for w in long.queues.values()) <= max(len(w) for w in
                                                            short.queues.values()) + 2
    rn = compile_rmsnorm(P, 8, 40, gamma=np.ones(40), eps=0.0, in_scale=0.1, out_scale=0.1)
    assert max(len(rn.queues[f"vxm.alu{i}"]) for i in range(4)) <= 20
    # the weights queue takes about 5 words per block of VL columns (LWT, REPEAT, NOPs, IW)
    assert len(rn.queues["mxm_w.weights"]) <= 6 * 10 + 4


@pytest.mark.parametrize("scale", [4.0, 1e-6])
def test_softmax_extreme_scales_on_the_model(scale):
    """A large scale (differences saturate, exp underflows to 0: nearly one-hot rows) and a
    tiny one (nearly uniform rows) are bit-exact and accurate too."""
    rng = np.random.default_rng(5)
    X = _data(rng, 7, 13, "edges")
    pkg = compile_softmax(P, 7, 13, scale=scale)
    cycles, Y = _run(P, pkg, X)
    assert cycles == pkg.predicted_cycles
    want = ref.softmax_int(X, ref.softmax_consts(scale))
    np.testing.assert_array_equal(Y, want["Y"])
    assert np.abs(want["P"] - ref.softmax_float(X, scale)).max() <= SOFTMAX_TOL


def test_rmsnorm_zero_gamma_and_single_feature_on_the_model():
    rng = np.random.default_rng(6)
    X = _data(rng, 7, 5, "edges")
    kw = dict(gamma=np.zeros(5), eps=1e-5, in_scale=0.05, out_scale=0.01)
    pkg = compile_rmsnorm(P, 7, 5, **kw)
    assert _run(P, pkg, X)[1].tolist() == np.zeros((7, 5), dtype=int).tolist()
    # one feature: y = sign(x) * |gamma| / out_scale (saturated), eps aside
    X = _data(rng, 7, 1, "random")
    kw = dict(gamma=[0.5], eps=0.0, in_scale=0.05, out_scale=0.01)
    X[X == 0] = 3
    cycles, Y = _run(P, pkg := compile_rmsnorm(P, 7, 1, **kw), X)
    assert cycles == pkg.predicted_cycles
    np.testing.assert_array_equal(Y, ref.rmsnorm_int(X, ref.rmsnorm_consts(1, **kw))["Y"])
    assert (np.abs(Y - np.sign(X) * 50) <= 1).all()


def test_pipelined_timing_variants_on_the_model():
    """Latencies come from the ISA table, so presets with pipeline registers (MXM pipeline,
    MXM operand register, registered issue) compile and run bit-exactly too."""
    p = dataclasses.replace(P, name="mini_pipelined", mxm_pipeline=1, mxm_act_reg=True,
                            icu_issue_reg=True)
    rng = np.random.default_rng(9)
    for rows, cols in ((7, 5), (p.vl + 3, 13)):
        X = _data(rng, rows, cols, "edges")
        pkg = compile_softmax(p, rows, cols, scale=1 / 16)
        cycles, Y = _run(p, pkg, X)
        assert cycles == pkg.predicted_cycles
        np.testing.assert_array_equal(Y, ref.softmax_int(X, ref.softmax_consts(1 / 16))["Y"])
        kw = _rms_kwargs(rng, cols)
        pkg = compile_rmsnorm(p, rows, cols, **kw)
        cycles, Y = _run(p, pkg, X)
        assert cycles == pkg.predicted_cycles
        np.testing.assert_array_equal(Y, ref.rmsnorm_int(X, ref.rmsnorm_consts(cols, **kw))["Y"])
