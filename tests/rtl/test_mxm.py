"""Unit tests of the MXM slice (rtl/mxm.py) in Amaranth's simulator.

The slice is driven directly, cycle by cycle: instructions on its three queues and vectors on
its input SR columns with the superlane stagger. Expected values come from numpy and from the
timing contract of the ``MxmSlice`` docstring and docs/architecture.md (superlane ``c`` executes
an instruction at issue + ``c``; ``ABC`` latency from the ISA table), never from the RTL. The
expectation model tracks every superlane separately, so it also covers the schedules where the
superlane-0 frame does not hold (an ``IW`` right after an ``LWT``, an ``LW`` and an ``LWT`` on the
same byte in one cycle).
"""

import dataclasses
import gc
import time
import warnings
from collections import defaultdict

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.hdl import UnusedElaboratable
from amaranth.sim import Simulator

from openlpu import isa
from openlpu.params import preset
from openlpu.rtl.mxm import MxmSlice

from ..conftest import int8_operands

EAST, WEST = isa.Dir.EAST, isa.Dir.WEST
SIM_WALL_LIMIT = 300.0         # seconds per simulator run: catches a hang, generous for a loaded machine
EDGE_KINDS = ("min", "max", "zero", "one")


def _role(mnemonic):
    return isa.BY_MNEMONIC[mnemonic].roles[0]


def _wrap32(x):
    return ((np.asarray(x, dtype=np.int64) + (1 << 31)) % (1 << 32)) - (1 << 31)


class Program:
    """Stimulus for one run (instructions and stream slots) and its expected behaviour."""

    def __init__(self, params):
        self.p = params
        self.instrs = {}             # (cycle, role) -> (mnemonic, fields)
        self.slots = {}              # (cycle, superlane, dir, stream) -> uint8[lanes]

    # -- stimulus --------------------------------------------------------------------------
    def issue(self, t, mnemonic, **fields):
        key = (t, _role(mnemonic))
        assert key not in self.instrs, f"two instructions on queue {key[1]} at cycle {t}"
        isa.BY_MNEMONIC[mnemonic].encode(**fields)      # validates the field values
        self.instrs[key] = (mnemonic, fields)

    def put(self, t, direction, stream, vec):
        """Put an int8 vector on a stream with the stagger: superlane c sees its chunk at t+c."""
        p = self.p
        vec = np.asarray(vec)
        assert vec.shape == (p.vl,)
        for c in range(p.superlanes):
            key = (t + c, c, int(direction), stream)
            assert key not in self.slots, f"slot {key} written twice"
            self.slots[key] = vec[c * p.lanes:(c + 1) * p.lanes].astype(np.int8).view(np.uint8)

    def lw(self, t, row, vec, stream=0, direction=WEST):
        self.put(t, direction, stream, vec)
        self.issue(t, "LW", row=row, stream=stream, dir=int(direction))

    def lwt(self, t, col, vec, stream=0, direction=WEST):
        """LWT: lane n of ``vec`` becomes weight W[n][col]."""
        self.put(t, direction, stream, vec)
        self.issue(t, "LWT", col=col, stream=stream, dir=int(direction))

    def lww(self, t, row, vecs, stream=0, direction=WEST):
        """LWW: ``vecs[i]`` on stream ``stream + i`` becomes weight row ``row + i``."""
        for i, vec in enumerate(vecs):
            self.put(t, direction, stream + i, vec)
        self.issue(t, "LWW", row=row, stream=stream, dir=int(direction), count=len(vecs))

    def abc(self, t, acc, x, accumulate=0, stream=1, direction=WEST):
        self.put(t, direction, stream, x)
        self.issue(t, "ABC", acc=acc, stream=stream, dir=int(direction), accumulate=accumulate)

    def acc(self, t, acc, group=0, direction=EAST):
        self.issue(t, "ACC", acc=acc, group=group, dir=int(direction))

    @property
    def last_cycle(self):
        return max(max(t for t, _ in self.instrs), max(k[0] for k in self.slots))

    # -- expected behaviour (every superlane, docs/architecture.md) ------------------------------
    def _chunk(self, t, c, fields):
        """The int8 chunk superlane c samples for an instruction issued at t (0 if unwritten)."""
        chunk = self.slots.get((t + c, c, fields["dir"], fields["stream"]))
        if chunk is None:
            return np.zeros(self.p.lanes, dtype=np.int64)
        return chunk.view(np.int8).astype(np.int64)

    def expected(self, n_cycles):
        """Returns (drives, errors, acc_reads).

        drives: {(cycle, superlane, dir, stream): uint8[lanes]}
        errors: int per cycle; acc_reads: {issue cycle of a good ACC: int32[VL]}
        """
        p = self.p
        d_func = isa.BY_MNEMONIC["ABC"].d_func(p)
        depth, vl, lanes, S = p.mxm_acc_words, p.vl, p.lanes, p.superlanes
        shadow = np.zeros((vl, vl), dtype=np.int64)      # [n][k]: superlane c holds k in chunk c
        active = np.zeros((vl, vl), dtype=np.int64)
        partial = {}                                      # ABC issue cycle -> partial sums
        accm = np.zeros((depth, vl), dtype=np.int64)
        writes = defaultdict(list)
        drives, acc_reads = {}, {}
        errors = [0] * n_cycles

        def flag(cycle, f):
            if cycle < n_cycles:
                errors[cycle] |= int(f)

        def check_stream(t, fields):
            if fields["stream"] >= p.streams:
                flag(t, isa.ErrorFlag.ADDR_RANGE)
                return
            for c in range(p.superlanes):
                if (t + c, c, fields["dir"], fields["stream"]) not in self.slots:
                    flag(t + c, isa.ErrorFlag.STREAM_UNWRITTEN)

        for t in range(n_cycles):
            ins = {role: self.instrs.get((t, role)) for role in isa.QUEUE_ROLES["mxm"]}
            # checks at issue (superlane 0); STREAM_UNWRITTEN at t + c
            if ins["compute"]:
                _, f = ins["compute"]
                check_stream(t, f)
                if f["acc"] >= depth:
                    flag(t, isa.ErrorFlag.ADDR_RANGE)
                partial[t] = np.zeros(vl, dtype=np.int64)
            if ins["weights"] and ins["weights"][0] in ("LW", "LWT"):
                mnemonic, f = ins["weights"]
                check_stream(t, f)
                if f["row" if mnemonic == "LW" else "col"] >= vl:
                    flag(t, isa.ErrorFlag.ADDR_RANGE)
            if ins["weights"] and ins["weights"][0] == "LWW":
                f = ins["weights"][1]
                if f["row"] + f["count"] > vl or f["stream"] + f["count"] > p.streams:
                    flag(t, isa.ErrorFlag.ADDR_RANGE)            # samples, writes nothing
                else:
                    for j in range(f["count"]):
                        check_stream(t, dict(f, stream=f["stream"] + j))
            # superlane c executes what was issued at t - c; register updates happen at the
            # edge ending cycle t: ABC (and IW) see the weights before that edge
            lw_writes, lwt_writes, iw_copies = [], [], []
            for c in range(S):
                ks = slice(c * lanes, (c + 1) * lanes)
                comp = self.instrs.get((t - c, "compute"))
                if comp and t - c in partial:
                    _, f = comp
                    partial[t - c] += active[:, ks] @ self._chunk(t - c, c, f)
                    if c == S - 1:
                        writes[t - c + d_func].append((f["acc"], partial.pop(t - c),
                                                       f["accumulate"]))
                wt = self.instrs.get((t - c, "weights"))
                if wt:
                    mnemonic, f = wt
                    if mnemonic == "LW" and f["row"] < vl:
                        lw_writes.append((f["row"], ks, self._chunk(t - c, c, f)))
                    elif (mnemonic == "LWW" and f["row"] + f["count"] <= vl
                          and f["stream"] + f["count"] <= p.streams):
                        for j in range(f["count"]):      # row + j from stream + j, as LWs
                            lw_writes.append((f["row"] + j, ks, self._chunk(
                                t - c, c, dict(f, stream=f["stream"] + j))))
                    elif mnemonic == "LWT" and f["col"] < vl:
                        lwt_writes.append((ks, f["col"], self._chunk(t - c, c, f)))
                    elif mnemonic == "IW":
                        iw_copies.append(ks)
            # accumulator updates of cycle t are visible to an ACC of cycle t
            for row, y, accumulate in writes.pop(t, []):
                if row < depth:
                    accm[row] = _wrap32(accm[row] + y if accumulate else y)
            if ins["result"]:
                _, f = ins["result"]
                if f["acc"] >= depth or f["group"] >= p.stream_groups:
                    flag(t, isa.ErrorFlag.ADDR_RANGE)         # faulty: drives nothing
                else:
                    value = acc_reads[t] = accm[f["acc"]].copy()
                    for c in range(p.superlanes):
                        lane32 = value[c * lanes:(c + 1) * lanes]
                        for b in range(4):
                            drives[(t + 1 + c, c, f["dir"], 4 * f["group"] + b)] = (
                                (lane32 >> (8 * b)) & 0xFF).astype(np.uint8)
            # the edge: IW copies the old shadow; an LWT wins over an LW on the same byte
            for ks in iw_copies:
                active[:, ks] = shadow[:, ks]
            for row, ks, chunk in lw_writes:
                shadow[row, ks] = chunk
            for rows, col, chunk in lwt_writes:
                shadow[rows, col] = chunk
        assert not writes or min(writes) >= n_cycles, "run too short for the last ABC"
        return drives, errors, acc_reads


