"""The graph compiler (firmware/graph): graphs of several kernels compiled into ONE program, run
on the reference model, bit-exact against the graph's integer reference
(verification/graph_ref.py) with measured == predicted cycles; every pass checked against the
reference, dumped and stoppable; deterministic bytes; errors naming the node."""

import json

import numpy as np
import pytest

from openlpu.firmware.graph import (PASS_NAMES, Graph, GraphCompileError, GraphError, KernelPlan,
                                    Scheduled, compile_graph, multiplier_for)
from openlpu.firmware.package import Package
from openlpu.host.backends.model import ModelBackend
from openlpu.host.device import Device
from openlpu.params import preset
from openlpu.verification.graph_ref import evaluate_plan, run_graph

# (M, K, H, N) per chip: the mini chip's MEM holds 64 words a bank
SHAPES = {"mini": (8, 16, 16, 8), "base": (64, 128, 128, 64)}


def _w(rng, *shape):
    return rng.integers(-128, 128, shape)


def _scale_for(x, w, acc_scale):
    """An output scale putting the int32 accumulators' spread at about 32 int8 units."""
    acc = np.asarray(x, dtype=np.float64) @ w
    return float(acc_scale * max(acc.std(), 1.0) / 32)


def mlp(chip, seed=1):
    """linear + requantize + relu -> linear + requantize; returns (graph, inputs)."""
    M, K, H, N = SHAPES[chip]
    rng = np.random.default_rng(seed)
    X, W1, W2 = _w(rng, M, K), _w(rng, K, H), _w(rng, H, N)
    g = Graph("mlp")
    x = g.input("x", (M, K), scale=0.05)
    w1 = g.const("W1", W1, scale=0.01)
    w2 = g.const("W2", W2, scale=0.02)
    s1 = _scale_for(X, W1, 0.05 * 0.01)
    h = g.linear(x, w1, out_scale=s1, relu=True, name="fc1")
    H_ = np.maximum(np.clip(np.round(X @ W1 * 0.05 * 0.01 / s1), -128, 127), 0)
    y = g.linear(h, w2, out_scale=_scale_for(H_, W2, s1 * 0.02), name="fc2")
    g.output(y, "y")
    return g, {"x": X}


def residual(chip, seed=2):
    """h = relu(linear(x)); y = linear(h) + h2 where h2 = linear(h): a residual add of two
    kernels' outputs (both in MEM), and the first kernel's output read by two kernels."""
    M, K, H, N = SHAPES[chip]
    rng = np.random.default_rng(seed)
    X, W1, W2, W3 = _w(rng, M, K), _w(rng, K, H), _w(rng, H, N), _w(rng, H, N)
    g = Graph("residual")
    x = g.input("x", (M, K), scale=0.05)
    s1 = _scale_for(X, W1, 0.05 * 0.01)
    h = g.linear(x, g.const("W1", W1, scale=0.01), out_scale=s1, relu=True, name="fc1")
    H_ = np.maximum(np.clip(np.round(X @ W1 * 0.05 * 0.01 / s1), -128, 127), 0)
    s2 = 2 * _scale_for(H_, W2, s1 * 0.02)
    a = g.linear(h, g.const("W2", W2, scale=0.02), out_scale=s2, name="fc2")
    b = g.linear(h, g.const("W3", W3, scale=0.02), out_scale=s2, name="fc3")
    g.output(g.add(a, b, name="res"), "y")
    return g, {"x": X}


def linear_softmax(chip, seed=3):
    """softmax(linear(x)): attention-score-like rows."""
    M, K, _, N = SHAPES[chip]
    rng = np.random.default_rng(seed)
    X, W = _w(rng, M, K), _w(rng, K, N)
    g = Graph("linear_softmax")
    x = g.input("x", (M, K), scale=0.05)
    s = g.linear(x, g.const("W", W, scale=0.01), out_scale=_scale_for(X, W, 5e-4) / 2,
                 name="scores")
    g.output(g.softmax(s, name="probs"), "p")
    return g, {"x": X}


