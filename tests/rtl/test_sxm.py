"""Unit tests of the SXM slice (rtl/sxm.py) in Amaranth's simulator.

The slice is driven directly, cycle by cycle: instructions on its three queues and vectors on
its input SR columns with the superlane stagger. Expected values come from numpy (roll with zero
fill, fancy indexing, block transposes) and from the timing rule of docs/architecture.md with the
latencies of the ISA table, never from the RTL. Every lane of every driven slot and the error
word of every cycle are compared.
"""

import gc
import time
import warnings

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.hdl import UnusedElaboratable

from openlpu import isa
from openlpu.params import SliceInfo, preset
from openlpu.rtl.sxm import SxmSlice
from openlpu.rtl.testing import pack_column, run_sim, unpack_drive

from ..conftest import int8_operands

EAST, WEST = isa.Dir.EAST, isa.Dir.WEST
SIM_WALL_LIMIT = 300.0         # seconds per simulator run: catches a hang, generous for a loaded machine
F = isa.ErrorFlag


def sxm_info(p):
    """The SXM slice of the floorplan, or a stand-alone one if the floorplan has none."""
    for s in p.floorplan:
        if s.kind == "sxm":
            return s
    return SliceInfo("sxm_w", "sxm", 1, "west", 0)


def _role(mnemonic):
    return isa.BY_MNEMONIC[mnemonic].roles[0]


def d_func(p, mnemonic):
    return isa.BY_MNEMONIC[mnemonic].d_func(p)


def u8(vec):
    return np.asarray(vec, dtype=np.int64).astype(np.int8).view(np.uint8)


def with_edges(rng, vl):
    """A random int8 vector with the edge values -128, 127, 0, 1 at random lanes."""
    x = int8_operands(rng, vl)
    x[rng.choice(vl, size=4, replace=False)] = [-128, 127, 0, 1]
    return x


# -- numpy references ------------------------------------------------------------------------------
def shift_ref(x, amount):
    """np.roll with zero fill: out[l] = x[l - amount]."""
    x = np.asarray(x)
    if abs(amount) >= len(x):
        return np.zeros_like(x)
    y = np.roll(x, amount)
    if amount > 0:
        y[:amount] = 0
    elif amount < 0:
        y[amount:] = 0
    return y


def permute_ref(x, amap):
    x, amap = np.asarray(x), np.asarray(amap, dtype=np.int64)
    ext = np.append(x, 0)                                   # index VL: the zero lane
    return ext[np.where(amap < len(x), amap, len(x))]


def distribute_ref(p, x, amap):
    blocks = np.asarray(x).reshape(p.superlanes, p.lanes)
    maps = np.asarray(amap, dtype=np.int64).reshape(p.superlanes, p.lanes)
    ext = np.concatenate([blocks, np.zeros((p.superlanes, 1), dtype=blocks.dtype)], axis=1)
    return np.take_along_axis(ext, np.where(maps < p.lanes, maps, p.lanes), axis=1).reshape(-1)


def transpose_ref(p, rows):
    """rows[i] (L vectors) -> out[j]: per superlane the transpose of its L x L block."""
    blk = np.asarray(rows).reshape(p.lanes, p.superlanes, p.lanes)     # [i][c][k]
    return blk.transpose(2, 1, 0).reshape(p.lanes, p.vl)               # [j][c][i]