def simulate(params, program, n_cycles):
    """Run ``program`` for ``n_cycles``; returns (drives with en=1, error word per cycle)."""
    p = params
    dut = MxmSlice(p, p.slice("mxm_w"))
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    drives, errors = {}, []
    columns = {EAST: dut.sr_east_in, WEST: dut.sr_west_in}
    outputs = {EAST: dut.drive_east, WEST: dut.drive_west}
    idle = [0] * p.lanes
    deadline = time.monotonic() + SIM_WALL_LIMIT

    async def bench(ctx):
        for t in range(n_cycles):
            assert time.monotonic() < deadline, f"simulation exceeded {SIM_WALL_LIMIT} s at cycle {t}"
            for role in isa.QUEUE_ROLES["mxm"]:
                port = getattr(dut, f"instr_{role}")
                ins = program.instrs.get((t, role))
                ctx.set(port.valid, ins is not None)
                ctx.set(port.word, 0 if ins is None else isa.BY_MNEMONIC[ins[0]].encode(**ins[1]))
            for d, column in columns.items():
                value = []
                for c in range(p.superlanes):
                    row = []
                    for s in range(p.streams):
                        chunk = program.slots.get((t, c, int(d), s))
                        row.append({"data": idle if chunk is None else [int(v) for v in chunk],
                                    "valid": chunk is not None})
                    value.append(row)
                ctx.set(column, value)
            errors.append(ctx.get(dut.error))
            for d, port in outputs.items():
                out = ctx.get(port)
                for c in range(p.superlanes):
                    for s in range(p.streams):
                        if out[c][s].en:
                            drives[(t, c, int(d), s)] = np.array(
                                [out[c][s].data[n] for n in range(p.lanes)], dtype=np.uint8)
            await ctx.tick()

    sim.add_testbench(bench)
    sim.run()
    return drives, errors


