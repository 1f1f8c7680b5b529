"""The static instruction check (``isa.check_instruction``, ``isa.check_queue``) and its users.

The check must reject exactly the words for which the chip raises ``ADDR_RANGE`` or
``BAD_INSTRUCTION`` because of a field: the differential tests below run random words on the
reference model (which the RTL matches flag for flag, ``verification/test_isa_vs_model.py``)
and compare.
"""

import dataclasses

import numpy as np
import pytest

from openlpu import isa
from openlpu.firmware.asm import AsmError, assemble, format_instr
from openlpu.firmware.compiler import compile_matmul
from openlpu.firmware.package import PackageError
from openlpu.firmware.schedule import CompileError, Schedule
from openlpu.isa import ErrorFlag
from openlpu.params import preset
from openlpu.verification.model import LpuModel
from openlpu.verification.model.chip import ScheduleHazard

OP = isa.BY_MNEMONIC
HALT = OP["HALT"].encode()


def vxm(mn, **kw):
    f = dict(a_stream=0, a_dir=0, a_chain=0, b_stream=0, b_dir=0, b_mode=0, out_dir=0, dtype=0,
             imm=0)
    f.update(kw)
    return mn, f


# (queue, [(mnemonic, fields), ...], message regex) on mini (VL 8, 8 streams, 128 MEM words)
BAD = [
    ("mxm_w.weights", [("LWT", dict(col=511, stream=0, dir=0))],
     r"LWT: col=511 out of range for preset 'mini': a weight column is 0\.\.7"),
    ("mem_e0.read", [("GATHER", dict(addr=0, map_stream=8, map_dir=0, stream=0, dir=0))],
     r"GATHER: map_stream=8 out of range .*byte stream is 0\.\.7"),
    ("sxm_w.permute", [("PERMUTE", dict(in_stream=0, in_dir=0, out_stream=0, out_dir=0,
                                        map_stream=31, map_dir=0))],
     r"PERMUTE: map_stream=31 out of range"),
    ("sxm_e.shift", [("SHIFT", dict(in_stream=9, in_dir=0, out_stream=0, out_dir=0, amount=1))],
     r"SHIFT: in_stream=9 out of range"),
    ("sxm_e.transpose", [("TRANSPOSE", dict(in_stream=0, in_dir=0, out_stream=8, out_dir=1))],
     r"TRANSPOSE: out_stream=8 out of range"),
    ("vxm.alu1", [vxm("VADD", a_stream=8)], r"VADD: a_stream=8 out of range .*operand a"),
    ("vxm.alu1", [vxm("VADD", b_stream=12)], r"VADD: b_stream=12 out of range .*operand b"),
    ("vxm.alu0", [vxm("VMUL", dtype=3)], r"VMUL: dtype=3 is not a lane type \(allowed: 0 int8"),
    ("vxm.alu2", [vxm("VADD", a_stream=6, dtype=2)],
     r"VADD: a_stream=6 out of range .*4 byte stream\(s\) 6\.\.9, past the last stream 7: "
     r"a_stream must be 0\.\.4"),
    ("vxm.alu2", [vxm("VADD", b_stream=5, dtype=2)], r"VADD: b_stream=5 out of range"),
    ("vxm.alu3", [vxm("VEXP", dtype=0)], r"VEXP: dtype=0 not allowed: VEXP takes int32 only"),
    ("vxm.alu3", [vxm("VCMP", imm=6)], r"VCMP: imm=6 is not a comparison code"),
    ("vxm.alu3", [vxm("VCAST", imm=3)], r"VCAST: imm=3: target lane type"),
    ("vxm.alu3", [vxm("VCAST", a_stream=6, imm=2)],
     r"VCAST: a_stream=6 out of range .*the result \(int32\)"),
    ("mem_w0.read", [("REPEAT", dict(count=2, interval=1, stride=1))],
     r"REPEAT: no instruction before it to repeat"),
    ("mem_w0.read", [("NOP", dict(count=3)), ("CONFIG", dict(mask=1)),
                     ("REPEAT", dict(count=2, interval=1, stride=1))],
     r"REPEAT: no instruction before it"),
    ("mem_w0.read", [("READ", dict(addr=120, stream=0, dir=0)),
                     ("REPEAT", dict(count=10, interval=1, stride=1))],
     r"REPEAT: copy 8 of READ has addr=128 \(120 \+ 8 x 1, modulo 2\*\*16\), out of range"),
    ("mem_w0.read", [("READ", dict(addr=1, stream=0, dir=0)),
                     ("REPEAT", dict(count=1, interval=1, stride=-2))],
     r"REPEAT: copy 1 of READ has addr=65535"),
    ("mxm_w.compute", [("ABC", dict(acc=14, stream=0, dir=0, accumulate=0)),
                       ("REPEAT", dict(count=3, interval=2, stride=1))],
     r"REPEAT: copy 2 of ABC has acc=16 .*accumulator row is 0\.\.15"),
    ("sxm_w.transpose", [("TRANSPOSE", dict(in_stream=0, in_dir=0, out_stream=1, out_dir=0)),
                         ("REPEAT", dict(count=1, interval=3, stride=0))],
     r"TRANSPOSE issues at cycle 3, 3 cycle\(s\) after the previous one; it must issue at "
     r"least 4"),
]


