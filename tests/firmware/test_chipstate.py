"""The chip state (firmware/chipstate.py): two kernels in one program on the reference model,
bit-exact against numpy with measured == predicted cycles; claimed resources raise; the timing
rule against the ISA's latencies."""

import numpy as np
import pytest

from openlpu import isa
from openlpu.firmware.chipstate import ChipState, lead
from openlpu.firmware.compiler import emit_elementwise, emit_matmul
from openlpu.firmware.schedule import CompileError
from openlpu.host.backends.model import ModelBackend
from openlpu.host.device import Device
from openlpu.isa import Dir
from openlpu.params import preset
from openlpu.verification.matmul_check import matmul_operands, matmul_reference

_RQ = (-(3 << 28), 6)


def _two_matmuls(p, first, second, gap=0):
    """Emit ``first`` then ``second`` ((M, K, N, kw) each) on one state, the second from the
    first's end + ``gap``; returns (package, the two Emitted)."""
    state = ChipState(p, f"two matmuls on preset {p.name!r}")
    M, K, N, kw = first
    e1 = emit_matmul(state, M, K, N, names=("A1", "B1", "C1"), **kw)
    M, K, N, kw = second
    e2 = emit_matmul(state, M, K, N, earliest=e1.end + gap, names=("A2", "B2", "C2"), **kw)
    pkg = state.package(name="two_matmuls", inputs=e1.inputs + e2.inputs,
                        outputs=e1.outputs + e2.outputs)
    return pkg, e1, e2


def _check_two_on_the_model(p, pkg, first, second, seed):
    """Run a two-matmul package on the model: cycles == predicted, C1 and C2 equal to numpy's
    in every element (operands seeded ``seed + 1`` and ``seed + 2``)."""
    inputs, want = {}, {}
    for i, (M, K, N, kw) in enumerate((first, second), 1):
        A, B = matmul_operands("random", M, K, N, seed + i)
        inputs.update({f"A{i}": A, f"B{i}": B})
        want[f"C{i}"] = matmul_reference(A, B, kw.get("requantize"), kw.get("relu", False))
    dev = Device(ModelBackend(p))
    dev.load(pkg)
    dev.write_inputs(inputs)
    assert dev.run() == pkg.predicted_cycles
    out = dev.read_outputs()
    for name, w in want.items():
        np.testing.assert_array_equal(out[name], w, err_msg=name)


@pytest.mark.parametrize("chip, first, second", [
    ("tiny", (8, 8, 8, {}), (13, 20, 11, {})),
    ("default", (64, 64, 64, {}), (32, 96, 40, {})),
    ("mini4", (8, 32, 40, {}), (24, 16, 16, {})),               # LWW, then striped LW
    ("mini", (9, 24, 8, {"requantize": _RQ, "relu": True}), (16, 16, 16, {"requantize": _RQ})),
    ("mini4", (16, 16, 16, {}), (8, 32, 16, {"requantize": _RQ, "relu": True})),
])
def test_two_matmuls_in_one_program_on_the_model(chip, first, second):
    p = preset(chip)
    pkg, e1, e2 = _two_matmuls(p, first, second)
    # the second kernel issues nothing before the first's end
    assert e2.end > e1.end
    names1 = {t.name for t in e1.inputs + e1.outputs}
    names2 = {t.name for t in e2.inputs + e2.outputs}
    assert names1 == {"A1", "B1", "C1"} and names2 == {"A2", "B2", "C2"}
    _check_two_on_the_model(p, pkg, first, second, seed=7)


def test_second_kernel_takes_free_mem_words():
    p = preset("default")
    pkg, e1, e2 = _two_matmuls(p, (64, 64, 64, {}), (64, 64, 64, {}))
    words = {}
    for t in pkg.inputs + pkg.outputs:
        for plane in range(len(t.layout)):
            for w in range(t.words(p.vl)):
                key = t.locate(plane, w)
                assert key not in words, f"{t.name} and {words[key]} share {key}"
                words[key] = t.name
    # the first keeps the single-bank placement, the second is striped around it
    assert not e1.outputs[0].striped and e2.outputs[0].striped