def run_and_check(params, program, tail=2):
    """Simulate past the last expected event and compare every output lane and error bit."""
    p = params
    n_cycles = program.last_cycle + isa.BY_MNEMONIC["ABC"].d_func(p) + 2 * p.superlanes + tail
    exp_drives, exp_errors, acc_reads = program.expected(n_cycles)
    got_drives, got_errors = simulate(p, program, n_cycles)

    assert got_errors == exp_errors, "error flags differ: " + ", ".join(
        f"cycle {t}: got {g:#x} expected {e:#x}"
        for t, (g, e) in enumerate(zip(got_errors, exp_errors)) if g != e)
    assert set(got_drives) == set(exp_drives), (
        f"driven slots differ: unexpected {sorted(set(got_drives) - set(exp_drives))[:8]}, "
        f"missing {sorted(set(exp_drives) - set(got_drives))[:8]}")

    # reassemble every int32 lane of every ACC from its 4 byte streams and compare
    checked = 0
    for (t, c, d, s), want in exp_drives.items():
        got = got_drives[(t, c, d, s)]
        assert np.array_equal(got, want), (
            f"cycle {t} superlane {c} dir {d} stream {s}: got {got.tolist()} expected {want.tolist()}")
        checked += 1
    for t, value in acc_reads.items():
        ins = program.instrs[(t, "result")][1]
        got = np.zeros(p.vl, dtype=np.int64)
        for c in range(p.superlanes):
            for b in range(4):
                raw = got_drives[(t + 1 + c, c, ins["dir"], 4 * ins["group"] + b)].astype(np.int64)
                got[c * p.lanes:(c + 1) * p.lanes] |= raw << (8 * b)
        assert np.array_equal(_wrap32(got), value), f"ACC issued at {t}: got {_wrap32(got)} expected {value}"
    return checked, acc_reads


def weight_matrix(rng, vl, kind="random"):
    """W[k][n] as int8 values; LW row n loads column n (the weights of output lane n)."""
    return int8_operands(rng, (vl, vl), kind)


def load_weights(prog, t0, W, stream=0, direction=WEST):
    for n in range(W.shape[1]):
        prog.lw(t0 + n, n, W[:, n], stream=stream, direction=direction)
    return t0 + W.shape[1]


# -- tests ---------------------------------------------------------------------------------------

def matmul_program(p, seed):
    """LW x VL, IW, overwrite/accumulate ABCs (back to back), double-buffered weights, ACCs.

    Returns the program and the list of (ACC issue cycle, expected int32[VL]) computed directly
    with numpy as an independent cross-check of the timing model.
    """
    rng = np.random.default_rng(seed)
    vl = p.vl
    d = isa.BY_MNEMONIC["ABC"].d_func(p)
    groups = p.stream_groups
    W1 = weight_matrix(rng, vl)
    W1[:, 0] = -128                          # edge columns: extreme products
    W1[:, 1] = 127
    W2 = weight_matrix(rng, vl)
    W2[:, 2] = 0
    W2[:, 3] = 1
    xs = [int8_operands(rng, vl) for _ in range(3)] + [int8_operands(rng, vl, k) for k in EDGE_KINDS]
    xmm = lambda x, W: x.astype(np.int32) @ W.astype(np.int32)   # noqa: E731
    prog = Program(p)
    checks = []

    t = load_weights(prog, 0, W1, stream=0, direction=WEST)      # LW x VL on the west stream
    prog.issue(t, "IW")
    t += 1
    # ABCs with W1 (row 0: overwrite then two back-to-back accumulates; rows 1..: edge vectors),
    # while the next weights are loaded into the shadow buffer from the east stream.
    t_abc = t
    prog.abc(t_abc + 0, 0, xs[0], accumulate=0)
    prog.abc(t_abc + 1, 0, xs[1], accumulate=1)
    prog.abc(t_abc + 2, 0, xs[2], accumulate=1, direction=EAST, stream=2)
    for i, kind_x in enumerate(xs[3:]):
        prog.abc(t_abc + 3 + i, 1 + i, kind_x, accumulate=0, stream=1 + i % 3)
    # min x min accumulated back to back on row 5 (largest products)
    prog.abc(t_abc + 7, 5, xs[3], accumulate=0)
    prog.abc(t_abc + 8, 5, xs[3], accumulate=1)
    t_w2 = load_weights(prog, t_abc, W2, stream=3, direction=EAST)
    last_w1 = t_abc + 8
    row0 = xmm(xs[0], W1) + xmm(xs[1], W1) + xmm(xs[2], W1)
    row5 = xmm(xs[3], W1) * 2

    # IW in the same cycle as an ABC: that ABC still uses W1; the next one uses W2.
    t_iw = max(t_w2, last_w1 + 1)
    prog.issue(t_iw, "IW")
    prog.abc(t_iw, 6, xs[0], accumulate=0)
    prog.abc(t_iw + 1, 7, xs[0], accumulate=0)
    prog.abc(t_iw + 2, 5, xs[4], accumulate=1)            # W2 accumulated onto W1 results
    prog.abc(t_iw + 3, 0, xs[6], accumulate=0)            # overwrite row 0 (ones x W2)
    row5 = row5 + xmm(xs[4], W2)

    # ACCs: one issued exactly when the row-0 accumulate lands (transparent read), one a cycle
    # before (sees the previous value), then every row; spread over directions and groups.
    t_row0_done = t_abc + 2 + d
    t_acc = t_row0_done - 1
    prog.acc(t_acc, 0, group=0, direction=EAST)
    checks.append((t_acc, xmm(xs[0], W1) + xmm(xs[1], W1)))
    prog.acc(t_acc + 1, 0, group=groups - 1, direction=WEST)
    checks.append((t_acc + 1, row0))
    t = t_iw + 3 + d + 1
    final = {1: xmm(xs[3], W1), 2: xmm(xs[4], W1), 3: xmm(xs[5], W1), 4: xmm(xs[6], W1),
             5: row5, 6: xmm(xs[0], W1), 7: xmm(xs[0], W2), 0: xmm(xs[6], W2)}
    for i, (row, value) in enumerate(sorted(final.items())):
        prog.acc(t + i, row, group=i % groups, direction=(EAST, WEST)[i % 2])
        checks.append((t + i, value))
    return prog, checks


