"""Transformer blocks from the graph API (firmware/graph) compiled into ONE program: the MLP block
of a MiniLM layer (linear + int32 bias -> int16, GELU -> int8, linear + bias -> int32, residual
add with the block input, saturated to int16), run on the reference model and the Verilator RTL
of preset ``base`` (the only preset with the four MEM slices per side the int32 VXM operands
need), equal to the graph's integer reference (verification/graph_ref.py, which evaluates these
ops with verification/models/minilm_int.py) in every element, measured == predicted cycles;
the new builder ops' errors name the node."""

import numpy as np
import pytest

from openlpu.firmware.graph import Graph, GraphCompileError, GraphError, compile_graph
from openlpu.host.device import Device
from openlpu.params import preset
from openlpu.verification.graph_blocks import (DM, HEADS, SX, L, attention_block,
                                               mlp_block)
from openlpu.verification.graph_ref import evaluate, evaluate_plan, run_graph


def _run(backend, g, inputs):
    p = preset("base")
    pkg = compile_graph(g, p)
    assert [t.name for t in pkg.inputs] == g.inputs
    assert [t.name for t in pkg.outputs] == g.outputs
    assert [k["name"] for k in pkg.meta["kernels"]] == ["fc1", "gelu", "fc2", "res"]
    with Device.open(backend, p) as dev:
        cycles, out = dev.run_package(pkg, inputs)
    assert cycles == pkg.predicted_cycles
    return pkg, out


@pytest.mark.parametrize("backend", ["model", "verilator"])
def test_mlp_block(backend):
    g, inputs = mlp_block(seed=0)
    want = run_graph(g, inputs)["y"]
    vals = evaluate(g, inputs)
    # the data exercise every stage: spread, and fc1 / the residual partly saturated
    for v in ("fc1.rescale.out", "gelu.out", "fc2.rescale.out", "y"):
        assert np.unique(vals[v]).size > 40, v
    assert np.mean(np.abs(want) == 32767) < 0.3
    _, out = _run(backend, g, inputs)
    np.testing.assert_array_equal(out["y"], want)


def test_mlp_block_edges_and_passes():
    g, inputs = mlp_block(seed=3, edge=True)
    want = run_graph(g, inputs)["y"]
    h = evaluate(g, inputs)["fc1.rescale.out"]
    assert (h == 32767).any() and (h == -32768).any()      # int16 saturation of fc1
    # every pass's representation agrees with the reference
    for stop in ("import", "tidy", "quantize"):
        np.testing.assert_array_equal(run_graph(compile_graph(g, preset("base"), stop), inputs)
                                      ["y"], want, err_msg=stop)
    plan = compile_graph(g, preset("base"), "lower")
    assert [k.kind for k in plan.kernels] == ["linear", "gelu", "linear", "residual"]
    np.testing.assert_array_equal(evaluate_plan(plan, inputs)["y"], want)
    _, out = _run("model", g, inputs)
    np.testing.assert_array_equal(out["y"], want)


def test_mlp_block_reference_is_minilm_int():
    """graph_ref's values are minilm_int's functions on the Rescale / GeluQuant the quantize
    pass chose (an independent re-evaluation with those functions)."""
    from openlpu.host.models.minilm_quant import Rescale
    from openlpu.verification.models.minilm_int import gelu_int, rescale, residual_int
    from openlpu.firmware.graph.passes import node_gelu_quant
    g, inputs = mlp_block(seed=5)
    q = compile_graph(g, preset("base"), "quantize")
    n = {x.name: x for x in q.nodes}
    c = {v.name: v.data for v in q.values.values() if v.is_const}
    h = rescale(inputs["x8"] @ c["W1"] + c["b1"],
                Rescale(np.asarray(n["fc1"].attrs["mult"]), n["fc1"].attrs["shift"], 1))
    a = gelu_int(h, node_gelu_quant(q, n["gelu"]))
    y = rescale(a @ c["W2"] + c["b2"],
                Rescale(np.asarray(n["fc2"].attrs["mult"]), n["fc2"].attrs["shift"], 2))
    r = residual_int(y, inputs["x16"], Rescale(np.asarray([n["res"].attrs["mult"]]),
                                              n["res"].attrs["shift"], 2))
    np.testing.assert_array_equal(run_graph(g, inputs)["y"], r)
    # and the float meaning: fc1's int16 output is x @ W1 + b1 in units of its out_scale
    s = g.values["fc1.rescale.out"].quant.scale
    real = (inputs["x8"] * SX) @ (c["W1"] * 0.01) + c["b1"] * SX * 0.01
    assert np.max(np.abs(np.clip(real / s, -32768, 32767) - h)) <= 1