class Program:
    """Stimulus for one run (instructions and stream slots) and its expected behaviour."""

    def __init__(self, params):
        self.p = params
        self.instrs = {}             # (cycle, role) -> (mnemonic, fields)
        self.slots = {}              # (cycle, superlane, dir, stream) -> uint8[lanes]

    def issue(self, t, mnemonic, **fields):
        key = (t, _role(mnemonic))
        assert key not in self.instrs, f"two instructions on queue {key[1]} at cycle {t}"
        isa.BY_MNEMONIC[mnemonic].encode(**fields)          # validates the field values
        self.instrs[key] = (mnemonic, fields)

    def put(self, t, direction, stream, vec):
        """A vector on a stream with the stagger: superlane c sees its chunk at t + c."""
        p = self.p
        vec = u8(vec)
        assert vec.shape == (p.vl,)
        for c in range(p.superlanes):
            key = (t + c, c, int(direction), stream)
            assert key not in self.slots, f"slot {key} written twice"
            self.slots[key] = vec[c * p.lanes:(c + 1) * p.lanes]

    def shift(self, t, x, amount, in_=(0, EAST), out=(1, EAST)):
        self.put(t, in_[1], in_[0], x)
        self.issue(t, "SHIFT", in_stream=in_[0], in_dir=int(in_[1]), out_stream=out[0],
                   out_dir=int(out[1]), amount=amount)

    def permute(self, t, mnemonic, x, amap, in_=(0, EAST), map_=(2, WEST), out=(1, EAST)):
        self.put(t, in_[1], in_[0], x)
        self.put(t, map_[1], map_[0], amap)
        self.issue(t, mnemonic, in_stream=in_[0], in_dir=int(in_[1]), out_stream=out[0],
                   out_dir=int(out[1]), map_stream=map_[0], map_dir=int(map_[1]))

    def transpose(self, t, rows, in_=(3, WEST), out=(4, WEST)):
        for i, row in enumerate(rows):
            self.put(t + i, in_[1], in_[0], row)
        self.issue(t, "TRANSPOSE", in_stream=in_[0], in_dir=int(in_[1]), out_stream=out[0],
                   out_dir=int(out[1]))

    @property
    def last_cycle(self):
        return max(max(t for t, _ in self.instrs), max(k[0] for k in self.slots))

    # -- expected behaviour (docs/sxm.md, timing rule of docs/architecture.md) ------------------
    def expected(self, n_cycles):
        """Returns (drives, collided, errors).

        drives: {(cycle, superlane, dir, stream): uint8[lanes]}; collided: keys driven twice
        (only ``en`` is checked there); errors: ErrorFlag bits per cycle.
        """
        p = self.p
        S, L, VL, NS = p.superlanes, p.lanes, p.vl, p.streams
        drives, collided = {}, set()
        errors = [0] * n_cycles

        def flag(cycle, f):
            assert cycle < n_cycles, f"run too short for a flag at cycle {cycle}"
            errors[cycle] |= int(f)

        def drive(t, direction, stream, vec):
            for c in range(S):
                key = (t + c, c, direction, stream)
                assert key[0] < n_cycles, f"run too short for a drive at cycle {key[0]}"
                if key in drives:
                    collided.add(key)
                    flag(key[0], F.STREAM_COLLISION)
                drives[key] = vec[c * L:(c + 1) * L].copy()

        def sample(t, stream, direction):
            out = np.zeros(VL, dtype=np.uint8)
            if stream >= NS:
                return out
            for c in range(S):
                chunk = self.slots.get((t + c, c, direction, stream))
                if chunk is None:
                    flag(t + c, F.STREAM_UNWRITTEN)
                else:
                    out[c * L:(c + 1) * L] = chunk
            return out

        tr_loading_until = None
        for (t, _), (mn, f) in sorted(self.instrs.items()):
            d = d_func(p, mn)
            if mn == "TRANSPOSE":
                if tr_loading_until is not None and t < tr_loading_until:
                    flag(t, F.BAD_INSTRUCTION)
                    continue
                tr_loading_until = t + L
            streams = [f["in_stream"], f["out_stream"]] + ([f["map_stream"]] if "map_stream" in f else [])
            if max(streams) >= NS:
                flag(t, F.ADDR_RANGE)
            if mn == "TRANSPOSE":
                rows = [sample(t + i, f["in_stream"], f["in_dir"]) for i in range(L)]
                if f["out_stream"] < NS:
                    for j, vec in enumerate(transpose_ref(p, rows)):
                        drive(t + d + j, f["out_dir"], f["out_stream"], vec)
                continue
            x = sample(t, f["in_stream"], f["in_dir"])
            if mn == "SHIFT":
                y = shift_ref(x, f["amount"])
            else:
                amap = sample(t, f["map_stream"], f["map_dir"])
                y = permute_ref(x, amap) if mn == "PERMUTE" else distribute_ref(p, x, amap)
            if f["out_stream"] < NS:
                drive(t + d, f["out_dir"], f["out_stream"], y)
        return drives, collided, errors