def check_matmul(p, seed):
    prog, checks = matmul_program(p, seed)
    _, exp_errors, _ = prog.expected(prog.last_cycle + 1)
    assert not any(exp_errors)               # a good program: run_and_check then wants all zero
    checked, acc_reads = run_and_check(p, prog)
    for t, value in checks:                   # numpy directly, independent of the timing model
        assert np.array_equal(acc_reads[t], value.astype(np.int64)), f"ACC at {t}"
    assert checked == len(acc_reads) * 4 * p.superlanes
    return checked


@pytest.mark.timeout(120)
def test_matmul_sequence(params):
    check_matmul(params, seed=1)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name,stages", [("tiny", 1), ("tiny", 2), ("quad", 1), ("quad", 3)])
def test_pipeline_stages_keep_latency(name, stages):
    p = dataclasses.replace(preset(name), mxm_pipeline=stages)
    assert isa.BY_MNEMONIC["ABC"].d_func(p) == p.superlanes + stages
    check_matmul(p, seed=2 + stages)


@pytest.mark.timeout(120)
def test_back_to_back_accumulate_every_cycle(params):
    """A long run of accumulating ABCs to one row, read back while it is being updated."""
    p = params
    rng = np.random.default_rng(7)
    W = weight_matrix(rng, p.vl)
    prog = Program(p)
    t = load_weights(prog, 0, W)
    prog.issue(t, "IW")
    xs = [int8_operands(rng, p.vl) for _ in range(12)]
    t0 = t + 1
    for i, x in enumerate(xs):
        prog.abc(t0 + i, 3, x, accumulate=int(i > 0))
    d = isa.BY_MNEMONIC["ABC"].d_func(p)
    for i in range(len(xs)):                 # ACC every cycle while the updates land
        prog.acc(t0 + d + i, 3, group=i % p.stream_groups)
    _, acc_reads = run_and_check(p, prog)
    running = np.zeros(p.vl, dtype=np.int64)
    for i, x in enumerate(xs):
        running = running + x.astype(np.int32) @ W.astype(np.int32)
        assert np.array_equal(acc_reads[t0 + d + i], running)


@pytest.mark.timeout(120)
def test_int32_wraparound():
    """Accumulate -128 x -128 products until the int32 accumulator wraps (tiny: VL * 2**14 per ABC)."""
    p = preset("tiny")
    vl = p.vl
    d = isa.BY_MNEMONIC["ABC"].d_func(p)
    vec = int8_operands(None, vl, "min")
    per_abc = vec.astype(np.int64) @ np.outer(vec, np.ones(vl, dtype=np.int64))  # W = all -128
    n_abc = (1 << 31) // int(per_abc[0]) + 5                 # enough to pass 2**31
    expected = _wrap32(n_abc * per_abc)
    assert np.all(expected < 0)
    dut = MxmSlice(p, p.slice("mxm_w"))
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    lw, abc, acc = (isa.BY_MNEMONIC[m] for m in ("LW", "ABC", "ACC"))
    got = np.zeros(vl, dtype=np.int64)
    deadline = time.monotonic() + SIM_WALL_LIMIT
    errors = []

    async def bench(ctx):
        chunk = [int(v) for v in vec[:p.lanes].astype(np.int8).view(np.uint8)]
        slot = {"data": chunk, "valid": 1}                 # every stream holds the vector always
        ctx.set(dut.sr_west_in, [[slot] * p.streams] * p.superlanes)
        for n in range(vl):                                # LW row n at cycle n
            ctx.set(dut.instr_weights.valid, 1)
            ctx.set(dut.instr_weights.word, lw.encode(row=n, stream=0, dir=int(WEST)))
            await ctx.tick()
        ctx.set(dut.instr_weights.word, isa.BY_MNEMONIC["IW"].encode())
        await ctx.tick()
        ctx.set(dut.instr_weights.valid, 0)
        ctx.set(dut.instr_compute.valid, 1)
        ctx.set(dut.instr_compute.word, abc.encode(acc=0, stream=1, dir=int(WEST), accumulate=0))
        await ctx.tick()
        ctx.set(dut.instr_compute.word, abc.encode(acc=0, stream=1, dir=int(WEST), accumulate=1))
        for i in range(1, n_abc):
            if i % 1024 == 0:
                assert time.monotonic() < deadline, "simulation exceeded the wall-clock limit"
                errors.append(ctx.get(dut.error))
            await ctx.tick()
        ctx.set(dut.instr_compute.valid, 0)
        await ctx.tick().repeat(d - 1)                     # ACC issued at last ABC + d_func
        ctx.set(dut.instr_result.valid, 1)
        ctx.set(dut.instr_result.word, acc.encode(acc=0, group=0, dir=int(EAST)))
        await ctx.tick()
        ctx.set(dut.instr_result.valid, 0)
        for c in range(p.superlanes):                      # superlane c drives at t_acc + 1 + c
            out = ctx.get(dut.drive_east)
            for b in range(4):
                assert out[c][b].en
                for n in range(p.lanes):
                    got[c * p.lanes + n] |= out[c][b].data[n] << (8 * b)
            await ctx.tick()

    sim.add_testbench(bench)
    sim.run()
    assert not any(errors)
    assert np.array_equal(_wrap32(got), expected), f"got {_wrap32(got)} expected {expected}"


