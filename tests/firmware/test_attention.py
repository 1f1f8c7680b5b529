"""Attention compiler: shapes that must be refused, the integer algorithm's accuracy against
float64, and bit-exact runs on the reference model (the RTL runs are in
verification/cocotb/test_attention.py)."""

import numpy as np
import pytest

from openlpu.firmware.attention import attention_tensor_names, compile_attention
from openlpu.firmware.schedule import CompileError
from openlpu.host.device import Device
from openlpu.params import preset
from openlpu.verification import reference as ref

P = preset("mini")
# documented tolerance (docs/kernels.md): |P_chip - P_float64| over the test matrix below
# (measured worst: 0.0039 at 1..96 keys; the int8 numerators limit it to 128 / L + exp error,
# L = sum E >= 32600)
P_TOLERANCE = 0.01


def _scale(d):
    return (1 / 32) ** 2 / np.sqrt(d)      # Q and K dequantised with 1/32 each, 1/sqrt(d)


def _qkv(rng, lq, lk, d, fill="random"):
    if fill == "random":
        return (rng.integers(-128, 128, (lq, d)), rng.integers(-128, 128, (lk, d)),
                rng.integers(-128, 128, (lk, d)))
    if fill == "edges":
        out = [rng.integers(-128, 128, s) for s in ((lq, d), (lk, d), (lk, d))]
        for X in out:
            idx = rng.integers(0, X.size, X.size // 3)
            X.flat[idx] = rng.choice(np.array([-128, 127, 0, 1]), idx.size)
        return tuple(out)
    return tuple(np.full(s, fill) for s in ((lq, d), (lk, d), (lk, d)))


def test_refuses_what_does_not_fit():
    with pytest.raises(CompileError, match="4 ALUs"):
        compile_attention(preset("tiny"), 4, 4, 4, scale=0.01)
    with pytest.raises(CompileError, match="head_dim 9 exceeds the vector length 8"):
        compile_attention(P, 4, 4, 9, scale=0.01)
    with pytest.raises(CompileError, match=r"K \(heads x seq_k\) in mem_w0 bank 0 needs 96"):
        compile_attention(P, 24, 24, 8, heads=4, scale=0.01)
    with pytest.raises(CompileError, match="seq_q must be a positive integer"):
        compile_attention(P, 0, 4, 4, scale=0.01)
    with pytest.raises(CompileError, match="scale must be positive"):
        compile_attention(P, 4, 4, 4, scale=-1.0)
    with pytest.raises(CompileError, match="scale 1e-07 is too small: masked keys"):
        compile_attention(P, 4, 4, 4, scale=1e-7)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("d", [4, 8, 16, 32])
@pytest.mark.parametrize("seq", [1, 7, 8, 24, 64, 96])
def test_integer_algorithm_accuracy(seq, d, causal):
    """The probabilities the algorithm applies (256 e8 / L) against float64 softmax."""
    rng = np.random.default_rng(seq * 100 + d)
    worst = 0.0
    for _ in range(3):
        Q, K, V = _qkv(rng, seq, seq, d)
        got = ref.attention_int(Q, K, V, ref.attention_consts(_scale(d)), causal)
        o_f, p_f = ref.attention_float(Q, K, V, _scale(d), causal)
        assert got["e8"].max() <= 127 and got["e8"].min() >= 0
        # the denominator is the exact sum of the full-precision E = 256 e8 + lo
        np.testing.assert_array_equal(got["lo"], got["E"] - 256 * got["e8"])
        np.testing.assert_array_equal(got["l"], got["E"].sum(axis=1))
        worst = max(worst, float(np.abs(got["P"] - p_f).max()))
        # the output is int8 in V's units: |O - O_f| <= 1/2 (rounding) + sum_j |dP_j| |V_j|
        bound = 0.5 + 1e-6 + (np.abs(got["P"] - p_f) @ np.abs(V).astype(float))
        assert (np.abs(got["O"] - o_f) <= bound).all()
    assert worst <= P_TOLERANCE


@pytest.mark.parametrize("case", [
    # (seq_q, seq_k, head_dim, heads, causal, fill)
    (1, 1, 4, 1, False, "random"),
    (7, 7, 8, 1, True, "random"),
    (8, 8, 4, 1, False, "edges"),
    (24, 24, 8, 1, True, "random"),
    (5, 19, 8, 1, True, "random"),       # seq_q < seq_k: causal offset
    (7, 7, 4, 4, True, "edges"),
    (8, 8, 8, 2, False, 127),
    (8, 8, 8, 1, True, -128),
    (24, 24, 8, 1, False, "edges"),
    (9, 3, 8, 1, True, "random"),        # seq_q > seq_k: queries that see no key
    (9, 12, 6, 1, True, "random"),       # a tile whose last key block is partly unseen
    (16, 21, 6, 2, True, "edges"),
])
def test_bit_exact_on_the_model(case):
    _run_on_the_model(P, case)


@pytest.mark.parametrize("case", [
    (16, 16, 8, 4, True, "edges"),       # 4 heads of masked rows (A: VMULSHR + VEXP per row)
    (48, 48, 16, 1, True, "random"),
    (20, 48, 16, 1, False, "random"),
])
def test_bit_exact_on_the_model_mini4(case):
    _run_on_the_model(preset("mini4"), case)


def _run_on_the_model(P, case):
    lq, lk, d, heads, causal, fill = case
    pkg = compile_attention(P, lq, lk, d, heads=heads, scale=_scale(d), causal=causal)
    rng = np.random.default_rng(lq * 31 + lk)
    names = attention_tensor_names(heads)
    inputs, want = {}, {}
    for h in range(heads):
        Q, K, V = _qkv(rng, lq, lk, d, fill)
        inputs.update({names["Q"][h]: Q, names["K"][h]: K, names["V"][h]: V})
        want[names["O"][h]] = ref.attention_int(Q, K, V, ref.attention_consts(_scale(d)),
                                                causal)["O"]
    with Device.open("model", P) as dev:
        dev.load(pkg)
        dev.write_inputs(inputs)
        assert dev.run() == pkg.predicted_cycles
        out = dev.read_outputs()
    for name, w in want.items():
        np.testing.assert_array_equal(out[name], w, err_msg=name)


def test_instruction_images_stay_small():
    """Key rows are uniform, so REPEAT compresses the VXM and MEM queues of long sequences."""
    short = compile_attention(P, 8, 8, 8, scale=_scale(8))
    long = compile_attention(P, 24, 24, 8, scale=_scale(8))
    worst = max(len(w) for w in long.queues.values())
    assert worst <= 110, worst           # the weights queue: two LWT runs and IWs per key block
    vxm_words = [len(long.queues[f"vxm.alu{i}"]) for i in range(4)]
    # 3x the key rows and 3x the query tiles: far less than 9x the VXM words
    assert sum(vxm_words) < 4 * sum(len(short.queues[f"vxm.alu{i}"]) for i in range(4))
