"""Unit tests of the instruction control unit (rtl/icu.py) in Amaranth's simulator.

Expected issue schedules come from the documented queue semantics (``docs/architecture.md``,
Instruction issue; ``NOP count`` idles ``count`` cycles, ``HALT`` stops the queue, an
undecodable or disallowed word, or one the chip lacks (``isa.available``), is flagged and
skipped) applied to ``openlpu.isa.decode``.
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
            if not isa.available(idef, role, params):     # not in this role or on this chip
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


def run_icu_notify(params, queue, words, cycles, notify_at=()):
    """Like run_icu, with notify_in high in the cycles of ``notify_at``; also records the
    start-cycle issue and the notify output."""
    dut = InstructionControlUnit(params, queue)
    trace, notes, at_start = [], [], []

    async def tb(ctx):
        for a, w in enumerate(words):
            ctx.set(dut.host.addr, a)
            ctx.set(dut.host.w_data, w)
            ctx.set(dut.host.w_en, 1)
            await ctx.tick()
        ctx.set(dut.host.w_en, 0)
        ctx.set(dut.start, 1)
        at_start.append(ctx.get(dut.issue.word) if ctx.get(dut.issue.valid) else None)
        await ctx.tick()
        ctx.set(dut.start, 0)
        for t in range(cycles):
            ctx.set(dut.notify_in, t in notify_at)
            v = ctx.get(dut.issue.valid)
            trace.append((ctx.get(dut.issue.word) if v else None, ctx.get(dut.error),
                          bool(ctx.get(dut.done))))
            notes.append(bool(ctx.get(dut.notify)))
            await ctx.tick()

    run_sim(dut, tb, max_cycles=len(words) + cycles + 50)
    return trace, notes, at_start[0]


def _with_field(word, mnemonic, delta):
    idef = OP[mnemonic]
    f = dict(isa.decode(word)[1])
    fld = isa.REPEAT_FIELD[mnemonic]
    bits = next(x.bits for x in idef.fields if x.name == fld)
    f[fld] = (f[fld] + delta) & ((1 << bits) - 1)
    return idef.encode(**f)


@pytest.mark.parametrize("role,mnemonic,fields", [
    ("read", "READ", dict(addr=5, stream=2, dir=1)),
    ("write", "SCATTER", dict(addr=3, map_stream=1, map_dir=0, stream=4, dir=1)),
    ("weights", "LW", dict(row=1, stream=3, dir=0)),
    ("compute", "ABC", dict(acc=0, stream=1, dir=1, accumulate=1)),
])
def test_repeat_schedule(params, role, mnemonic, fields):
    """Copy k of X issues at r - 1 + k*interval with the REPEAT field + k*stride (mod width)."""
    q = queue_of(params, role)
    x = enc(mnemonic, **fields)
    words = [x, enc("REPEAT", count=3, interval=1, stride=-2),
             enc("REPEAT", count=2, interval=3, stride=7), enc("NOP", count=2),
             enc("REPEAT", count=1, interval=2, stride=1), enc("HALT")]
    n = 20
    trace, _, _ = run_icu_notify(params, q, words, n)
    exp = {0: x}
    for k in (1, 2, 3):                      # REPEAT at r = 1, interval 1
        exp[1 - 1 + k] = _with_field(x, mnemonic, -2 * k)
    for k in (1, 2):                         # REPEAT at r = 4, interval 3
        exp[4 - 1 + 3 * k] = _with_field(x, mnemonic, 7 * k)
    exp[12 - 1 + 2] = _with_field(x, mnemonic, 1)   # NOP at 10-11, REPEAT at r = 12
    halt = 14
    assert [w for w, _, _ in trace] == [exp.get(t) for t in range(n)]
    assert [d for _, _, d in trace] == [t >= halt for t in range(n)]
    assert all(e == 0 for _, e, _ in trace)


def test_bad_repeat_sync_notify_config(params):
    """REPEAT with no instruction before it is BAD_INSTRUCTION; SYNC waits for notify_in (same
    cycle or later); NOTIFY drives notify; CONFIG is forwarded to MEM slices (and CONFIG with
    every bit set in the START cycle), a no-op in MXM queues."""
    cfg_all = enc("CONFIG", mask=0xFFFF)
    rd = enc("READ", addr=1, stream=0, dir=0)
    words = [enc("REPEAT", count=2, interval=1, stride=1), enc("SYNC"), rd, enc("SYNC"),
             enc("NOTIFY"), enc("CONFIG", mask=1), enc("SYNC"), rd, enc("HALT")]
    # t0 bad REPEAT, t1 SYNC (released by notify at 4) -> READ at 5, SYNC at 6 with notify at 6
    # -> NOTIFY at 7, CONFIG at 8, SYNC at 9 (released by notify at 12) -> READ at 13
    n = 16
    q = queue_of(params, "read")
    trace, notes, at_start = run_icu_notify(params, q, words, n, notify_at=(4, 6, 12))
    assert at_start == cfg_all
    issued = {t: w for t, (w, _, _) in enumerate(trace) if w is not None}
    assert issued == {5: rd, 8: enc("CONFIG", mask=1), 13: rd}
    assert [t for t, (_, e, _) in enumerate(trace) if e] == [0]
    assert trace[0][1] == ErrorFlag.BAD_INSTRUCTION
    assert [t for t, v in enumerate(notes) if v] == [7]
    assert [d for _, _, d in trace] == [t >= 14 for t in range(n)]
    # an MXM queue: CONFIG issues nothing, nothing at START
    q = queue_of(params, "weights")
    trace, _, at_start = run_icu_notify(params, q, [enc("CONFIG", mask=0), enc("IW"),
                                                    enc("HALT")], 4)
    assert at_start is None
    assert [w for w, _, _ in trace] == [None, enc("IW"), None, None]


# -- without the REPEAT engine (params.icu_repeat = False) -------------------------------------

def lite(params):
    return dataclasses.replace(params, icu_repeat=False, mem_gather=False,
                               name=f"{params.name}_lite")


@pytest.mark.parametrize("role", ["read", "write", "compute"])
def test_without_repeat_engine(params, role):
    """icu_repeat=False (and mem_gather=False): REPEAT, GATHER and SCATTER words are
    BAD_INSTRUCTION, skipped in one cycle like an unknown opcode; the words around them issue
    exactly as on the full chip with those words replaced by an unknown opcode."""
    p = lite(params)
    assert isa.unavailable(p) == {"REPEAT", "GATHER", "SCATTER"}
    q = queue_of(p, role)
    x = {"read": enc("READ", addr=5, stream=2, dir=1),
         "write": enc("WRITE", addr=3, stream=4, dir=0),
         "compute": enc("ABC", acc=1, stream=1, dir=1, accumulate=0)}[role]
    mapped = {"read": enc("GATHER", addr=2, map_stream=1, map_dir=0, stream=3, dir=1),
              "write": enc("SCATTER", addr=3, map_stream=1, map_dir=0, stream=4, dir=1),
              "compute": x}[role]
    repeat = enc("REPEAT", count=3, interval=1, stride=1)
    words = [x, repeat, enc("NOP", count=2), x, mapped, repeat, enc("NOP", count=1), x,
             enc("HALT"), x]
    n = 16
    trace = run_icu(p, q, words, n)
    exp = expected_schedule(p, q.role, words, n)
    assert trace == exp
    bad = [t for t, (_, e, _) in enumerate(exp) if e & ErrorFlag.BAD_INSTRUCTION]
    assert bad == ([1, 5, 6] if role != "compute" else [1, 6])
    assert [t for t, (w, _, _) in enumerate(exp) if w is not None] == (
        [0, 4, 8] if role != "compute" else [0, 4, 5, 8])
    assert [d for _, _, d in exp] == [t >= 9 for t in range(n)]
    # the full chip, with the words the lite chip lacks replaced by an unknown opcode
    full = [0x3F if isa.decode(w)[0].mnemonic in isa.unavailable(p) else w for w in words]
    assert run_icu(params, queue_of(params, role), full, n) == trace


def test_control_instructions_without_repeat_engine(params):
    """NOP, HALT, SYNC, NOTIFY and CONFIG (and the bad leading REPEAT) as on the full chip."""
    p = lite(params)
    test_issue_nop_halt_timing(p)
    test_restart_from_word0(p)
    test_bad_instruction(p)
    test_good_program_has_no_errors(p)
    test_bad_repeat_sync_notify_config(p)
    test_converts(p)