def simulate(params, program, n_cycles):
    """Run ``program`` for ``n_cycles``; returns (drives with en=1, error word per cycle)."""
    p = params
    dut = SxmSlice(p, sxm_info(p))
    roles = tuple(dict.fromkeys(_role(mn) for mn in ("SHIFT", "PERMUTE", "DISTRIBUTE", "TRANSPOSE")))
    # packed input columns per cycle and direction
    columns = {}
    for (t, c, d, s), chunk in program.slots.items():
        data, valid = columns.setdefault((t, d), (
            np.zeros((p.superlanes, p.streams, p.lanes), dtype=np.uint8),
            np.zeros((p.superlanes, p.streams), dtype=bool)))
        data[c, s] = chunk
        valid[c, s] = True
    packed = {k: pack_column(p, *v) for k, v in columns.items()}
    inputs = {EAST: dut.sr_east_in.as_value(), WEST: dut.sr_west_in.as_value()}
    outputs = {EAST: dut.drive_east.as_value(), WEST: dut.drive_west.as_value()}
    drives, errors = {}, []
    deadline = time.monotonic() + SIM_WALL_LIMIT

    async def bench(ctx):
        for t in range(n_cycles):
            assert time.monotonic() < deadline, f"simulation exceeded {SIM_WALL_LIMIT} s at cycle {t}"
            for role in roles:
                port = getattr(dut, f"instr_{role}")
                ins = program.instrs.get((t, role))
                ctx.set(port.valid, ins is not None)
                ctx.set(port.word, 0 if ins is None else isa.BY_MNEMONIC[ins[0]].encode(**ins[1]))
            for d, port in inputs.items():
                ctx.set(port, packed.get((t, int(d)), 0))
            errors.append(ctx.get(dut.error))
            for d, port in outputs.items():
                value = ctx.get(port)
                if value:
                    data, en = unpack_drive(p, value)
                    for c, s in zip(*np.nonzero(en)):
                        drives[(t, int(c), int(d), int(s))] = data[c, s].copy()
            await ctx.tick()

    run_sim(dut, bench, max_cycles=n_cycles + 16)
    return drives, errors


def run_and_check(params, program, tail=2):
    """Simulate past the last expected event and compare every output lane and error bit."""
    p = params
    n_cycles = program.last_cycle + max(d_func(p, mn) for mn in ("SHIFT", "TRANSPOSE")) \
        + p.lanes + p.superlanes + tail
    exp_drives, collided, exp_errors = program.expected(n_cycles)
    got_drives, got_errors = simulate(p, program, n_cycles)

    assert got_errors == exp_errors, "error flags differ: " + ", ".join(
        f"cycle {t}: got {g:#x} expected {e:#x}"
        for t, (g, e) in enumerate(zip(got_errors, exp_errors)) if g != e)
    assert set(got_drives) == set(exp_drives), (
        f"driven slots differ: unexpected {sorted(set(got_drives) - set(exp_drives))[:8]}, "
        f"missing {sorted(set(exp_drives) - set(got_drives))[:8]}")
    for key, want in exp_drives.items():
        if key not in collided:
            got = got_drives[key]
            assert np.array_equal(got, want), (
                f"cycle {key[0]} superlane {key[1]} dir {key[2]} stream {key[3]}: "
                f"got {got.tolist()} expected {want.tolist()}")
    return got_drives, exp_errors


