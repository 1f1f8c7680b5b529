"""VXM ALU classes (``vxm_fx_alus``, ``vxm_mul_alus``): the ISA's per-queue availability, the
assembler / package / schedule rejections, and the VXM kernels placed on the ALUs that have
the units they need, bit-exact on the reference model (``mini_lite``: only alu0 has the
function pipelines). The RTL side is in ``tests/rtl/test_vxm.py`` (ALU classes: the slice
against ``vxm_ops``, the ICU's rejection)."""

import dataclasses

import numpy as np
import pytest

from openlpu import isa
from openlpu.firmware.asm import AsmError, assemble
from openlpu.firmware.attention import attention_tensor_names, compile_attention
from openlpu.firmware.compiler import compile_matmul
from openlpu.firmware.norm import compile_rmsnorm, compile_softmax
from openlpu.firmware.package import PackageError
from openlpu.firmware.schedule import CompileError, Schedule
from openlpu.firmware.vxmconst import vxm_fields
from openlpu.host.device import Device
from openlpu.params import ParamsError, preset
from openlpu.verification import reference as ref

LITE = preset("mini_lite")
VEXP = "VEXP 0, E, 0, 0, E, 0, E, 2, 0"


def reduced(fx=None, mul=None):
    return dataclasses.replace(preset("mini"), name=f"mini_fx{fx}_mul{mul}", vxm_fx_alus=fx,
                               vxm_mul_alus=mul)


def test_option_defaults_keep_presets_and_range():
    for name in ("mini", "mini4", "tiny", "default"):
        p = preset(name)
        assert "vxm_fx_alus" not in p.to_dict() and "vxm_mul_alus" not in p.to_dict()
    assert LITE.to_dict()["vxm_fx_alus"] == 1 and LITE.config_id != preset("mini").config_id
    for bad in (-1, 5, True, 1.0):
        with pytest.raises(ParamsError, match="vxm_fx_alus must be None"):
            reduced(fx=bad)
    with pytest.raises(ParamsError, match=r"vxm_mul_alus must be None .* 0..vxm_alus \(0\)"):
        dataclasses.replace(preset("tiny"), vxm_mul_alus=1)


def test_per_queue_availability():
    p = reduced(fx=1, mul=3)
    assert isa.vxm_alus_with(p, "VEXP") == ("alu0",)
    assert isa.vxm_alus_with(p, "VMUL") == ("alu0", "alu1", "alu2")
    assert isa.vxm_alus_with(p, "VADD") == isa.VXM_ALU_ROLES
    assert isa.vxm_alu_units(p, 0) == {"fx", "mul"} and isa.vxm_alu_units(p, 3) == frozenset()
    for mn, unit in isa.VXM_UNIT_OF.items():
        for i, role in enumerate(isa.VXM_ALU_ROLES):
            assert isa.available(isa.BY_MNEMONIC[mn], role, p) == (unit in isa.vxm_alu_units(p, i))
    assert isa.unavailable(p) == frozenset()
    assert isa.unavailable(reduced(fx=0)) == {"VEXP", "VRECIP", "VRSQRT"}
    assert isa.VXM_CLASS.keys() == {i.mnemonic for i in isa.VXM_INSTRUCTIONS}


def test_assembler_package_schedule_reject_the_missing_unit():
    msg = (r"VEXP needs the VXM exp/reciprocal/rsqrt pipelines \(fx\), which queue vxm.alu1 "
           r"lacks on preset 'mini_lite' \(vxm_fx_alus=1: only vxm.alu0 has it\)")
    assemble(f".queue vxm.alu0\n{VEXP}\nHALT\n", LITE)
    with pytest.raises(AsmError, match="line 2: " + msg):
        assemble(f".queue vxm.alu1\n{VEXP}\nHALT\n", LITE)
    sched = Schedule(LITE)
    sched.place("vxm.alu0", 0, "VEXP", **vxm_fields())
    with pytest.raises(CompileError, match="vxm.alu1: " + msg):
        sched.place("vxm.alu1", 0, "VEXP", **vxm_fields())
    p = reduced(mul=2)
    with pytest.raises(CompileError, match=r"VMULSHR needs the VXM 32x32 multiplier \(mul\), "
                                           r"which queue vxm.alu3 lacks .*vxm_mul_alus=2"):
        Schedule(p).place("vxm.alu3", 0, "VMULSHR", **vxm_fields())
    # a package built for the full chip, checked against the reduced one
    pkg = compile_softmax(preset("mini"), 8, 8, scale=0.1)
    pkg.validate()
    bad = dataclasses.replace(pkg, params=LITE)
    with pytest.raises(PackageError, match=r"queue vxm.alu3 word \d+: VEXP needs .*vxm.alu3"):
        bad.validate()


def test_kernels_keep_their_programs_on_full_chips():
    """On a chip with full ALUs the kernels' ALU placement is the identity (same program)."""
    a = compile_softmax(preset("mini"), 8, 8, scale=0.1)
    b = compile_softmax(reduced(fx=4, mul=4), 8, 8, scale=0.1)
    assert a.queues == b.queues and a.predicted_cycles == b.predicted_cycles


def test_kernels_name_the_units_they_lack():
    with pytest.raises(CompileError, match=r"softmax 8x8 on preset 'mini_fxNone_mul2'.*"
                                           r"vxm_mul_alus=2"):
        compile_softmax(reduced(mul=2), 8, 8, scale=0.1)
    with pytest.raises(CompileError, match=r"attention .*needs separate VXM ALUs for "
                                           r"VEXP\+VMULSHR, VREQ, VEXP\+VRECIP; .*vxm_fx_alus=1"):
        compile_attention(LITE, 8, 8, 4, scale=0.1, causal=True)
    with pytest.raises(CompileError, match=r"VREQ needs a VXM ALU with the 32x32 multiplier "
                                           r"\(vxm_mul_alus=0\)"):
        compile_matmul(reduced(mul=0), 8, 8, 8, requantize=(1 << 30, 0))