@pytest.mark.timeout(120)
def test_errors(params):
    p = params
    rng = np.random.default_rng(3)
    W = weight_matrix(rng, p.vl)
    x = int8_operands(rng, p.vl)
    depth = p.mxm_acc_words
    prog = Program(p)
    t = load_weights(prog, 0, W)
    prog.issue(t, "IW")
    prog.abc(t + 1, 0, x)                                      # good
    prog.lw(t + 2, p.vl, x, stream=3)                           # row out of range

    prog.issue(t + 3, "LW", row=0, stream=1, dir=int(EAST))     # nothing on the stream
    prog.put(t + 4, WEST, 2, x)
    del prog.slots[(t + 4 + p.superlanes - 1, p.superlanes - 1, int(WEST), 2)]
    prog.issue(t + 4, "ABC", acc=1, stream=2, dir=int(WEST), accumulate=0)  # top chunk missing
    if p.streams < 32:                                          # stream beyond the column
        prog.issue(t + 5, "ABC", acc=2, stream=p.streams, dir=int(WEST), accumulate=0)
        prog.issue(t + 5, "LW", row=1, stream=p.streams, dir=int(EAST))
    if depth < 1024:
        # out of range; the truncated address would alias row 0, which must stay unchanged
        prog.abc(t + 6, depth, int8_operands(rng, p.vl, "max"))
        prog.acc(t + 7, depth)
    if p.stream_groups < 8:                                     # group beyond the streams
        prog.acc(t + 8, 0, group=p.stream_groups)
    t_read = t + 6 + isa.BY_MNEMONIC["ABC"].d_func(p) + 1
    prog.acc(t_read, 0, group=p.stream_groups - 1, direction=WEST)  # good
    _, exp_errors, acc_reads = prog.expected(t_read + 2 * p.superlanes + 4)
    assert any(e & isa.ErrorFlag.ADDR_RANGE for e in exp_errors)
    assert any(e & isa.ErrorFlag.STREAM_UNWRITTEN for e in exp_errors)
    run_and_check(p, prog)
    assert np.array_equal(acc_reads[t_read], x.astype(np.int32) @ W.astype(np.int32))


# -- LWT: transposed weight loads --------------------------------------------------------------

def _sl(n, lanes):
    """Superlane of lane (row) or column index n."""
    return np.asarray(n) // lanes


def _check_acc(acc_reads, checks):
    for t, want in checks:
        assert np.array_equal(acc_reads[t], _wrap32(want)), (
            f"ACC at {t}: got {acc_reads[t].tolist()} expected {_wrap32(want).tolist()}")


def _read_rows(prog, t, values):
    """ACC rows 0.. of ``values`` (expected int32 vectors) from cycle t on; returns checks."""
    p = prog.p
    checks = []
    for i, value in enumerate(values):
        prog.acc(t + i, i, group=i % p.stream_groups, direction=(EAST, WEST)[i % 2])
        checks.append((t + i, value))
    return checks


@pytest.mark.timeout(120)
def test_lwt_matmul(params):
    """Every weight loaded as a column by LWT (random column order, varied streams and
    directions), IW exactly `superlanes` cycles after the last LWT, then ABCs: y = W @ x."""
    p = params
    S, vl = p.superlanes, p.vl
    d = isa.BY_MNEMONIC["ABC"].d_func(p)
    rng = np.random.default_rng(11)
    W = int8_operands(rng, (vl, vl))                 # W[n][k]: output lane n, activation k
    W[:, 0] = -128                                   # edges: extreme products
    W[:, 1] = 127
    W[2, :] = -128
    prog = Program(p)
    for i, k in enumerate(rng.permutation(vl)):
        prog.lwt(i, int(k), W[:, k], stream=i % p.streams, direction=(WEST, EAST)[i % 2])
    t_iw = vl - 1 + S
    prog.issue(t_iw, "IW")
    xs = [int8_operands(rng, vl) for _ in range(3)] + [int8_operands(rng, vl, k) for k in EDGE_KINDS]
    for i, x in enumerate(xs):
        prog.abc(t_iw + 1 + i, i, x, stream=1 + i % 3, direction=(WEST, EAST)[i % 2])
    checks = _read_rows(prog, t_iw + len(xs) + d, [W @ x for x in xs])
    _, exp_errors, _ = prog.expected(prog.last_cycle + 1)
    assert not any(exp_errors)
    _, acc_reads = run_and_check(p, prog)
    _check_acc(acc_reads, checks)


@pytest.mark.timeout(120)
def test_lw_and_lwt_mixed(params):
    """Rows by LW, then columns by LWT over them, then a row by LW again (all >= superlanes
    cycles apart); then the next weights by LWT while ABCs use the installed ones, IW, ABCs
    (one accumulating onto a result of the first weights). Checked against numpy."""
    p = params
    S, vl = p.superlanes, p.vl
    d = isa.BY_MNEMONIC["ABC"].d_func(p)
    rng = np.random.default_rng(12)
    prog = Program(p)
    W1 = int8_operands(rng, (vl, vl))
    for n in range(vl):
        prog.lw(n, n, W1[n], stream=0, direction=WEST)
    t = vl - 1 + S
    cols = sorted(set(range(0, vl, 3)) | {vl - 1})
    C = int8_operands(rng, (vl, len(cols)))
    for i, k in enumerate(cols):
        prog.lwt(t + i, k, C[:, i], stream=1, direction=EAST)
    t += len(cols) - 1 + S
    R = int8_operands(rng, vl, "min")
    prog.lw(t, 1, R, stream=2, direction=WEST)
    Wa = W1.copy()
    Wa[:, cols] = C
    Wa[1] = R
    t_iw = t + S
    prog.issue(t_iw, "IW")
    xs = [int8_operands(rng, vl) for _ in range(4)]
    for i, x in enumerate(xs):
        prog.abc(t_iw + 1 + i, i, x, stream=3)
    # the next weights, by columns, while those ABCs run
    Wb = int8_operands(rng, (vl, vl))
    t_lwt = t_iw + S
    for k in range(vl):
        prog.lwt(t_lwt + k, k, Wb[:, k], stream=4, direction=WEST)
    t_iw2 = t_lwt + vl - 1 + S
    assert t_iw2 > t_iw + len(xs)
    prog.issue(t_iw2, "IW")
    ys = [int8_operands(rng, vl) for _ in range(2)]
    for i, x in enumerate(ys):
        prog.abc(t_iw2 + 1 + i, 4 + i, x, stream=3)
    prog.abc(t_iw2 + 3, 0, ys[0], accumulate=1, stream=2, direction=EAST)
    want = [Wa @ x for x in xs] + [Wb @ x for x in ys]
    want[0] = want[0] + Wb @ ys[0]
    checks = _read_rows(prog, t_iw2 + 3 + d + 1, want)
    _, exp_errors, _ = prog.expected(prog.last_cycle + 1)
    assert not any(exp_errors)
    _, acc_reads = run_and_check(p, prog)
    _check_acc(acc_reads, checks)