def _text(queue, instrs):
    lines = [f".queue {queue}"]
    for mn, f in instrs:
        lines.append(f"  {format_instr(OP[mn], f)}")
    return "\n".join(lines) + "\n  HALT\n"


@pytest.mark.parametrize("queue, instrs, message", BAD)
def test_every_tool_rejects_what_the_chip_would_flag(queue, instrs, message):
    """The assembler, the package check and the compiler reject the word with the same
    message (instruction, field, value, allowed range); the model flags it at run time."""
    p = preset("mini")
    with pytest.raises(AsmError, match=message):
        assemble(_text(queue, instrs), p)
    words = [OP[mn].encode(**f) for mn, f in instrs] + [HALT]
    with pytest.raises(isa.IsaError, match=message):
        isa.check_queue(p, queue, words)
    pkg = compile_matmul(p, 2, 2, 2)
    pkg.queues[queue] = words
    with pytest.raises(PackageError, match=rf"queue {queue} word {len(instrs) - 1}: {message}"):
        pkg.validate()
    mn, f = instrs[-1]
    if mn != "REPEAT" and len(instrs) == 1:
        with pytest.raises(CompileError, match=message):
            Schedule(p).place(queue, 0, mn, **f)
    m = LpuModel(p)
    for q in p.queues:
        m.imem[q.index, 0] = HALT
    m.imem[p.queue(queue).index, :len(words)] = words
    m.start()
    assert m.errors & (ErrorFlag.ADDR_RANGE | ErrorFlag.BAD_INSTRUCTION)


@pytest.mark.parametrize("queue, instrs", [
    ("vxm.alu0", [vxm("VADD", a_stream=2, b_stream=3, dtype=2)]),     # no alignment needed
    ("vxm.alu0", [vxm("VADD", a_stream=4, b_stream=4, dtype=2)]),
    ("vxm.alu0", [vxm("VRELU", b_stream=31, b_mode=0)]),               # b unused
    ("vxm.alu0", [vxm("VADD", b_stream=31, b_dir=1, b_mode=3)]),       # immediate -1
    ("vxm.alu0", [vxm("VSEL", a_stream=4, b_stream=7, dtype=2)]),      # VSEL's b: one byte
    ("vxm.alu0", [vxm("VREQ", a_stream=4, dtype=2, b_mode=2)]),        # int8 result
    ("vxm.alu0", [vxm("VCAST", a_stream=7, dtype=0, imm=0xFC)]),       # imm[1:0] = int8
    ("vxm.alu0", [vxm("VLC", a_stream=7, out_dir=1, b_stream=31)]),    # no result, no b
    ("mem_w0.read", [("READ", dict(addr=127, stream=7, dir=1)),
                     ("REPEAT", dict(count=127, interval=1, stride=-1))]),
    ("mxm_w.weights", [("LW", dict(row=7, stream=0, dir=0)), ("NOP", dict(count=2)),
                       ("REPEAT", dict(count=7, interval=1, stride=-1))]),
    ("sxm_w.transpose", [("TRANSPOSE", dict(in_stream=0, in_dir=0, out_stream=1, out_dir=0)),
                         ("REPEAT", dict(count=3, interval=4, stride=0)), ("NOP", dict(count=3)),
                         ("TRANSPOSE", dict(in_stream=0, in_dir=0, out_stream=1, out_dir=0))]),
    ("sxm_w.transpose", [("TRANSPOSE", dict(in_stream=0, in_dir=0, out_stream=1, out_dir=0)),
                         ("SYNC", {}), ("TRANSPOSE", dict(in_stream=0, in_dir=0, out_stream=1,
                                                          out_dir=0))]),
])
def test_legal_corner_cases_are_accepted(queue, instrs):
    p = preset("mini")
    words = [OP[mn].encode(**f) for mn, f in instrs] + [HALT]
    isa.check_queue(p, queue, words)
    assert assemble(_text(queue, instrs), p)[queue] == words


def test_every_field_has_a_meaning_and_every_vxm_instruction_its_operands():
    for idef in isa.INSTRUCTIONS:
        for f in idef.fields:
            assert isa.field_meaning(idef, f.name) in isa.FIELD_MEANINGS, (idef.mnemonic, f.name)
    assert set(isa.VXM_OPERANDS) == {i.mnemonic for i in isa.VXM_INSTRUCTIONS}