def _model(p, pkg, inputs):
    with Device.open("model", p) as dev:
        dev.load(pkg)
        dev.write_inputs(inputs)
        cycles = dev.run()
        return cycles, dev.read_outputs()


@pytest.mark.parametrize("p", [LITE, reduced(fx=1, mul=4)], ids=lambda p: p.name)
def test_softmax_rmsnorm_bit_exact_on_reduced_alus(p):
    rng = np.random.default_rng(3)
    X = rng.integers(-128, 128, (8, 13))
    pkg = compile_softmax(p, 8, 13, scale=1 / 16)
    assert "VEXP" not in {isa.decode(int(w))[0].mnemonic
                          for q, ws in pkg.queues.items() if q != "vxm.alu0" for w in ws}
    cycles, out = _model(p, pkg, {"X": X})
    assert cycles == pkg.predicted_cycles
    np.testing.assert_array_equal(out["Y"], ref.softmax_int(X, ref.softmax_consts(1 / 16))["Y"])
    kw = dict(gamma=rng.uniform(-2, 2, 16), eps=1e-3, in_scale=1 / 32, out_scale=1 / 64)
    X = rng.integers(-128, 128, (8, 16))
    pkg = compile_rmsnorm(p, 8, 16, **kw)
    cycles, out = _model(p, pkg, {"X": X})
    assert cycles == pkg.predicted_cycles
    np.testing.assert_array_equal(out["Y"], ref.rmsnorm_int(X, ref.rmsnorm_consts(16, **kw))["Y"])


def test_attention_and_epilogue_bit_exact_on_reduced_alus():
    rng = np.random.default_rng(5)
    p = reduced(fx=1, mul=3)           # non-causal attention: D fx, A and C the multiplier
    lq, lk, d = 8, 11, 8
    scale = 1 / (4 * np.sqrt(d))
    pkg = compile_attention(p, lq, lk, d, scale=scale)
    names = attention_tensor_names(1)
    Q, K, V = (rng.integers(-128, 128, s) for s in ((lq, d), (lk, d), (lk, d)))
    cycles, out = _model(p, pkg, {names["Q"][0]: Q, names["K"][0]: K, names["V"][0]: V})
    assert cycles == pkg.predicted_cycles
    want = ref.attention_int(Q, K, V, ref.attention_consts(scale), False)["O"]
    np.testing.assert_array_equal(out[names["O"][0]], want)
    p = reduced(fx=0, mul=1)
    A, B = rng.integers(-128, 128, (8, 8)), rng.integers(-128, 128, (8, 8))
    pkg = compile_matmul(p, 8, 8, 8, requantize=(1 << 30, 4), relu=True)
    cycles, out = _model(p, pkg, {"A": A, "B": B})
    assert cycles == pkg.predicted_cycles
    full = compile_matmul(preset("mini"), 8, 8, 8, requantize=(1 << 30, 4), relu=True)
    _, want = _model(preset("mini"), full, {"A": A, "B": B})
    np.testing.assert_array_equal(out["C"], want["C"])


def test_model_raises_bad_instruction_for_a_missing_unit():
    """A VEXP word on an ALU without the pipelines (loaded past the checks) is skipped in its
    issue cycle with BAD_INSTRUCTION, as on the RTL's ICU; on alu0 the same word executes
    (its operand stream is unwritten: STREAM_UNWRITTEN only)."""
    from openlpu.verification.model import LpuModel
    word = isa.BY_MNEMONIC["VEXP"].encode(**vxm_fields(b_mode=isa.VXM_B_IMM))
    halt = isa.BY_MNEMONIC["HALT"].encode()
    for role, bad in (("alu0", False), ("alu2", True)):
        m = LpuModel(LITE)
        for q in LITE.queues:
            m.imem[q.index, 0] = word if q.name == f"vxm.{role}" else halt
            m.imem[q.index, 1] = halt
        m.start()
        assert bool(m.errors & isa.ErrorFlag.BAD_INSTRUCTION) == bad
        if bad:
            assert m.error_cycle == 0


def test_elementwise_places_products_on_multiplier_alus():
    """The dataflow placer picks, per vector, a free ALU that implements the op: with one
    multiplier ALU every VMUL is on alu0, and the result is wrap-around int8 A * B."""
    from openlpu import vxm_ops
    from openlpu.firmware.compiler import compile_elementwise
    p = reduced(mul=1)
    rng = np.random.default_rng(9)
    A, B = rng.integers(-128, 128, (6, 16)), rng.integers(-128, 128, (6, 16))
    pkg = compile_elementwise(p, "MUL", 6, 16)
    where = {q for q, ws in pkg.queues.items() for w in ws
             if isa.decode(int(w))[0].mnemonic == "VMUL"}
    assert where == {"vxm.alu0"}
    cycles, out = _model(p, pkg, {"A": A, "B": B})
    assert cycles == pkg.predicted_cycles
    np.testing.assert_array_equal(out["Y"], vxm_ops.wrap(A * B, 0))
    with pytest.raises(CompileError, match=r"no VXM ALU implements VMUL: .*vxm_mul_alus=0"):
        compile_elementwise(reduced(mul=0), "MUL", 6, 16)