def test_block_errors():
    g = Graph("e")
    x8 = g.input("x", (8, 64))
    w = g.const("W", np.ones((64, 64), int))
    with pytest.raises(GraphError, match="'fc' .*relu is not available"):
        g.linear(x8, w, g.const("b", np.zeros(64, int), "int32"), out_scale=1.0, relu=True,
                 name="fc")
    with pytest.raises(GraphError, match="'gg'.*needs int16"):
        g.gelu(x8, 1.0, name="gg")
    with pytest.raises(GraphError, match="'gg'.*out_dtype must be int8 or int16"):
        g.gelu(g.input("h", (8, 64), "int16"), 1.0, out_dtype="int32", name="gg")
    y = g.linear(x8, w, out_scale=1.0, out_dtype="int32", name="fc2")
    with pytest.raises(GraphError, match="'rr'.*shapes"):
        g.residual(y, g.input("s", (8, 32), "int16"), name="rr")
    with pytest.raises(GraphError, match="'rr'.*needs int16"):
        g.residual(y, x8, name="rr")
    with pytest.raises(GraphError, match="'rs'.*dtype 'int4'"):
        g.rescale(y, 1.0, dtype="int4", name="rs")
    # a rescale that is not a matmul's epilogue has no kernel
    g2 = Graph("e2")
    a = g2.input("a", (8, 64), "int32", scale=0.001)
    g2.output(g2.rescale(a, 1.0, name="lone"))
    with pytest.raises(GraphCompileError, match="'lone'.*must follow a matmul"):
        compile_graph(g2, preset("base"))
    # an out_scale the int8 rescale cannot reach names the node
    g3 = Graph("e3")
    x = g3.input("x", (8, 64), scale=1.0)
    g3.output(g3.linear(x, g3.const("W", np.ones((64, 64), int)), out_scale=1e-6,
                        out_dtype="int8", name="big", bias=g3.const("b", np.zeros(64, int),
                                                                    "int32")))
    with pytest.raises(GraphError, match="'big'"):
        compile_graph(g3, preset("base"))
    # the int32 VXM operands need four MEM slices per side: preset mini has two
    g4, _ = mlp_block()
    with pytest.raises(GraphCompileError, match="'fc1'.*4 MEM slices"):
        compile_graph(g4, preset("mini"))


def _run_attention(backend, g, inputs):
    p = preset("base")
    pkg = compile_graph(g, p)
    assert [k["name"] for k in pkg.meta["kernels"]] == ["q", "k", "v", "attn"]
    with Device.open(backend, p) as dev:
        cycles, out = dev.run_package(pkg, inputs)
    assert cycles == pkg.predicted_cycles
    return out


@pytest.mark.parametrize("backend", ["model", "verilator"])
def test_attention_block_padding_mask(backend):
    g, inputs = attention_block(seed=0)
    want = run_graph(g, inputs)["o"]
    assert np.unique(want).size > 100 and np.mean(np.abs(want) >= 127) < 0.2
    out = _run_attention(backend, g, inputs)
    np.testing.assert_array_equal(out["o"], want)


def test_attention_block_reference_per_head():
    """The graph reference is minilm_int's attention of each head's columns (split and merged
    by columns), and the padding keys do not matter: the output equals that of the sequence
    with other values in the padded rows of k and v."""
    from openlpu.firmware.attention import attention_consts
    from openlpu.verification.models.minilm_int import attention_head_int
    g, inputs = attention_block(seed=1)
    vals = evaluate(g, inputs)
    q, k, v = (vals[f"{n}.requantize.out"] for n in "qkv")
    c = attention_consts(g.nodes[-1].attrs["scale"])
    mask = np.array([1] * (L - 16) + [0] * 16)
    d = DM // HEADS
    heads = [attention_head_int(q[:, h * d:(h + 1) * d], k[:, h * d:(h + 1) * d],
                                v[:, h * d:(h + 1) * d], c, mask)["O"] for h in range(HEADS)]
    np.testing.assert_array_equal(vals["o"], np.concatenate(heads, axis=1))
    # real keys only: the same as attention over the unpadded keys
    for h in range(HEADS):
        sl = slice(h * d, (h + 1) * d)
        short = attention_head_int(q[:, sl], k[:L - 16, sl], v[:L - 16, sl], c,
                                   np.ones(L - 16))["O"]
        np.testing.assert_array_equal(heads[h], short)