def test_predicted_cycles_grow_with_the_gap():
    p = preset("tiny")
    a, _, _ = _two_matmuls(p, (8, 8, 8, {}), (8, 8, 8, {}))
    b, _, _ = _two_matmuls(p, (8, 8, 8, {}), (8, 8, 8, {}), gap=10)
    assert b.predicted_cycles == a.predicted_cycles + 10


@pytest.mark.parametrize("chip, first, second", [
    ("tiny", (8, 8, 8, {}), (8, 8, 8, {})),
    ("mini4", (16, 16, 16, {}), (24, 16, 16, {})),
])
def test_a_second_matmul_overlapping_the_first_on_the_model(chip, first, second):
    """Emitted from cycle 0 on a state that holds the first matmul, the second starts where the
    weight buffers, accumulator rows, queues, streams and banks allow: before the first ends."""
    p = preset(chip)
    state = ChipState(p, "overlap")
    e1 = emit_matmul(state, *first[:3], names=("A1", "B1", "C1"))
    lw_first = max(t for t, *_ in state.claims("mxm_w weight buffer (loading)"))
    e2 = emit_matmul(state, *second[:3], earliest=0, names=("A2", "B2", "C2"))
    assert min(s for s, *_ in state.claims("mxm_w weight buffer (loading)")
               if s > lw_first) < e1.end
    pkg = state.package(name="overlap", inputs=e1.inputs + e2.inputs,
                        outputs=e1.outputs + e2.outputs)
    _check_two_on_the_model(p, pkg, first, second, seed=0)


def test_an_overlapping_kernel_that_needs_a_taken_slot_raises():
    p = preset("default")
    state = ChipState(p, "overlap")
    e1 = emit_matmul(state, 64, 64, 64, names=("A1", "B1", "C1"))
    before = state.sched.emit()
    with pytest.raises(CompileError, match=r"mem_w0.read: cycle \d+ already holds READ, "
                                           r"cannot place READ"):
        emit_matmul(state, 32, 96, 40, earliest=0, names=("A2", "B2", "C2"))
    # a kernel that raises leaves the state as it was
    assert state.sched.emit() == before and state.end == e1.end
    assert state.alloc.owner((p.slice("mem_w0").index, 0), 0) == "A1"
    assert emit_matmul(state, 32, 96, 40, earliest=e1.end, names=("A2", "B2", "C2")).end > e1.end


def test_elementwise_that_does_not_fit_next_to_a_matmul_raises():
    p = preset("mini")
    state = ChipState(p, "matmul then add")
    emit_matmul(state, 8, 8, 8)
    state.alloc.reserve("rest", (p.slice("mem_e0").index, 1), 8, p.mem_words - 8)
    with pytest.raises(CompileError, match=r"matmul then add: Y2 needs 1 words .* the largest "
                                           r"free run in bank 1 of mem_e0 is 0 words"):
        emit_elementwise(state, "ADD", 1, 8, names=("A2", "B2", "Y2"))


def test_elementwise_after_a_matmul_on_the_model():
    """The elementwise tensors take the words after the matmul's in the same banks."""
    p = preset("mini")
    state = ChipState(p, "matmul then relu")
    e1 = emit_matmul(state, 8, 16, 8)
    e2 = emit_elementwise(state, "RELU", 3, 8, earliest=e1.end, names=("X", "-", "Y"))
    assert e2.inputs[0].base > 0 and e2.outputs[0].base > 0
    pkg = state.package(name="mm_relu", inputs=e1.inputs + e2.inputs,
                        outputs=e1.outputs + e2.outputs)
    A, B = matmul_operands("random", 8, 16, 8, 3)
    X = (np.arange(-12, 12).reshape(3, 8) * 10).clip(-128, 127)
    dev = Device(ModelBackend(p))
    dev.load(pkg)
    dev.write_inputs({"A": A, "B": B, "X": X})
    assert dev.run() == pkg.predicted_cycles
    out = dev.read_outputs()
    np.testing.assert_array_equal(out["C"], matmul_reference(A, B))
    np.testing.assert_array_equal(out["Y"], np.maximum(X, 0))