def deep_residual(chip, seed=4):
    """``h = h + relu(linear(h))`` repeated (6 blocks on mini, 3 on base): intermediates freed
    and their words reused; constants and multipliers never in words written in the run."""
    M, K = SHAPES[chip][:2]
    rng = np.random.default_rng(seed)
    g = Graph("deep_residual")
    h = g.input("x", (M, K), scale=0.05)
    for i in range(6 if chip == "mini" else 3):
        # the residual's scale: an int8 spread of about 8 per block
        f = g.linear(h, g.const(f"W{i}", _w(rng, K, K), scale=1 / (np.sqrt(K) * 200)),
                     out_scale=0.05, relu=True, name=f"fc{i}")
        h = g.add(h, f, name=f"res{i}")
    g.output(h, "y")
    return g, {"x": rng.integers(-40, 40, (M, K))}


def scores_softmax(chip, seed=5):
    """softmax(q @ k^T) with q, k = linear(x): two activations multiplied (k's rows read as
    B^T's words), the product computed transposed for the softmax's column-wise input."""
    M, K = SHAPES[chip][:2]
    rng = np.random.default_rng(seed)
    X = _w(rng, M, K)
    g = Graph("scores_softmax")
    x = g.input("x", (M, K), scale=0.05)
    sq = 0.05 * 0.01 * np.sqrt(K) * 74 / 30
    q = g.linear(x, g.const("Wq", _w(rng, K, K), scale=0.01), out_scale=sq, name="q")
    k = g.linear(x, g.const("Wk", _w(rng, K, K), scale=0.01), out_scale=sq, name="k")
    s = g.linear(q, k, transpose_b=True, out_scale=sq * sq * np.sqrt(K) * 30, name="qk")
    g.output(g.softmax(s, name="p"), "p")
    return g, {"x": X}


GRAPHS = {"mlp": mlp, "residual": residual, "linear_softmax": linear_softmax,
          "deep_residual": deep_residual, "scores_softmax": scores_softmax}


@pytest.mark.parametrize("chip", ["mini", "base"])
@pytest.mark.parametrize("which", list(GRAPHS))
def test_graph_one_program_bit_exact_on_the_model(chip, which):
    p = preset(chip)
    g, inputs = GRAPHS[which](chip)
    pkg = compile_graph(g, p)
    # one program with the graph's inputs and outputs only (intermediates stay in MEM)
    assert [t.name for t in pkg.inputs] == g.inputs
    assert [t.name for t in pkg.outputs] == g.outputs
    kernels = pkg.meta["kernels"]
    assert len(kernels) == len(compile_graph(g, p, stop_after="lower").kernels) >= 2
    want = run_graph(g, inputs)                 # the reference of the graph as built
    dev = Device(ModelBackend(p))
    cycles, out = dev.run_package(pkg, inputs)
    assert cycles == pkg.predicted_cycles
    for name, w in want.items():
        np.testing.assert_array_equal(out[name], w, err_msg=f"{which} on {chip}: {name}")
        # the test data exercise the arithmetic: neither all zero nor all saturated
        assert np.unique(w).size > 4 and np.mean(np.abs(w) >= 127) < 0.5, name


@pytest.mark.parametrize("which", list(GRAPHS))
def test_every_pass_agrees_with_the_reference(which):
    p = preset("mini")
    g, inputs = GRAPHS[which]("mini")
    want = run_graph(g, inputs)
    for name in PASS_NAMES[:3]:
        rep = compile_graph(g, p, stop_after=name)
        assert isinstance(rep, Graph), name
        got = run_graph(rep, inputs)
        for k, w in want.items():
            np.testing.assert_array_equal(got[k], w, err_msg=f"after {name}: {k}")
    for name in ("lower", "allocate"):
        plan = compile_graph(g, p, stop_after=name)
        assert isinstance(plan, KernelPlan)
        got = evaluate_plan(plan, inputs)
        for k, w in want.items():
            np.testing.assert_array_equal(got[k], w, err_msg=f"after {name}: {k}")
    assert isinstance(compile_graph(g, p, stop_after="schedule"), Scheduled)
    assert isinstance(compile_graph(g, p, stop_after="emit"), Package)


