"""Unit tests of the instruction control unit (rtl/icu.py) in Amaranth's simulator.

Expected issue schedules come from the documented queue semantics (``docs/architecture.md``,
Instruction issue; ``NOP count`` idles ``count`` cycles, ``HALT`` stops the queue, an
undecodable or disallowed word is flagged and skipped) applied to ``openlpu.isa.decode``.
"""

import dataclasses
import gc

import numpy as np
import pytest
from amaranth.back import verilog

from openlpu import isa
from openlpu.isa import ErrorFlag
from openlpu.params import preset
from openlpu.rtl.icu import InstructionControlUnit
from openlpu.rtl.testing import SimulationTimeout, run_sim

OP = isa.BY_MNEMONIC


def enc(mnemonic, **fields):
    return OP[mnemonic].encode(**fields)


def expected_schedule(params, role, words, limit):
    """Per cycle of the run: (issued word or None, error bits, done) from the ISA rules."""
    out = []
    pc, wait, halted = 0, 0, False
    for _t in range(limit):
        if halted:
            out.append((None, 0, True))
            continue
        if wait:
            wait -= 1
            out.append((None, 0, False))
            continue
        if pc >= params.imem_words:
            halted = True
            out.append((None, int(ErrorFlag.IMEM_OVERRUN), True))
            continue
        w = words[pc] if pc < len(words) else 0
        pc += 1
        try:
            idef, f = isa.decode(w)
            if not isa.allowed(idef, role):
                raise isa.IsaError("not allowed")
        except isa.IsaError:
            out.append((None, int(ErrorFlag.BAD_INSTRUCTION), False))
            continue
        if idef.mnemonic == "HALT":
            halted = True
            out.append((None, 0, True))
        elif idef.mnemonic == "NOP":
            wait = f["count"] - 1
            out.append((None, 0, False))
        else:
            out.append((w, 0, False))
    return out


def run_icu(params, queue, words, cycles, *, start_twice=False):
    """Load ``words`` over the host port, start, and record (issue, error, done) per cycle."""
    dut = InstructionControlUnit(params, queue)
    trace = []

    async def tb(ctx):
        for a, w in enumerate(words):
            ctx.set(dut.host.addr, a)
            ctx.set(dut.host.w_data, w)
            ctx.set(dut.host.w_en, 1)
            await ctx.tick()
        ctx.set(dut.host.w_en, 0)
        # idle before start: nothing issues
        assert not ctx.get(dut.issue.valid)
        if start_twice:                     # a first run, interrupted after 3 cycles
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            for _ in range(3):
                await ctx.tick()
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        for _t in range(cycles):
            v = ctx.get(dut.issue.valid)
            trace.append((ctx.get(dut.issue.word) if v else None, ctx.get(dut.error),
                          bool(ctx.get(dut.done))))
            await ctx.tick()

    run_sim(dut, tb, max_cycles=len(words) + cycles + 50)
    return trace


def queue_of(params, role):
    return next(q for q in params.queues if q.role == role)


def test_issue_nop_halt_timing(params):
    q = queue_of(params, "read")
    words = [
        enc("READ", addr=1, stream=2, dir=0),
        enc("READ", addr=2, stream=3, dir=1),      # back to back
        enc("NOP", count=3),
        enc("READ", addr=3, stream=0, dir=0),
        enc("NOP", count=1),
        enc("READ", addr=4, stream=7, dir=1),
        enc("HALT"),
        enc("READ", addr=5, stream=1, dir=0),      # never issued
    ]
    n = 14
    trace = run_icu(params, q, words, n)
    exp = expected_schedule(params, q.role, words, n)
    assert trace == exp
    # spot-check the rule itself: READs at 0, 1, 5, 7; HALT at 8
    assert [t for t, e in enumerate(exp) if e[0] is not None] == [0, 1, 5, 7]
    assert [t for t, e in enumerate(exp) if e[2]][0] == 8


def test_restart_from_word0(params):
    q = queue_of(params, "write")
    words = [enc("WRITE", addr=7, stream=1, dir=1), enc("NOP", count=2), enc("HALT")]
    n = 6
    trace = run_icu(params, q, words, n, start_twice=True)
    assert trace == expected_schedule(params, q.role, words, n)