def test_claims_raise_naming_resource_and_cycle():
    p = preset("tiny")
    st = ChipState(p, "claims")
    st.claim("mxm_w accumulator row 3", 10, 20, "first")
    st.claim("mxm_w accumulator row 3", 21, 30, "second")          # adjacent: fine
    st.claim("mxm_w accumulator row 4", 10, 20, "other row")
    with pytest.raises(CompileError, match=r"claims: mxm_w accumulator row 3 is taken in cycle "
                                           r"18 \(claimed 10\.\.20 by first\)"):
        st.claim("mxm_w accumulator row 3", 18, 19, "third")
    with pytest.raises(CompileError, match=r"is taken in cycle 10 \(claimed 10\.\.20 by first\), "
                                           r"cannot claim 0\.\.40"):
        st.claim("mxm_w accumulator row 3", 0, 40)
    assert st.free_after("mxm_w accumulator row 3") == 31
    # queue slots
    st.place("mxm_w.weights", 4, "IW")
    with pytest.raises(CompileError, match=r"mxm_w.weights: cycle 4 already holds IW"):
        st.place("mxm_w.weights", 4, "IW")
    # stream slots: a second value on a slot one holds
    st.drive(Dir.WEST, 2, "mem_w1", 7, "mxm_w")
    st.drive(Dir.WEST, 2, "mem_w1", 7, "mxm_w")                      # the same value: shared
    # a value driven one slice further east one cycle earlier meets it in every column
    pos = p.slice("mem_w1").position
    with pytest.raises(CompileError, match=rf"stream 2 WEST column {pos} is taken in cycle 8 "
                                           rf"\(by the value driven at 7\)"):
        st.drive(Dir.WEST, 2, pos + 1, 6, "mxm_w")
    st.drive(Dir.WEST, 2, pos + 1, 5, "mxm_w")                      # one cycle earlier: free
    # MEM bank ports: a READ and a WRITE of one bank in one cycle
    w0 = p.slice("mem_w0")
    st.place("mem_w0.read", 12, "READ", addr=3, stream=0, dir=Dir.WEST)
    st.place("mem_w0.write", 12, "WRITE", addr=p.mem_words + 3, stream=0, dir=Dir.EAST)  # bank 1
    st.place("mem_w0.read", 13, "READ", addr=4, stream=0, dir=Dir.WEST)
    with pytest.raises(CompileError, match=rf"MEM slice {w0.name} bank 0 is read and written "
                                           rf"in cycle 13"):
        st.place("mem_w0.write", 13, "WRITE", addr=5, stream=0, dir=Dir.EAST)
    assert not st.busy("mem_w0.write", 13)                     # nothing placed on a conflict


def _run(p, pkg, inputs):
    dev = Device(ModelBackend(p))
    dev.load(pkg)
    dev.write_inputs(inputs)
    assert dev.run() == pkg.predicted_cycles
    return dev.read_outputs()


def test_softmax_then_elementwise_in_one_program_on_the_model():
    """The elementwise tensors take the MEM words after the softmax's; the elementwise rows
    start after the softmax's last instruction (its stream registers are untracked)."""
    from openlpu.firmware.norm import emit_softmax
    from openlpu.verification import reference as ref
    p = preset("mini")
    state = ChipState(p, "softmax then add")
    e1 = emit_softmax(state, 6, 9, scale=1 / 16)
    # the flows' fit search skips the softmax's cycles even from earliest=0
    vxm_queues = [f"vxm.alu{i}" for i in range(p.vxm_alus)]
    before = {(q, t) for q in vxm_queues for t in state.sched._slots[q]}
    e2 = emit_elementwise(state, "ADD", 2, 8, earliest=0, names=("A", "B", "Z"))
    assert e2.inputs[0].base > 0                  # after X in mem_w0 bank 0
    new = {(q, t) for q in vxm_queues for t in state.sched._slots[q]} - before
    assert len(new) == 2 and min(t for _, t in new) >= e1.end
    pkg = state.package(name="softmax_add", inputs=e1.inputs + e2.inputs,
                        outputs=e1.outputs + e2.outputs)
    rng = np.random.default_rng(5)
    X = rng.integers(-128, 128, (6, 9))
    A, B = rng.integers(-64, 64, (2, 8)), rng.integers(-64, 64, (2, 8))
    out = _run(p, pkg, {"X": X, "A": A, "B": B})
    np.testing.assert_array_equal(out["Y"], ref.softmax_int(X, ref.softmax_consts(1 / 16))["Y"])
    np.testing.assert_array_equal(out["Z"], A + B)