def test_tidy_fuses_and_drops_dead_nodes():
    p = preset("mini")
    g, _ = mlp("mini")
    g.relu(g.values["x"], name="dead")          # nothing depends on it
    tidy = compile_graph(g, p, stop_after="tidy")
    assert [n.op for n in tidy.nodes] == ["qlinear", "qlinear"]
    assert tidy.nodes[0].attrs["relu"] and not tidy.nodes[1].attrs["relu"]
    assert "dead" not in {n.name for n in tidy.nodes}
    q = compile_graph(g, p, stop_after="quantize")
    for n in q.nodes:
        m, s = n.attrs["multiplier"], n.attrs["shift"]
        factor = float(n.attrs["acc_scale"]) / n.attrs["out_scale"]
        assert 0 <= s <= 31 and (1 << 30) <= m < (1 << 31)
        assert m / 2.0 ** (31 + s) == pytest.approx(factor, rel=1e-6)


def test_lifetimes_free_intermediates_and_their_words_are_reused():
    p = preset("mini")
    g, _ = residual("mini")
    plan = compile_graph(g, p, stop_after="allocate")
    names = [k.name for k in plan.kernels]
    h = "fc1.relu.out"
    assert plan.lifetimes[h] == [names.index("fc1"), names.index("fc3")]
    assert h in plan.frees[names.index("fc3")]
    assert not any(v in ("x", "y") or v.startswith("W") for vs in plan.frees.values()
                   for v in vs)
    s = compile_graph(g, p, stop_after="schedule")
    words = {n: {(sl, bk, w) for w_ in range(d.words(p.vl)) for sl, bk, w in [d.locate(0, w_)]}
             for n, d in s.layouts.items()}
    # the output y takes words the intermediate h held (freed after its last reader)
    assert words["y"] & words[h]


def test_deterministic_bytes():
    p = preset("mini")
    a = compile_graph(residual("mini")[0], p).to_bytes()
    b = compile_graph(residual("mini")[0], p).to_bytes()
    assert a == b
    assert a != compile_graph(residual("mini", seed=5)[0], p).to_bytes()   # weights differ


def test_dump_each_pass(tmp_path):
    p = preset("mini")
    g, _ = linear_softmax("mini")
    seen = []
    compile_graph(g, p, dump=lambda name, text: seen.append((name, text)))
    assert [n for n, _ in seen] == list(PASS_NAMES)
    assert "qlinear(x, W)" in dict(seen)["tidy"]
    assert "softmax(" in dict(seen)["lower"]
    compile_graph(g, p, dump=tmp_path, stop_after="schedule")
    files = sorted(f.name for f in tmp_path.iterdir())
    want = [f"{i:02d}_{n}.{ext}" for i, n in enumerate(PASS_NAMES[:6]) for ext in ("json", "txt")]
    assert files == sorted(want)
    sched = json.loads((tmp_path / "05_schedule.json").read_text())
    assert [k["name"] for k in sched["kernels"]] == ["scores", "probs"]
    with pytest.raises(ValueError, match="not a pass"):
        compile_graph(g, p, stop_after="optimize")