@pytest.mark.timeout(120)
def test_lwt_per_superlane_timing(params):
    """The per-superlane LWT contract where the superlane-0 frame does not hold (the reference
    model refuses the IW cases with ScheduleHazard): superlane c writes rows [c*L, (c+1)*L) of
    the column at t + c into superlane col // L, which an IW copies at t_iw + col // L; an LW
    writes row n of superlane c at t + c; the later write of a byte wins, the LWT on a tie.
    Expected weights from these closed formulas in numpy."""
    p = params
    S, L, vl = p.superlanes, p.lanes, p.vl
    d = isa.BY_MNEMONIC["ABC"].d_func(p)
    rng = np.random.default_rng(13)
    rows = np.arange(vl)
    prog = Program(p)
    W0 = int8_operands(rng, (vl, vl))
    for n in range(vl):
        prog.lw(n, n, W0[n])
    prog.issue(vl, "IW")
    shadow = W0.copy()
    want = []
    # 1: an IW 3, 2 and 1 cycles after three LWTs (columns in the last, second, first
    # superlane): the IW installs the rows of the last ones only partly
    t = vl + S
    cols = [vl - 1, min(L + 2, vl - 2), 1]
    new = int8_operands(rng, (vl, len(cols)))
    t_iw = t + len(cols)
    installed = shadow.copy()
    for i, col in enumerate(cols):
        prog.lwt(t + i, col, new[:, i], stream=1)
        seen = t + i + _sl(rows, L) < t_iw + col // L      # written before the IW's copy
        installed[seen, col] = new[seen, i]
        shadow[:, col] = new[:, i]
    assert (installed != shadow).any(), "the case must install a partial column"
    prog.issue(t_iw, "IW")
    x = int8_operands(rng, vl)
    prog.abc(t_iw + 1, 0, x)
    want.append(installed @ x)
    # 2: IW again later (the whole columns), and an LWT the cycle after it
    t_b = t_iw + S
    prog.issue(t_b, "IW")
    col2, v2 = vl - 1, int8_operands(rng, vl)
    prog.lwt(t_b + 1, col2, v2, stream=2, direction=EAST)
    installed = shadow.copy()
    seen = t_b + 1 + _sl(rows, L) < t_b + col2 // L
    installed[seen, col2] = v2[seen]
    shadow[:, col2] = v2
    x = int8_operands(rng, vl)
    prog.abc(t_b + 1, 1, x)
    want.append(installed @ x)
    # 3: an LWT then LWs across it one, two, three cycles later, then an LW then an LWT
    t3 = t_b + 1 + S
    col3, v3 = 0, int8_operands(rng, vl)
    prog.lwt(t3, col3, v3, stream=3)
    shadow[:, col3] = v3
    writes = []                                      # (t_lw, row, vec)
    for i, n in enumerate(sorted({min(L, vl - 1), 0, vl - 1})):
        vec = int8_operands(rng, vl)
        prog.lw(t3 + 1 + i, n, vec, stream=4)
        writes.append((t3 + 1 + i, n, vec, t3, col3, v3))
    t4 = t3 + 1 + len(writes) + 1
    n4, col4, v4 = min(2, vl - 1), vl - 1, int8_operands(rng, vl)
    vec4 = int8_operands(rng, vl)
    prog.lw(t4, n4, vec4, stream=5)
    prog.lwt(t4 + 1, col4, v4, stream=6)
    for t_lw, n, vec, t_lt, col, v in writes:      # frame order: the later instruction wins
        shadow[n] = vec
    shadow[n4] = vec4
    shadow[:, col4] = v4
    writes.append((t4, n4, vec4, t4 + 1, col4, v4))
    for t_lw, n, vec, t_lt, col, v in writes:      # the byte both write: the later edge wins
        lwt_wins = t_lt + n // L >= t_lw + col // L
        shadow[n, col] = v[n] if lwt_wins else vec[col]
    t_iw3 = t4 + 1 + S
    prog.issue(t_iw3, "IW")
    x = int8_operands(rng, vl)
    prog.abc(t_iw3 + 1, 2, x)
    want.append(shadow @ x)
    checks = _read_rows(prog, t_iw3 + 1 + d + 1, want)
    _, acc_reads = run_and_check(p, prog)
    _check_acc(acc_reads, checks)