def test_rmsnorm_then_matmul_in_one_program_on_the_model():
    """The matmul is striped around the RMSNorm's fixed MEM words; its weight loads and
    accumulator rows come after the RMSNorm's claims."""
    from openlpu.firmware.norm import emit_rmsnorm
    from openlpu.verification import reference as ref
    p = preset("mini4")
    state = ChipState(p, "rmsnorm then matmul")
    kw = dict(gamma=np.linspace(-1.5, 2.0, 16), eps=1e-3, in_scale=0.05, out_scale=0.02)
    e1 = emit_rmsnorm(state, 6, 16, **kw)
    row = p.mxm_acc_words - 1
    assert state.free_after(f"mxm_w accumulator row {row}") > 0
    e2 = emit_matmul(state, 16, 16, 16, earliest=e1.end, names=("A", "B", "C"))
    assert e2.outputs[0].striped and e2.end > e1.end
    pkg = state.package(name="rmsnorm_mm", inputs=e1.inputs + e2.inputs,
                        outputs=e1.outputs + e2.outputs)
    A, B = matmul_operands("random", 16, 16, 16, 9)
    X = np.random.default_rng(2).integers(-128, 128, (6, 16))
    out = _run(p, pkg, {"A": A, "B": B, "X": X})
    np.testing.assert_array_equal(out["C"], matmul_reference(A, B))
    np.testing.assert_array_equal(out["Y"], ref.rmsnorm_int(X, ref.rmsnorm_consts(16, **kw))["Y"])


def test_fixed_words_another_kernel_holds_raise():
    from openlpu.firmware.attention import emit_attention
    from openlpu.firmware.norm import emit_softmax
    from openlpu.firmware.transpose import emit_transpose
    p = preset("mini")
    state = ChipState(p, "softmax then transpose")
    emit_softmax(state, 6, 9, scale=1 / 16)
    with pytest.raises(CompileError, match=r"X2 needs words \[0, 8\) of MEM slice \d+ bank 0, "
                                           r"which are not free"):
        emit_transpose(state, 8, 8, names=("X2", "Y2"))
    with pytest.raises(CompileError, match=r"attention K needs words"):
        emit_attention(state, 8, 8, 8, scale=0.05)


def test_untracked_kernel_over_tracked_streams_raises():
    """A kernel whose stream slots are not tracked may not start while another kernel's
    values are still in flight."""
    from openlpu.firmware.norm import emit_softmax
    p = preset("mini4")
    state = ChipState(p, "matmul then softmax")
    # the words the softmax of 4 x 4 takes: X, Y, identity weights, constants, scratch
    for s, bank, n in (("mem_w0", 0, 4), ("mem_w0", 1, 4), ("mem_w1", 0, p.vl), ("mem_e0", 0, 9),
                       ("mem_e1", 0, 1)):
        state.alloc.reserve("softmax words", (p.slice(s).index, bank), 0, n)
    e1 = emit_matmul(state, 8, 16, 8)
    state.alloc.free("softmax words")
    with pytest.raises(CompileError, match=r"stream slots are claimed up to cycle \d+; emit it "
                                           r"from earliest=\d+ on"):
        emit_softmax(state, 4, 4, scale=0.1, earliest=state.stream_hi)
    assert state.alloc.owner((p.slice("mem_w0").index, 0), 0) is None     # nothing kept
    assert emit_softmax(state, 4, 4, scale=0.1, earliest=e1.end).end > e1.end