def test_check_instruction_types():
    p = preset("mini")
    read = OP["READ"]
    with pytest.raises(isa.IsaError, match="field addr must be an integer, not 1.5"):
        isa.check_instruction(p, "read", read, dict(addr=1.5, stream=0, dir=0))
    with pytest.raises(isa.IsaError, match="field dir must be an integer, not True"):
        isa.check_instruction(p, "read", read, dict(addr=1, stream=0, dir=True))
    with pytest.raises(isa.IsaError, match="missing field 'dir'"):
        isa.check_instruction(p, "read", read, dict(addr=1, stream=0))
    with pytest.raises(isa.IsaError, match="READ is not allowed in a write queue"):
        isa.check_instruction(p, "write", read, dict(addr=1, stream=0, dir=0))
    isa.check_instruction(p, "read", read, dict(addr=np.int64(5), stream=np.uint8(1), dir=0))


# -- differential: the static check against the reference model ---------------------------------

def _chips():
    mini = dataclasses.replace(preset("mini"), imem_words=8, name="mini8")
    # 12 streams: stream groups 0..2 of a 3-bit field; no REPEAT, no GATHER on the second
    wide = dataclasses.replace(preset("mini"), imem_words=8, streams=12, mem_words=32,
                               mxm_acc_words=5, name="mini12")
    lite = dataclasses.replace(preset("mini"), imem_words=8, icu_repeat=False, mem_gather=False,
                               name="mini_lite")
    ice40 = dataclasses.replace(preset("ice40"), imem_words=8, name="ice40_8")   # VL 2, 4 streams
    return [mini, wide, lite, ice40]


def _value(rng, p, idef, fld):
    """A field value biased to the edges of its range on the chip."""
    lim = isa.field_limit(p, isa.field_meaning(idef, fld.name))
    edges = [fld.min, fld.max, fld.min + 1]
    if lim:
        edges += [lim[0] - 1, lim[0], lim[0] + 1]
    if fld.name in ("a_stream", "b_stream"):
        edges += [p.streams - 4, p.streams - 3, p.streams - 2]
    if fld.name == "dtype":
        return int(rng.integers(0, 4))
    if fld.name == "count":
        return int(rng.integers(1, 6)) if rng.random() < 0.8 else int(rng.integers(1, 40))
    if fld.name == "interval":
        return int(rng.integers(1, 6))
    v = int(rng.choice(edges)) if rng.random() < 0.5 else int(rng.integers(fld.min, fld.max + 1))
    return min(max(v, fld.min), fld.max)


def _random_instr(rng, p, role):
    choices = [i for i in isa.INSTRUCTIONS if isa.allowed(i, role)
               and i.mnemonic not in ("SYNC", "NOTIFY", "HALT")]
    idef = choices[int(rng.integers(len(choices)))]
    f = {fld.name: _value(rng, p, idef, fld) for fld in idef.fields}
    return idef.encode(**f)


def _differential(seed, cases):
    rng = np.random.default_rng(seed)
    bad = ErrorFlag.ADDR_RANGE | ErrorFlag.BAD_INSTRUCTION
    stats = {"accepted": 0, "rejected": 0}
    for p in _chips():
        m = LpuModel(p)
        for _ in range(cases):
            q = p.queues[int(rng.integers(len(p.queues)))]
            n = int(rng.integers(1, 4))
            words = [_random_instr(rng, p, q.role) for _ in range(n)] + [HALT]
            try:
                isa.check_queue(p, q.name, words)
                rejected = None
            except isa.IsaError as e:
                rejected = str(e)
            m.imem[:] = HALT
            m.imem[q.index, :len(words)] = words
            try:
                m.start(max_cycles=50_000)
            except ScheduleHazard:      # an LWT / IW ordering the model cannot express
                continue
            flagged = m.errors & bad
            prog = [isa.decode(w)[0].mnemonic + str(isa.decode(w)[1]) for w in words]
            assert bool(flagged) == bool(rejected), (
                f"{p.name} {q.name} {prog}: model flags {ErrorFlag(flagged)!r}, "
                f"check says {rejected}")
            stats["rejected" if rejected else "accepted"] += 1
    return stats


def test_check_matches_the_model_on_random_programs():
    """Random 1-3 instruction programs (fields at the edges of their ranges, REPEATs, NOPs,
    CONFIGs, TRANSPOSEs close together) on four chips: the check rejects a program exactly
    when the reference model raises ADDR_RANGE or BAD_INSTRUCTION running it."""
    stats = _differential(seed=2026, cases=250)
    assert stats["accepted"] > 150 and stats["rejected"] > 150, stats