def test_attention_block_causal_and_edges():
    for causal, edge in ((True, False), (False, True)):
        g, inputs = attention_block(seed=2, causal=causal, edge=edge)
        want = run_graph(g, inputs)["o"]
        for stop in ("tidy", "quantize"):
            np.testing.assert_array_equal(run_graph(compile_graph(g, preset("base"), stop),
                                                    inputs)["o"], want)
        out = _run_attention("model", g, inputs)
        np.testing.assert_array_equal(out["o"], want, err_msg=f"causal={causal}")


def test_attention_errors():
    g = Graph("a")
    q = g.input("q", (16, 128))
    k = g.input("k", (16, 128))
    with pytest.raises(GraphError, match="'at'.*heads=3 does not divide"):
        g.attention(q, k, k, heads=3, name="at")
    with pytest.raises(GraphError, match="'at'.*key_mask must be 16 values"):
        g.attention(q, k, k, heads=2, key_mask=[1] * 15, name="at")
    with pytest.raises(GraphError, match="'at'.*causal together with a key_mask"):
        g.attention(q, k, k, heads=2, causal=True, key_mask=[1] * 16, name="at")
    with pytest.raises(GraphError, match="'at'.*share their columns"):
        g.attention(q, k, g.input("v", (16, 64)), heads=2, name="at")
    # heads of dimension 32 (< VL) are not split in place
    g2 = Graph("b")
    vs = [g2.input(n, (16, 128)) for n in "qkv"]
    g2.output(g2.attention(*vs, heads=4, name="at"))
    with pytest.raises(GraphCompileError, match="'at'.*head_dim == VL"):
        compile_graph(g2, preset("base"))
    # a computed v for fewer keys than VL: its padding lanes would not be zero
    g3 = Graph("c")
    x = g3.input("x", (16, 128), scale=SX)
    qkv = [g3.linear(x, g3.const(f"W{n}", np.ones((128, 128), int), scale=0.01),
                     out_scale=1.0, name=n) for n in "qkv"]
    g3.output(g3.attention(*qkv, heads=2, name="at"))
    with pytest.raises(GraphCompileError, match="'at'.*16 keys, not a multiple of VL"):
        compile_graph(g3, preset("base"))
    # a v read transposed must come from a linear without bias
    g4 = Graph("d")
    x = g4.input("x", (64, 128), scale=SX)
    q, k = (g4.input(n, (64, 128)) for n in "qk")
    v = g4.linear(x, g4.const("W", np.ones((128, 128), int), scale=0.01),
                  g4.const("b", np.zeros(128, int), "int32"), out_scale=1.0, name="vb")
    g4.output(g4.attention(q, k, v, heads=2, name="at"))
    with pytest.raises(GraphCompileError, match="'at'.*reads v transposed"):
        compile_graph(g4, preset("base"))


@pytest.mark.parametrize("chip,shape,backend", [("mini", (8, 16, 16), "model"),
                                                ("base", (64, 128, 384), "model"),
                                                ("base", (64, 128, 384), "verilator")])