def gather(p, drives, t, direction, stream):
    """The int8 vector whose chunk c was driven at t + c (independent of Program.expected)."""
    out = np.zeros(p.vl, dtype=np.uint8)
    for c in range(p.superlanes):
        out[c * p.lanes:(c + 1) * p.lanes] = drives[(t + c, c, int(direction), stream)]
    return out.view(np.int8).astype(np.int64)


def run_good(p, prog):
    _, _, exp_errors = prog.expected(prog.last_cycle + 4 * p.vl)
    assert not any(exp_errors), "test program is expected to be error free"
    got, errors = run_and_check(p, prog)
    assert not any(errors)
    return got


# -- tests -------------------------------------------------------------------------------------------

@pytest.mark.timeout(60)
def test_shift(params):
    """SHIFT by 0, +-1, +-L, +-(VL-1), +-VL, beyond VL and the field limits, one per cycle."""
    p = params
    L, VL = p.lanes, p.vl
    field = next(f for f in isa.BY_MNEMONIC["SHIFT"].fields if f.name == "amount")
    amounts = [0, 1, -1, L, -L, VL - 1, -(VL - 1), VL, -VL, VL + 1, -(VL + 3), field.max,
               field.min, 3, -5]
    rng = np.random.default_rng(11)
    prog = Program(p)
    cases = []
    for k, a in enumerate(amounts):
        x = with_edges(rng, VL)
        in_ = (k % p.streams, (EAST, WEST)[k % 2])
        out = ((k + 3) % p.streams, (EAST, WEST)[(k // 2) % 2])
        prog.shift(2 + k, x, a, in_=in_, out=out)
        cases.append((2 + k, x, a, out))
    got = run_good(p, prog)
    d = d_func(p, "SHIFT")
    for t, x, a, (s, direction) in cases:
        assert np.array_equal(gather(p, got, t + d, direction, s), shift_ref(x, a)), f"SHIFT {a}"


@pytest.mark.timeout(60)
def test_permute(params):
    """PERMUTE with random maps, a reversal, identity, broadcast and out-of-range entries."""
    p = params
    VL = p.vl
    rng = np.random.default_rng(12)
    maps = [rng.permutation(VL), rng.integers(0, VL, VL), np.arange(VL)[::-1], np.arange(VL),
            np.zeros(VL, dtype=np.int64), rng.integers(0, 256, VL),
            np.where(rng.random(VL) < 0.5, VL, rng.integers(0, VL, VL)),
            np.full(VL, 255)]
    prog = Program(p)
    cases = []
    for k, amap in enumerate(maps):
        x = with_edges(rng, VL)
        out = ((k + 1) % p.streams, (EAST, WEST)[k % 2])
        prog.permute(1 + k, "PERMUTE", x, amap, in_=(k % p.streams, EAST),
                     map_=((k + 1) % p.streams, WEST), out=out)
        cases.append((1 + k, x, amap, out))
    got = run_good(p, prog)
    d = d_func(p, "PERMUTE")
    for t, x, amap, (s, direction) in cases:
        want = np.array([x[i] if i < VL else 0 for i in amap])      # plain loop, not the helper
        assert np.array_equal(gather(p, got, t + d, direction, s), want), f"PERMUTE at {t}"


@pytest.mark.timeout(60)
def test_distribute(params):
    """DISTRIBUTE with replication, reversal, zero fill and random maps, one per cycle."""
    p = params
    S, L, VL = p.superlanes, p.lanes, p.vl
    rng = np.random.default_rng(13)
    maps = [np.zeros(VL, dtype=np.int64), np.full(VL, L - 1), np.tile(np.arange(L)[::-1], S),
            np.full(VL, L), np.full(VL, 255), rng.integers(0, L + 3, VL), rng.integers(0, 256, VL),
            np.tile(np.arange(L), S)]
    prog = Program(p)
    cases = []
    for k, amap in enumerate(maps):
        x = with_edges(rng, VL)
        out = (k % p.streams, (WEST, EAST)[k % 2])
        prog.permute(k, "DISTRIBUTE", x, amap, in_=(1, WEST), map_=(2, EAST), out=out)
        cases.append((k, x, amap, out))
    got = run_good(p, prog)
    d = d_func(p, "DISTRIBUTE")
    for t, x, amap, (s, direction) in cases:
        want = np.zeros(VL, dtype=np.int64)
        for c in range(S):
            for j in range(L):
                i = amap[c * L + j]
                want[c * L + j] = x[c * L + i] if i < L else 0
        assert np.array_equal(gather(p, got, t + d, direction, s), want), f"DISTRIBUTE at {t}"


@pytest.mark.timeout(60)
def test_transpose(params):
    """Random blocks; three TRANSPOSEs back to back (every L cycles), then one after a gap."""
    p = params
    L, VL = p.lanes, p.vl
    rng = np.random.default_rng(14)
    prog = Program(p)
    starts = [1, 1 + L, 1 + 2 * L, 1 + 3 * L + 3]
    cases = []
    for k, t in enumerate(starts):
        rows = [with_edges(rng, VL) for _ in range(L)]
        out = ((k % 2 + 2) % p.streams, (WEST, EAST)[k % 2])
        prog.transpose(t, rows, in_=(k % 3, (EAST, WEST)[k // 2 % 2]), out=out)
        cases.append((t, rows, out))
    got = run_good(p, prog)
    d = d_func(p, "TRANSPOSE")
    for t, rows, (s, direction) in cases:
        x = np.asarray(rows)
        for j in range(L):
            want = np.concatenate([x[:, c * L + j] for c in range(p.superlanes)])  # column j
            assert np.array_equal(gather(p, got, t + d + j, direction, s), want), \
                f"TRANSPOSE at {t}, row {j}"


@pytest.mark.timeout(60)
def test_queues_pipelined(params):
    """SHIFT and PERMUTE in consecutive cycles on one stream, DISTRIBUTE after PERMUTE,
    TRANSPOSE running meanwhile: no collision, no error."""
    p = params
    S, L, VL = p.superlanes, p.lanes, p.vl
    rng = np.random.default_rng(15)
    prog = Program(p)
    out = (0, WEST)
    for k in range(6):
        t = 3 + 2 * k
        prog.shift(t, with_edges(rng, VL), rng.integers(-VL, VL + 1), in_=(0, EAST), out=out)
        prog.permute(t + 1, "PERMUTE", with_edges(rng, VL), rng.integers(0, VL + 4, VL),
                     in_=(1, EAST), map_=(2, EAST), out=out)
    # PERMUTE then DISTRIBUTE on the next cycle of the same queue (separate datapaths)
    prog.permute(20, "PERMUTE", with_edges(rng, VL), rng.permutation(VL), in_=(0, WEST),
                 map_=(1, WEST), out=(1, WEST))
    prog.permute(21, "DISTRIBUTE", with_edges(rng, VL), rng.integers(0, L, VL), in_=(2, WEST),
                 map_=(3, WEST), out=(1, EAST))
    for t in (2, 2 + L):                    # back-to-back TRANSPOSEs on one input stream
        prog.transpose(t, [with_edges(rng, VL) for _ in range(L)], in_=(3, EAST), out=(2, WEST))
    got = run_good(p, prog)
    d = d_func(p, "SHIFT")
    for c in range(S):                      # the shift/permute pairs fill every cycle
        assert all((t + c, c, int(WEST), 0) in got for t in range(3 + d, 3 + d + 12))
        assert (20 + d + c, c, int(WEST), 1) in got and (22 + c, c, int(EAST), 1) in got


@pytest.mark.timeout(60)
def test_errors(params):
    """STREAM_UNWRITTEN, STREAM_COLLISION, ADDR_RANGE and a too-early TRANSPOSE."""
    p = params
    S, L, VL, NS = p.superlanes, p.lanes, p.vl, p.streams
    rng = np.random.default_rng(16)
    prog = Program(p)
    d = d_func(p, "SHIFT")
    # unwritten: SHIFT whose top chunk is missing; PERMUTE whose map misses superlane 0
    prog.shift(0, with_edges(rng, VL), 2, in_=(0, EAST), out=(0, EAST))
    del prog.slots[(S - 1, S - 1, int(EAST), 0)]
    prog.permute(1, "PERMUTE", with_edges(rng, VL), rng.permutation(VL), in_=(1, EAST),
                 map_=(2, EAST), out=(1, EAST))
    del prog.slots[(1, 0, int(EAST), 2)]
    # collision: SHIFT and PERMUTE of the same cycle onto one stream
    prog.shift(10, with_edges(rng, VL), -1, in_=(3, WEST), out=(2, WEST))
    prog.permute(10, "PERMUTE", with_edges(rng, VL), rng.permutation(VL), in_=(4 % NS, WEST),
                 map_=(5 % NS, WEST), out=(2, WEST))
    # collision: PERMUTE at t and DISTRIBUTE at t + S (both drive at t + S + 1 + c)
    prog.permute(20, "PERMUTE", with_edges(rng, VL), rng.permutation(VL), in_=(0, WEST),
                 map_=(1, WEST), out=(3, EAST))
    prog.permute(20 + S, "DISTRIBUTE", with_edges(rng, VL), rng.integers(0, L, VL),
                 in_=(2, WEST), map_=(3, WEST), out=(3, EAST))
    # streams beyond the column: input reads zeros, output drives nothing
    if NS < 32:
        prog.issue(30, "SHIFT", in_stream=NS, in_dir=int(EAST), out_stream=0, out_dir=int(WEST),
                   amount=1)
        prog.shift(31, with_edges(rng, VL), 1, in_=(0, EAST), out=(NS, EAST))
        prog.permute(32, "DISTRIBUTE", with_edges(rng, VL), rng.integers(0, L, VL),
                     in_=(1, EAST), map_=(2, EAST), out=(31, WEST))
    # TRANSPOSE issued one cycle after another: rejected; the first one misses a row slot
    rows = [with_edges(rng, VL) for _ in range(L)]
    prog.transpose(40, rows, in_=(6 % NS, EAST), out=(6 % NS, EAST))
    del prog.slots[(40 + 2 + (S - 1), S - 1, int(EAST), 6 % NS)]
    prog.issue(41, "TRANSPOSE", in_stream=6 % NS, in_dir=int(EAST), out_stream=7 % NS,
               out_dir=int(EAST))
    prog.transpose(40 + L, [with_edges(rng, VL) for _ in range(L)], in_=(7 % NS, WEST),
                   out=(7 % NS, WEST))
    _, collided, exp_errors = prog.expected(prog.last_cycle + 4 * VL)
    raised = 0
    for e in exp_errors:
        raised |= e
    assert raised == F.STREAM_UNWRITTEN | F.STREAM_COLLISION | F.BAD_INSTRUCTION | (
        F.ADDR_RANGE if NS < 32 else 0)
    assert {k[0] for k in collided} >= {10 + d + c for c in range(S)}
    run_and_check(p, prog)


@pytest.mark.timeout(60)
def test_verilog_convert():
    p = preset("quad")
    dut = SxmSlice(p, sxm_info(p))
    text = verilog.convert(dut, name="sxm", emit_src=False)
    assert "module sxm" in text
    assert dut.resources["permute_mux_inputs"] == p.vl * p.vl


def test_constructor_checks():
    p = preset("tiny")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)   # the rejected objects
        with pytest.raises(ValueError, match="kind 'sxm'"):
            SxmSlice(p, p.slice("mem_w0"))
        with pytest.raises(TypeError, match="LpuParams"):
            SxmSlice("tiny", sxm_info(p))
        gc.collect()