@pytest.mark.timeout(120)
def test_lwt_errors(params):
    """LWT col >= VL: ADDR_RANGE, writes nothing (no aliasing); stream >= streams: ADDR_RANGE,
    loads a zero column; a missing chunk: STREAM_UNWRITTEN at t + c, zeros in those rows."""
    p = params
    S, L, vl = p.superlanes, p.lanes, p.vl
    d = isa.BY_MNEMONIC["ABC"].d_func(p)
    rng = np.random.default_rng(14)
    prog = Program(p)
    W = int8_operands(rng, (vl, vl))
    for k in range(vl):
        prog.lwt(k, k, W[:, k])
    t = vl
    prog.lwt(t, vl, int8_operands(rng, vl, "max"), stream=1)             # column out of range
    prog.lwt(t + 1, vl + 1, int8_operands(rng, vl, "max"), stream=1)
    prog.lwt(t + 2, 511, int8_operands(rng, vl, "max"), stream=1)        # largest field value
    t += 3
    if p.streams < 32:                                                  # stream beyond the column
        prog.issue(t, "LWT", col=2, stream=p.streams, dir=int(EAST))
        W[:, 2] = 0
    t += 1
    v = int8_operands(rng, vl)
    prog.lwt(t, 3, v, stream=2)
    del prog.slots[(t + S - 1, S - 1, int(WEST), 2)]                    # top chunk missing
    W[:, 3] = v
    W[(S - 1) * L:, 3] = 0
    prog.issue(t + S, "IW")
    x = int8_operands(rng, vl)
    prog.abc(t + S + 1, 0, x)
    checks = _read_rows(prog, t + S + 1 + d, [W @ x])
    _, exp_errors, _ = prog.expected(prog.last_cycle + 1)
    assert exp_errors[vl] & isa.ErrorFlag.ADDR_RANGE
    assert exp_errors[t + S - 1] & isa.ErrorFlag.STREAM_UNWRITTEN
    _, acc_reads = run_and_check(p, prog)
    _check_acc(acc_reads, checks)


# -- LWW: wide weight loads ----------------------------------------------------------------------

@pytest.mark.timeout(120)
def test_lww_full_plane(params):
    """The whole VL x VL plane by LWWs of the chip's widest count (``isa.wide_load_max_rows``)
    on consecutive cycles, from both directions and shifted first streams, the last rows by a
    narrower LWW and a count-1 LWW from the last stream; IW right after; ABCs with edge and
    random activations: y = W @ x (numpy)."""
    p = params
    S, vl, K = p.superlanes, p.vl, isa.wide_load_max_rows(p)
    d = isa.BY_MNEMONIC["ABC"].d_func(p)
    rng = np.random.default_rng(21)
    W = int8_operands(rng, (vl, vl))                 # W[n][k]: row n = output lane n
    W[0] = -128                                      # edge rows: extreme products
    W[1] = 127
    W[2, ::2] = 0
    W[vl - 1] = 1
    prog = Program(p)
    t, row = 0, 0
    while vl - row > K:                              # full-width LWWs
        prog.lww(t, row, W[row:row + K], stream=0, direction=(WEST, EAST)[t % 2])
        t, row = t + 1, row + K
    n = vl - row - 1                                 # a narrower one, then one row
    if n:
        prog.lww(t, row, W[row:row + n], stream=p.streams - n - 1, direction=WEST)
        t += 1
    prog.lww(t, vl - 1, W[vl - 1:], stream=p.streams - 1, direction=EAST)
    assert t + 1 <= -(-vl // K) + 1                  # ceil(VL / K) cycles, plus the split row
    prog.issue(t + 1, "IW")
    xs = [int8_operands(rng, vl) for _ in range(2)] + [int8_operands(rng, vl, k) for k in EDGE_KINDS]
    for i, x in enumerate(xs):
        prog.abc(t + 2 + i, i, x, stream=1 + i % 3, direction=(WEST, EAST)[i % 2])
    checks = _read_rows(prog, t + 2 + len(xs) + d, [W @ x for x in xs])
    _, exp_errors, _ = prog.expected(prog.last_cycle + 1)
    assert not any(exp_errors)
    _, acc_reads = run_and_check(p, prog)
    _check_acc(acc_reads, checks)
    assert S >= 1


@pytest.mark.timeout(120)
def test_lww_with_lw_lwt_iw(params):
    """LWW rows over LW rows (the later load wins), an LWW S cycles after an LWT on the same
    bytes, an LWW and an LWT fewer than S cycles apart (the byte both write goes to the later
    RTL edge, LWT on a tie, as for LW), an LWW in the cycle after an IW (not installed), and
    ABCs on both installed planes. Expected from closed formulas in numpy."""
    p = params
    S, L, vl, K = p.superlanes, p.lanes, p.vl, isa.wide_load_max_rows(p)
    d = isa.BY_MNEMONIC["ABC"].d_func(p)
    rng = np.random.default_rng(22)
    prog = Program(p)
    W0 = int8_operands(rng, (vl, vl))
    for n in range(vl):
        prog.lw(n, n, W0[n], stream=0)
    prog.issue(vl, "IW")
    shadow = W0.copy()
    t = vl + 1
    k = min(K, 3)
    R = int8_operands(rng, (k, vl))
    prog.lww(t, 1, R, stream=1, direction=EAST)                    # over rows 1..k
    shadow[1:1 + k] = R
    t += S
    col, v = vl - 1, int8_operands(rng, vl)
    prog.lwt(t, col, v, stream=2)
    shadow[:, col] = v
    t += S
    R2 = int8_operands(rng, (k, vl))
    prog.lww(t, vl - k, R2, stream=p.streams - k)                  # rows over that column
    shadow[vl - k:] = R2
    t += 1
    # an LWT of column 0 one cycle after an LWW of the rows 0..k-1 (both in flight)
    R3 = int8_operands(rng, (k, vl))
    v3 = int8_operands(rng, vl, "min")
    prog.lww(t, 0, R3, stream=0, direction=EAST)
    prog.lwt(t + 1, 0, v3, stream=3, direction=WEST)
    shadow[:k] = R3
    shadow[:, 0] = v3
    for n in range(k):                  # LWW writes (n, 0) at t + 0; LWT at t + 1 + n // L
        lwt_wins = t + 1 + n // L >= t + 0 // L
        shadow[n, 0] = v3[n] if lwt_wins else R3[n, 0]
    t_iw = t + 1 + S
    prog.issue(t_iw, "IW")
    installed = shadow.copy()
    R4 = int8_operands(rng, (k, vl), "max")
    prog.lww(t_iw + 1, 0, R4, stream=3, direction=EAST)            # after the IW: shadow only
    shadow[:k] = R4
    xs = [int8_operands(rng, vl) for _ in range(2)]
    prog.abc(t_iw, 0, xs[0], stream=7 % p.streams)                 # with the IW: old weights
    prog.abc(t_iw + 1, 1, xs[0])
    t_iw2 = t_iw + 2
    prog.issue(t_iw2, "IW")
    prog.abc(t_iw2 + 1, 2, xs[1])
    want = [W0 @ xs[0], installed @ xs[0], shadow @ xs[1]]
    checks = _read_rows(prog, t_iw2 + 1 + d + 1, want)
    _, exp_errors, _ = prog.expected(prog.last_cycle + 1)
    assert not any(exp_errors)
    _, acc_reads = run_and_check(p, prog)
    _check_acc(acc_reads, checks)


@pytest.mark.timeout(120)
def test_lww_errors(params):
    """LWW rows past VL or streams past the last: ADDR_RANGE at issue, nothing sampled or
    written (no row aliasing); a missing chunk of one of its streams: STREAM_UNWRITTEN at
    t + c and zeros in that row's chunk; count 0 cannot be encoded (the ICU's BAD_INSTRUCTION)."""
    p = params
    S, L, vl, K = p.superlanes, p.lanes, p.vl, isa.wide_load_max_rows(p)
    d = isa.BY_MNEMONIC["ABC"].d_func(p)
    rng = np.random.default_rng(23)
    prog = Program(p)
    W = int8_operands(rng, (vl, vl))
    for n in range(vl):
        prog.lw(n, n, W[n])
    t = vl
    big = int8_operands(rng, (2, vl), "max")
    prog.lww(t, vl - 1, big, stream=0)                                  # row vl - 1 + 1 = vl
    prog.issue(t + 1, "LWW", row=511, stream=0, dir=int(WEST), count=1)  # largest row field
    prog.lww(t + 2, 0, big, stream=p.streams - 1)                       # streams past the last
    prog.issue(t + 3, "LWW", row=0, stream=0, dir=int(EAST), count=min(63, vl + 1))
    t += 4
    n = min(K, 3)
    R = int8_operands(rng, (n, vl))
    prog.lww(t, 2, R, stream=1, direction=EAST)
    del prog.slots[(t + S - 1, S - 1, int(EAST), 1 + n - 1)]           # top chunk of the last
    W[2:2 + n] = R
    W[2 + n - 1, (S - 1) * L:] = 0
    prog.issue(t + 1, "IW")
    x = int8_operands(rng, vl)
    prog.abc(t + 2, 0, x)
    checks = _read_rows(prog, t + 2 + d, [W @ x])
    _, exp_errors, _ = prog.expected(prog.last_cycle + 1)
    for c in (vl, vl + 1, vl + 2, vl + 3):
        assert exp_errors[c] & isa.ErrorFlag.ADDR_RANGE
    assert exp_errors[t + S - 1] & isa.ErrorFlag.STREAM_UNWRITTEN
    with pytest.raises(isa.IsaError, match="count=0 out of range"):
        isa.BY_MNEMONIC["LWW"].encode(row=0, stream=0, dir=0, count=0)
    _, acc_reads = run_and_check(p, prog)
    _check_acc(acc_reads, checks)


@pytest.mark.timeout(240)
@pytest.mark.parametrize("name", ["tiny", "quad"])
def test_lww_operand_register(name):
    """With ``mxm_act_reg`` (LWW's stream bytes registered, every MXM update a cycle later) and a
    product register: the LWW tests above unchanged."""
    p = dataclasses.replace(preset(name), mxm_act_reg=True, mxm_pipeline=1)
    test_lww_full_plane(p)
    test_lww_with_lw_lwt_iw(p)
    test_lww_errors(p)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name,stages", [("tiny", 0), ("quad", 1)])
def test_verilog_convert(name, stages):
    p = dataclasses.replace(preset(name), mxm_pipeline=stages)
    dut = MxmSlice(p, p.slice("mxm_w"))
    text = verilog.convert(dut, name="mxm", emit_src=False)
    assert "module mxm" in text
    assert dut.multipliers == p.vl * p.vl


def test_constructor_checks():
    p = preset("tiny")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)   # the rejected objects
        with pytest.raises(ValueError, match="kind 'mxm'"):
            MxmSlice(p, p.slice("mem_w0"))
        with pytest.raises(TypeError, match="LpuParams"):
            MxmSlice("tiny", p.slice("mxm_w"))
        gc.collect()