def test_linear_rmsnorm(chip, shape, backend):
    """``rmsnorm(linear(x))`` in one program: the linear computed transposed (the RMSNorm reads
    its input column-wise from fixed words), and an RMSNorm of a graph input."""
    M, K, N = shape
    rng = np.random.default_rng(7)
    X, W = rng.integers(-128, 128, (M, K)), rng.integers(-128, 128, (K, N))
    X[0] = 127
    gamma = rng.uniform(0.5, 1.5, N)
    g = Graph("linear_rmsnorm")
    x = g.input("x", (M, K), scale=SX)
    h = g.linear(x, g.const("W", W, scale=0.01), out_scale=float(SX * 0.01 * (X @ W).std() / 40),
                 name="fc")
    g.output(g.rmsnorm(h, gamma, eps=1e-5, out_scale=3 / 127, name="norm"), "y")
    p = preset(chip)
    pkg = compile_graph(g, p)
    assert [k["kind"] for k in pkg.meta["kernels"]] == ["matmul", "rmsnorm"]
    want = run_graph(g, {"x": X})["y"]
    assert np.unique(want).size > 50 and np.mean(np.abs(want) >= 127) < 0.1
    with Device.open(backend, p) as dev:
        cycles, out = dev.run_package(pkg, {"x": X})
    assert cycles == pkg.predicted_cycles
    np.testing.assert_array_equal(out["y"], want)
    # of a graph input
    g2 = Graph("rmsnorm")
    g2.output(g2.rmsnorm(g2.input("x", (M, K), scale=SX), gamma[:K], eps=1e-5,
                         out_scale=3 / 127), "y")
    pkg = compile_graph(g2, p)
    with Device.open(backend, p) as dev:
        cycles, out = dev.run_package(pkg, {"x": X})
    assert cycles == pkg.predicted_cycles
    np.testing.assert_array_equal(out["y"], run_graph(g2, {"x": X})["y"])


def test_rmsnorm_errors():
    g = Graph("e")
    x = g.input("x", (8, 16))
    with pytest.raises(GraphError, match="'n'.*gamma must be 16 finite values"):
        g.rmsnorm(x, np.ones(15), eps=1e-5, out_scale=0.01, name="n")
    with pytest.raises(GraphError, match="'n'.*eps must be a positive number"):
        g.rmsnorm(x, np.ones(16), eps=0, out_scale=0.01, name="n")
    a = g.add(x, x, name="sum")
    g.output(g.rmsnorm(a, np.ones(16), eps=1e-5, out_scale=0.01, name="n"))
    with pytest.raises(GraphCompileError, match="'n' \\(rmsnorm\\): reads its input column-wise"):
        compile_graph(g, preset("mini"))


def test_linear_per_channel_and_bias_requantize():
    """Per-channel weight scales (one rescale multiplier per output channel, one shift) into
    int8, and a hand-built matmul -> bias_add -> requantize chain (the requantize's (m, s) as
    the rescale (m, 31 + s)), chained in one program on base."""
    rng = np.random.default_rng(11)
    X, W1, W2 = (rng.integers(-128, 128, s) for s in ((8, 64), (64, 128), (128, 64)))
    b2 = rng.integers(-30000, 30000, 64)
    ws = rng.uniform(0.002, 0.02, 128)
    s_h = float(SX * (np.abs(X @ W1) * ws).mean() / 30)

    def build(s_y):
        g = Graph("per_channel")
        x = g.input("x", (8, 64), scale=SX)
        h = g.linear(x, g.const("W1", W1, scale=ws, axis=1), out_scale=s_h, name="fc1")
        acc = g.bias_add(g.matmul(h, g.const("W2", W2, scale=0.01), name="mm"),
                         g.const("b2", b2, "int32"), name="bias")
        g.output(g.requantize(acc, out_scale=s_y, name="rq"), "y")
        return g
    acc = evaluate(build(1.0), {"x": X})["bias.out"]
    g = build(float(s_h * 0.01 * acc.std() / 40))
    q = compile_graph(g, preset("base"), "quantize")
    m = q.nodes[0].attrs["mult"]
    assert len(set(m)) > 100                          # the multipliers differ per channel
    plan = compile_graph(g, preset("base"), "lower")
    assert [k.kind for k in plan.kernels] == ["linear", "linear"]
    vals = evaluate(g, {"x": X})
    assert np.unique(vals["fc1.rescale.out"]).size > 50 and np.unique(vals["y"]).size > 50
    pkg = compile_graph(g, preset("base"))
    with Device.open("model", preset("base")) as dev:
        cycles, out = dev.run_package(pkg, {"x": X})
    assert cycles == pkg.predicted_cycles
    np.testing.assert_array_equal(out["y"], vals["y"])
