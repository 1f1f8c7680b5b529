"""The decoder model: committed weights, the float and integer references, KV-cache decoding and
task accuracy (host/models/decoder.py, verification/models/decoder_ref.py)."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from openlpu import vxm_ops
from openlpu.firmware.attention import compile_attention
from openlpu.firmware.compiler import compile_matmul
from openlpu.firmware.norm import compile_rmsnorm
from openlpu.host.device import Device
from openlpu.host.models.decoder import (FLOAT_FILE, INT8_FILE, RMS_EPS, DecoderConfig,
                                         ReverseTask, Tokenizer, argmax_token, load_weights,
                                         requant_params)
from openlpu.params import preset
from openlpu.verification.models.decoder_ref import (KVCache, float_forward, float_generate,
                                                     int_decode_step, int_forward, int_generate,
                                                     int_prefill, sat_add8)

_BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "decoder_accuracy.py"
N_ACCURACY = 80         # held-out prompts in the test (the benchmark runs all 500)


@pytest.fixture(scope="module")
def w():
    return load_weights()


def test_weights_load(w):
    c = w.cfg
    assert c == DecoderConfig()
    assert (c.d_model, c.n_heads, c.head_dim, c.d_ff, c.n_layers) == (128, 4, 32, 512, 2)
    assert c.context >= 128 and c.d_model % 64 == 0
    assert INT8_FILE.stat().st_size < 2 << 20 and FLOAT_FILE.stat().st_size < 4 << 20
    shapes = {"tok": (c.vocab, c.d_model), "pos": (c.context, c.d_model),
              "wout": (c.d_model, c.vocab)}
    for i in range(c.n_layers):
        shapes.update({f"l{i}.{m}": (c.d_model, c.d_model) for m in ("wq", "wk", "wv", "wo")})
        shapes.update({f"l{i}.w1": (c.d_model, c.d_ff), f"l{i}.w2": (c.d_ff, c.d_model)})
    for name, shape in shapes.items():
        assert w.q[name].shape == shape, name
        assert w.float[name].shape == shape, name
        assert w.q[name].min() >= -128 and w.q[name].max() <= 127, name
    for name, s in w.w_scale.items():
        # int8 weight * scale is the float weight within half a step (per-tensor scales)
        assert np.abs(w.q[name] * s - w.float[name]).max() <= s / 2 + 1e-9, name
        assert np.abs(w.q[name]).max() == 127, name
    assert all(s > 0 for s in w.act.values())
    w.int_consts()          # every scale gives valid kernel constants


def test_float_model_matches_torch(w):
    """The numpy float model reproduces the training script's torch logits."""
    toks, want = w.check["tokens"], w.check["logits"]
    for t, lg in zip(toks, want):
        got = float_forward(w, t)
        np.testing.assert_allclose(got, lg, atol=2e-3 * np.abs(lg).max())


def test_sat_add8_is_saturating_add():
    a, b = np.meshgrid(np.arange(-128, 128), np.arange(-128, 128))
    np.testing.assert_array_equal(sat_add8(a, b), np.clip(a + b, -128, 127))
    # the chip's int8 ADD alone wraps around: the composition is needed
    assert vxm_ops.binary_op("ADD", 100, 100, 0) == -56


def test_requant_params_range():
    m, s = requant_params(0.01, "x")
    assert abs(m / 2.0 ** (31 + s) - 0.01) < 1e-9 and 2 ** 30 <= m < 2 ** 31
    with pytest.raises(ValueError, match="wq.*outside"):
        requant_params(1.5, "wq")


def test_bad_input_is_named(w):
    with pytest.raises(ValueError, match="context"):
        w.embed([1] * 10, start=w.cfg.context - 5)
    with pytest.raises(ValueError, match="token ids"):
        w.embed([w.cfg.vocab])
    with pytest.raises(ValueError, match="vocabulary"):
        Tokenizer().encode("12a")
    with pytest.raises(ValueError, match="one position"):
        argmax_token(np.zeros((2, 3)))