@pytest.mark.timeout(120)
def test_booth_product_every_operand_pair():
    """``_booth_product`` (``mxm_booth``) equals ``a * w`` for all 65,536 int8 pairs."""
    from amaranth.hdl import Module, Signal, signed
    from openlpu.rtl.mxm import _booth_product
    k = 256                                   # one w per column, all a in parallel
    m = Module()
    a = [Signal(signed(8), name=f"a{i}") for i in range(k)]
    w = Signal(signed(8))
    outs = [Signal(signed(17), name=f"p{i}") for i in range(k)]
    m.d.comb += [o.eq(_booth_product(x, w)) for o, x in zip(outs, a)]
    sim = Simulator(m)
    bad = []

    async def bench(ctx):
        for i, s in enumerate(a):
            ctx.set(s, i - 128)
        for wv in range(-128, 128):
            ctx.set(w, wv)
            got = np.array([ctx.get(o) for o in outs])
            want = (np.arange(-128, 128) * wv)
            bad.extend((int(x), wv) for x in np.nonzero(got != want)[0] - 128)
    sim.add_testbench(bench)
    sim.run()
    assert not bad, f"{len(bad)} wrong products, first (a, w) = {bad[0]}"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name,stages", [("tiny", 0), ("quad", 1)])
def test_booth_matmul(name, stages):
    """The MXM with ``mxm_booth`` computes the same matmul sequence (numpy-checked)."""
    p = dataclasses.replace(preset(name), mxm_booth=True, mxm_pipeline=stages)
    check_matmul(p, seed=11 + stages)