def test_bad_instruction(params):
    q = queue_of(params, "read")
    used = isa.OPCODE_BITS + sum(f.bits for f in OP["READ"].fields)
    words = [
        enc("WRITE", addr=0, stream=0, dir=0),             # not allowed in a read queue
        enc("READ", addr=1, stream=0, dir=0),
        0x3F,                                              # unknown opcode
        enc("NOP", count=1) & ~(0xFFFF << isa.OPCODE_BITS),  # NOP count 0
        enc("READ", addr=2, stream=1, dir=0) | (1 << used),  # bit above the last field
        enc("LW", row=0, stream=0, dir=0),                 # MXM instruction
        enc("READ", addr=3, stream=1, dir=1),
        enc("HALT"),
    ]
    for w in (words[0], words[2], words[3], words[4], words[5]):
        with pytest.raises(isa.IsaError):
            idef, _ = isa.decode(w)
            if not isa.allowed(idef, q.role):
                raise isa.IsaError("not allowed")
    n = 10
    trace = run_icu(params, q, words, n)
    exp = expected_schedule(params, q.role, words, n)
    assert trace == exp
    assert sum(1 for e in exp if e[1] & ErrorFlag.BAD_INSTRUCTION) == 5


def test_good_program_has_no_errors(params):
    for role in ("read", "write"):
        q = queue_of(params, role)
        mn = "READ" if role == "read" else "WRITE"
        words = [enc(mn, addr=a, stream=a % params.streams, dir=a % 2) for a in range(4)]
        words += [enc("NOP", count=2), enc("HALT")]
        trace = run_icu(params, q, words, 9)
        assert trace == expected_schedule(params, q.role, words, 9)
        assert all(e == 0 for _, e, _ in trace)


@pytest.mark.parametrize("imem_words", [6, 8])
def test_imem_overrun(imem_words):
    params = dataclasses.replace(preset("tiny"), imem_words=imem_words)
    q = queue_of(params, "read")
    words = [enc("READ", addr=a, stream=0, dir=0) for a in range(imem_words - 1)]
    words += [enc("NOP", count=2)]
    n = imem_words + 4
    trace = run_icu(params, q, words, n)
    exp = expected_schedule(params, q.role, words, n)
    assert trace == exp
    t_over = [t for t, e in enumerate(exp) if e[1] & ErrorFlag.IMEM_OVERRUN]
    assert t_over == [imem_words + 1]        # the NOP's second cycle ends at imem_words


def test_host_roundtrip(params):
    q = queue_of(params, "write")
    dut = InstructionControlUnit(params, q)
    rng = np.random.default_rng(1)
    addrs = [0, 1, params.imem_words - 1, params.imem_words // 2]
    values = [int(v) for v in rng.integers(0, 1 << 32, size=len(addrs), dtype=np.uint64)]
    values[1] = 0xFFFFFFFF

    async def tb(ctx):
        for a, v in zip(addrs, values):
            ctx.set(dut.host.addr, a)
            ctx.set(dut.host.w_data, v)
            ctx.set(dut.host.w_en, 1)
            await ctx.tick()
        ctx.set(dut.host.w_en, 0)
        for a, v in zip(addrs, values):
            ctx.set(dut.host.addr, a)
            ctx.set(dut.host.r_en, 1)
            await ctx.tick()
            ctx.set(dut.host.r_en, 0)
            assert ctx.get(dut.host.r_data) == v
            await ctx.tick()
            assert ctx.get(dut.host.r_data) == 0      # only in the cycle after r_en

    run_sim(dut, tb, max_cycles=100)


def test_converts(params):
    one_per_role = {q.role: q for q in params.queues}
    for q in one_per_role.values():
        verilog.convert(InstructionControlUnit(params, q), emit_src=False)


# the abandoned testbench coroutine complains when it is garbage-collected (harmless)
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_run_sim_cycle_limit():
    params = preset("tiny")
    dut = InstructionControlUnit(params, params.queues[0])

    async def never_done(ctx):
        await ctx.tick().until(dut.issue.valid)     # nothing is loaded or started

    with pytest.raises(SimulationTimeout, match="never_done still running after 300 cycles"):
        run_sim(dut, never_done, max_cycles=300)
    gc.collect()