def test_errors_name_the_node():
    g = Graph("bad")
    x = g.input("x", (8, 16))
    w = g.const("W", np.zeros((12, 8), dtype=np.int64))
    with pytest.raises(GraphError, match=r"node 'fc.matmul'.*inner dimensions 16 != 12"):
        g.linear(x, w, out_scale=1.0, name="fc")
    y = g.input("y", (8, 8), scale=2.0)
    with pytest.raises(GraphError, match=r"node 'sum'.*share one scale"):
        g.add(y, g.input("z", (8, 8)), name="sum")
    with pytest.raises(GraphError, match="int8 range"):
        g.const("big", np.full((2, 2), 300))
    # a requantize that would scale up
    g2 = Graph("up")
    a = g2.input("a", (8, 8), scale=1.0)
    g2.output(g2.linear(a, g2.const("W", np.ones((8, 8), dtype=np.int64)), out_scale=0.5,
                        name="grow"))
    with pytest.raises(GraphError, match=r"node 'grow'.*not below 1"):
        compile_graph(g2, preset("mini"))
    # activations @ activations: no kernel
    g3 = Graph("aa")
    a, b = g3.input("a", (8, 8)), g3.input("b", (8, 8))
    g3.output(g3.linear(a, b, out_scale=1e3, name="qk"))
    with pytest.raises(GraphCompileError, match=r"node 'qk'.*must be a constant"):
        compile_graph(g3, preset("mini"))
    # weights that do not fit the mini chip's MEM: the allocator's message, with the node
    g4 = Graph("huge")
    a = g4.input("a", (8, 64), scale=0.05)
    g4.output(g4.linear(a, g4.const("W", np.ones((64, 512), dtype=np.int64), scale=0.01),
                        out_scale=10.0, name="wide"))
    with pytest.raises(GraphCompileError, match=r"node 'wide' \(matmul\).*needs .* words"):
        compile_graph(g4, preset("mini"))
    # a softmax of an intermediate stored row-wise
    g5 = Graph("sm")
    a, b = g5.input("a", (8, 8)), g5.input("b", (8, 8))
    g5.output(g5.softmax(g5.add(a, b, name="s"), name="p"))
    with pytest.raises(GraphCompileError, match=r"node 'p' \(softmax\).*row-wise"):
        compile_graph(g5, preset("mini"))
    with pytest.raises(GraphError, match="no outputs"):
        compile_graph(Graph("empty"), preset("mini"))


def test_multiplier_for():
    for f in (0.9, 0.5, 1e-3, 3.7e-7):
        m, s = multiplier_for(f)
        assert m / 2.0 ** (31 + s) == pytest.approx(f, rel=1e-8)
    with pytest.raises(ValueError, match="not below 1"):
        multiplier_for(1.5)


def test_emitters_read_given_layouts_and_reject_bad_ones():
    """emit_matmul / emit_elementwise with ``inputs=``: the next kernel reads the previous
    one's output where it is (bit-exact on the model); a layout of the wrong shape or dtype
    raises naming the tensor."""
    from openlpu.firmware.chipstate import ChipState
    from openlpu.firmware.compiler import emit_elementwise, emit_matmul
    from openlpu.firmware.schedule import CompileError
    from openlpu.verification.matmul_check import matmul_reference
    p = preset("mini")
    rq = (1 << 30, 6)
    state = ChipState(p, "chain")
    e1 = emit_matmul(state, 8, 16, 16, requantize=rq, names=("A", "B1", "H"))
    e2 = emit_matmul(state, 8, 16, 8, requantize=rq, earliest=e1.end, names=("H", "B2", "C"),
                     inputs=(e1.outputs[0], None))
    assert e2.inputs[0] is e1.outputs[0]
    e3 = emit_elementwise(state, "RELU", 8, 8, earliest=e2.end, names=("C", "-", "Y"),
                          inputs=(e2.outputs[0],))
    pkg = state.package(name="chain", inputs=e1.inputs + e2.inputs[1:],
                        outputs=e3.outputs)
    rng = np.random.default_rng(0)
    A, B1, B2 = _w(rng, 8, 16), _w(rng, 16, 16), _w(rng, 16, 8)
    cycles, out = Device(ModelBackend(p)).run_package(pkg, {"A": A, "B1": B1, "B2": B2})
    assert cycles == pkg.predicted_cycles
    H = matmul_reference(A, B1, rq)
    np.testing.assert_array_equal(out["Y"], np.maximum(matmul_reference(H, B2, rq), 0))
    with pytest.raises(CompileError, match=r"tensor 'H' is int8 \(8, 16\).*reads int8 \(8, 32\)"):
        emit_matmul(state, 8, 32, 8, inputs=(e1.outputs[0], None))
    with pytest.raises(CompileError, match="stored transposed"):
        emit_matmul(state, 8, 16, 8, inputs=(e1.outputs[0], e1.outputs[0]))
    with pytest.raises(CompileError, match="unary"):
        emit_elementwise(state, "RELU", 8, 16, inputs=(e1.outputs[0], e1.outputs[0]))
    with pytest.raises(CompileError, match="int32"):
        wide = ChipState(p)
        c = emit_matmul(wide, 8, 8, 8).outputs[0]
        emit_elementwise(wide, "ADD", 8, 8, inputs=(c, None))