def test_int_decode_equals_full_sequence(w):
    """Prefill + decode steps with the int8 KV cache up to the end of the context == the integer
    model on the whole sequence, bit for bit: logits of every generated token (to the last position, past the
    answer's end: stop=False) and the cached K, V."""
    task = ReverseTask()
    prompt, _ = task.heldout()[0]
    n_new = w.cfg.context - len(prompt)
    assert n_new >= 32
    got, logits = int_generate(w, prompt, n_new, stop=False)
    assert len(got) == n_new
    seq = list(prompt) + got
    full_cache = KVCache()
    full = int_forward(w, seq[:-1], full_cache)
    np.testing.assert_array_equal(logits, full[len(prompt) - 1:])
    assert [argmax_token(r) for r in full[len(prompt) - 1:]] == got
    # the cache after prefill + decode steps holds the full run's rows
    _, cache = int_prefill(w, prompt)
    for t in got[:-1]:
        int_decode_step(w, t, cache)
    assert cache.length == len(seq) - 1
    for i in range(w.cfg.n_layers):
        np.testing.assert_array_equal(cache.k[i], full_cache.k[i])
        np.testing.assert_array_equal(cache.v[i], full_cache.v[i])
        assert cache.k[i].min() >= -128 and cache.k[i].max() <= 127


def test_int_intermediates_are_int8(w):
    trace = {}
    int_forward(w, ReverseTask().heldout(1)[0][0], trace=trace)
    for name, x in trace.items():
        assert x.min() >= -128 and x.max() <= 127, name


def test_float_decode_equals_full_sequence(w):
    prompt, answer = ReverseTask().heldout()[1]
    got, logits = float_generate(w, prompt, len(answer))
    full = float_forward(w, list(prompt) + got[:-1])
    np.testing.assert_allclose(logits, full[len(prompt) - 1:], rtol=1e-9, atol=1e-9)


def test_task_accuracy(w):
    spec = importlib.util.spec_from_file_location("decoder_accuracy", _BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    r = bench.evaluate(w, N_ACCURACY)
    f_acc, i_acc = r["float"][0], r["int8"][0]
    print(f"held-out accuracy on {N_ACCURACY} prompts: float {f_acc:.3f}, int8 {i_acc:.3f}")
    assert f_acc >= 0.90
    assert i_acc >= f_acc - 0.05


def test_kernels_on_base_reproduce_the_integer_model(w):
    """Three of the model's steps compiled for preset ``base`` and run on the reference model
    of the chip give the integer model's intermediates bit for bit: RMSNorm of the embedding,
    the FFN up-projection with requantize + ReLU, and one decode step's attention (4 heads, one
    query against the int8 K/V cache)."""
    P, a, c = preset("base"), w.act, w.int_consts()
    prompt, answer = ReverseTask().heldout()[0]
    seq = prompt + answer[:-1]
    tr, cache = {}, KVCache()
    int_forward(w, seq, cache, trace=tr)
    n, d, dh = len(seq), w.cfg.d_model, w.cfg.head_dim
    with Device.open("model", P) as dev:
        pkg = compile_rmsnorm(P, n, d, gamma=w.float["l0.g1"], eps=RMS_EPS, in_scale=a["res"],
                              out_scale=a["l0.n1"])
        dev.load(pkg)
        dev.write_inputs({"X": tr["x0"]})
        assert dev.run() == pkg.predicted_cycles
        np.testing.assert_array_equal(dev.read_outputs()["Y"], tr["l0.n1"])

        pkg = compile_matmul(P, n, d, w.cfg.d_ff, requantize=c.layers[0].rq_ff1, relu=True)
        dev.load(pkg)
        dev.write_inputs({"A": tr["l0.n2"], "B": w.q["l0.w1"]})
        assert dev.run() == pkg.predicted_cycles
        np.testing.assert_array_equal(dev.read_outputs()["C"], tr["l0.u"])

        heads = w.cfg.n_heads
        pkg = compile_attention(P, 1, n, dh, heads=heads, causal=True,
                                scale=a["l1.q"] * a["l1.k"] / np.sqrt(dh))
        dev.load(pkg)
        ins = {}
        for h in range(heads):
            s = slice(h * dh, (h + 1) * dh)
            ins.update({f"Q{h}": tr["l1.q"][-1:, s], f"K{h}": cache.k[1][:, s],
                        f"V{h}": cache.v[1][:, s]})
        dev.write_inputs(ins)
        assert dev.run() == pkg.predicted_cycles
        out = dev.read_outputs()
        got = np.concatenate([out[f"O{h}"] for h in range(heads)], axis=1)
        np.testing.assert_array_equal(got, tr["l1.o"][-1:])
