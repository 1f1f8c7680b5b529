"""Unit tests of the VXM slice (rtl/vxm.py) in Amaranth's simulator.

The slice is driven directly, cycle by cycle: instructions on its four ALU queues and vectors on
its SR columns with the superlane stagger (superlane ``c`` sees a vector at ``t + c``). The
output-side columns (``sr_east_out``, ``sr_west_out``) get what the stream fabric would hold:
the slice's expected drives of the previous cycle, else the passing input-side value. Expected
values come from ``openlpu.vxm_ops`` and the timing rule (``d_func`` from the ISA table), never
from the RTL.
"""

import dataclasses
import re
import gc
import time
import warnings

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.hdl import UnusedElaboratable
from amaranth.sim import Simulator

from openlpu import isa, vxm_ops
from openlpu.isa import ErrorFlag
from openlpu.params import preset
from openlpu.rtl.testing import pack_column, unpack_drive
from openlpu.rtl.vxm import FX_WIDTHS, VxmSlice

EAST, WEST = isa.Dir.EAST, isa.Dir.WEST
SIM_WALL_LIMIT = 300.0
ALUS = isa.VXM_ALU_ROLES
SIDES = ("in", "out")
BINARY = ("ADD", "SUB", "MUL", "MULSHR", "MIN", "MAX", "AND", "OR", "XOR", "SHL", "SRA", "SRL")
UNARY = ("RELU", "ABS", "NEG")
FX = {"VEXP": vxm_ops.fx_exp, "VRECIP": vxm_ops.fx_recip, "VRSQRT": vxm_ops.fx_rsqrt}
USES_B = tuple("V" + x for x in BINARY) + ("VCMP", "VSEL", "VREQ")
INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


def lacks_unit(p, alu, mnemonic):
    """Whether ALU ``alu`` of a chip with a VXM (``p.vxm_alus``) lacks the function unit
    ``mnemonic`` needs (``isa.VXM_UNITS``; a preset without a VXM tests a full slice)."""
    unit = isa.VXM_UNIT_OF.get(mnemonic)
    return bool(p.vxm_alus) and unit is not None and unit not in isa.vxm_alu_units(p, alu)


def edges(dtype):
    bits = 8 * vxm_ops.DTYPE_BYTES[dtype]
    return [-(1 << (bits - 1)), (1 << (bits - 1)) - 1, 0, 1, -1]


def rand(rng, dtype, n):
    bits = 8 * vxm_ops.DTYPE_BYTES[dtype]
    return rng.integers(-(1 << (bits - 1)), 1 << (bits - 1), size=n, dtype=np.int64)


def fields(a_stream=0, a_dir=EAST, a_chain=0, b_stream=0, b_dir=EAST, b_mode=isa.VXM_B_STREAM,
           out_dir=EAST, dtype=2, imm=0):
    return dict(a_stream=a_stream, a_dir=int(a_dir), a_chain=a_chain, b_stream=b_stream,
                b_dir=int(b_dir), b_mode=b_mode, out_dir=int(out_dir), dtype=dtype, imm=imm)


class Program:
    """Stimulus (instructions, input-side stream vectors) and the expected behaviour."""

    def __init__(self, params):
        self.p = params
        self.instrs = {}            # (cycle, alu index) -> (mnemonic, fields)
        self.vin = {}               # (cycle, dir, stream) -> uint8[VL] (superlane-0 frame)

    def issue(self, t, alu, mnemonic, **f):
        key = (t, alu)
        assert key not in self.instrs, f"two instructions on ALU {alu} at cycle {t}"
        isa.BY_MNEMONIC[mnemonic].encode(**f)
        self.instrs[key] = (mnemonic, f)

    def put(self, t, direction, stream, values, dtype):
        """Put a vector of ``dtype`` lane values on streams ``stream ..`` (byte b on stream+b)."""
        u = np.asarray(values, dtype=np.int64)
        assert u.shape == (self.p.vl,)
        for b in range(vxm_ops.DTYPE_BYTES[dtype]):
            key = (t, int(direction), stream + b)
            assert key not in self.vin, f"slot {key} written twice"
            self.vin[key] = ((u >> (8 * b)) & 0xFF).astype(np.uint8)

    @property
    def last_cycle(self):
        return max([t for t, _ in self.instrs] + [k[0] for k in self.vin])

    # -- expected behaviour (superlane-0 frame) ------------------------------------------------
    def expected(self, n_cycles):
        """Returns (drives {(t, dir, stream): uint8[VL]}, out columns, errors per cycle)."""
        p = self.p
        ns, vl = p.streams, p.vl
        zero = np.zeros(vl, dtype=np.uint8)
        const = [np.zeros(vl, dtype=np.int64) for _ in ALUS]
        drives = {}                 # (t, dir, stream) -> list of vectors
        vout = {}                   # (t, dir, stream) -> uint8[VL] (valid)
        errors = [0] * (n_cycles + p.superlanes + 8)
        pending_const = []

        def flag(t, f, every_superlane=False):
            for c in range(p.superlanes if every_superlane else 1):
                errors[t + c] |= int(f)

        def sample(t, side, d, s, w):
            if s + w > ns:
                flag(t, ErrorFlag.ADDR_RANGE)
                return np.zeros(vl, dtype=np.int64)
            src = self.vin if side == "in" else vout
            raw = np.zeros(vl, dtype=np.int64)
            for b in range(w):
                vec = src.get((t, int(d), s + b))
                if vec is None:
                    flag(t, ErrorFlag.STREAM_UNWRITTEN, every_superlane=True)
                    vec = zero
                raw |= vec.astype(np.int64) << (8 * b)
            return vxm_ops.wrap(raw, {1: 0, 2: 1, 4: 2}[w])

        for t in range(n_cycles):
            # the output-side columns at t: drives of t-1, else the input side passing by
            for d in (EAST, WEST):
                for s in range(ns):
                    drv = drives.get((t - 1, int(d), s))
                    if drv:
                        vout[(t, int(d), s)] = drv[-1]
                    elif (t - 1, int(d), s) in self.vin:
                        vout[(t, int(d), s)] = self.vin[(t - 1, int(d), s)]
            for alu, value in pending_const:
                const[alu] = value
            pending_const = []
            for alu in range(len(ALUS)):
                ins = self.instrs.get((t, alu))
                if ins is None:
                    continue
                m, f = ins
                dtype = f["dtype"]
                if lacks_unit(p, alu, m):           # the ALU has no unit for m: nothing happens
                    flag(t, ErrorFlag.BAD_INSTRUCTION)
                    continue
                if dtype not in vxm_ops.DTYPE_BYTES or \
                        (m in ("VREQ", "VEXP", "VRECIP", "VRSQRT") and dtype != 2) or \
                        (m == "VCAST" and (f["imm"] & 3) not in vxm_ops.DTYPE_BYTES):
                    flag(t, ErrorFlag.BAD_INSTRUCTION)
                    continue
                w = vxm_ops.DTYPE_BYTES[dtype]
                a = sample(t, SIDES[f["a_chain"]], f["a_dir"], f["a_stream"], w)
                if m == "VLC":
                    pending_const.append((alu, a))
                    continue
                b = None
                if m in USES_B:
                    mode = f["b_mode"]
                    if mode in (isa.VXM_B_STREAM, isa.VXM_B_CHAIN):
                        wb = 1 if m == "VSEL" else w        # VSEL: a one-byte condition
                        b = sample(t, SIDES[mode == isa.VXM_B_CHAIN], f["b_dir"], f["b_stream"], wb)
                    elif mode == isa.VXM_B_CONST:
                        b = vxm_ops.wrap(const[alu], dtype)
                    else:
                        imm6 = (f["b_dir"] << 5) | f["b_stream"]
                        b = np.full(vl, imm6 - 64 if imm6 >= 32 else imm6, dtype=np.int64)
                op, out_dtype = m[1:], dtype
                if op in BINARY:
                    y = vxm_ops.binary_op(op, a, b, dtype, f["imm"])
                elif op in UNARY:
                    y = vxm_ops.unary_op(op, a, dtype)
                elif op == "CMP":
                    if f["imm"] not in vxm_ops.CMP_CODES:
                        flag(t, ErrorFlag.BAD_INSTRUCTION)
                        continue
                    y = vxm_ops.wrap(vxm_ops.compare(f["imm"], a, b), dtype)
                elif op == "SEL":
                    y = vxm_ops.select(b, a, vxm_ops.wrap(const[alu], dtype))
                elif op == "CAST":
                    out_dtype = f["imm"] & 3
                    y = vxm_ops.cast(a, out_dtype)
                elif op == "REQ":
                    out_dtype = 0
                    y = vxm_ops.requantize(a, b, f["imm"])
                else:
                    y = FX[m](a)
                wo = vxm_ops.DTYPE_BYTES[out_dtype]
                s0 = f["a_stream"]
                if s0 + wo > ns:
                    flag(t, ErrorFlag.ADDR_RANGE)
                    continue
                td = t + isa.BY_MNEMONIC[m].d_func(p)
                u = np.asarray(y, dtype=np.int64) & ((1 << (8 * wo)) - 1)
                for k in range(wo):
                    drives.setdefault((td, f["out_dir"], s0 + k), []).append(
                        ((u >> (8 * k)) & 0xFF).astype(np.uint8))
        for key, vecs in drives.items():
            if len(vecs) > 1 and key[0] < n_cycles:
                flag(key[0], ErrorFlag.STREAM_COLLISION)
        last = {k: v[-1] for k, v in drives.items() if len(v) == 1}
        return last, {k for k, v in drives.items() if len(v) > 1}, vout, errors[:n_cycles]


def _column_value(p, src, t, d):
    """Stream-column value at real cycle t (superlane c shows the frame-0 vector of t - c)."""
    data = np.zeros((p.superlanes, p.streams, p.lanes), dtype=np.uint8)
    valid = np.zeros((p.superlanes, p.streams), dtype=bool)
    for c in range(p.superlanes):
        for s in range(p.streams):
            vec = src.get((t - c, int(d), s))
            if vec is not None:
                data[c, s] = vec[c * p.lanes:(c + 1) * p.lanes]
                valid[c, s] = True
    return pack_column(p, data, valid)


def simulate(p, prog, n_cycles, vout, dut=None):
    """Run the program; returns (driven slots {(t, c, dir, s): uint8[lanes]}, errors)."""
    dut = dut or VxmSlice(p, p.slice("vxm"))
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    got, errors = {}, []
    deadline = time.monotonic() + SIM_WALL_LIMIT
    cols = [
        (dut.sr_east_in, EAST, "in"), (dut.sr_west_in, WEST, "in"),
        (dut.sr_east_out, EAST, "out"), (dut.sr_west_out, WEST, "out"),
    ]
    values = {}
    for port, d, side in cols:
        src = prog.vin if side == "in" else vout
        values[(d, side)] = [_column_value(p, src, t, d) for t in range(n_cycles)]

    async def bench(ctx):
        for t in range(n_cycles):
            assert time.monotonic() < deadline, f"simulation exceeded {SIM_WALL_LIMIT} s at cycle {t}"
            for i, role in enumerate(ALUS):
                port = getattr(dut, f"instr_{role}")
                ins = prog.instrs.get((t, i))
                ctx.set(port.valid, ins is not None)
                ctx.set(port.word, 0 if ins is None else isa.BY_MNEMONIC[ins[0]].encode(**ins[1]))
            for port, d, side in cols:
                ctx.set(port.as_value(), values[(d, side)][t])
            errors.append(ctx.get(dut.error))
            for d, port in ((EAST, dut.drive_east), (WEST, dut.drive_west)):
                data, en = unpack_drive(p, ctx.get(port.as_value()))
                for c, s in zip(*np.nonzero(en)):
                    got[(t, int(c), int(d), int(s))] = data[c, s].copy()
            await ctx.tick()

    sim.add_testbench(bench)
    sim.run()
    return got, errors


def run_and_check(p, prog, tail=None):
    """Simulate past the last result and compare every driven lane and every error bit."""
    n_cycles = prog.last_cycle + isa.VXM_FUNC_LATENCY + p.superlanes + 2
    exp, collided, vout, exp_errors = prog.expected(n_cycles)
    got, errors = simulate(p, prog, n_cycles, vout)
    assert errors == exp_errors, "error flags differ: " + ", ".join(
        f"cycle {t}: got {g:#x} expected {e:#x}"
        for t, (g, e) in enumerate(zip(errors, exp_errors)) if g != e)
    want = {}
    for (t, d, s), vec in exp.items():
        for c in range(p.superlanes):
            if t + c < n_cycles:
                want[(t + c, c, d, s)] = vec[c * p.lanes:(c + 1) * p.lanes]
    collided_slots = {(t + c, c, d, s) for (t, d, s) in collided for c in range(p.superlanes)}
    got_keys = set(got) - collided_slots
    assert got_keys == set(want), (
        f"driven slots differ: unexpected {sorted(got_keys - set(want))[:8]}, "
        f"missing {sorted(set(want) - got_keys)[:8]}")
    for key, vec in want.items():
        assert np.array_equal(got[key], vec), (
            f"cycle {key[0]} superlane {key[1]} dir {key[2]} stream {key[3]}: "
            f"got {got[key].tolist()} expected {vec.tolist()}")
    return len(want), exp_errors


def _chunks(values, vl):
    """Split a list of lane values into VL-sized vectors (the last padded with its start)."""
    values = list(values)
    out = []
    for i in range(0, len(values), vl):
        v = values[i:i + vl]
        v += values[:vl - len(v)] if len(values) >= vl else [v[j % len(v)] for j in range(vl - len(v))]
        out.append(np.array(v, dtype=np.int64))
    return out


def _pairs(dtype, extra=()):
    e = edges(dtype) + list(extra)
    return [(x, y) for x in e for y in e]


class Scheduler:
    """Packs independent instructions, two per cycle, without collisions.

    Slot 0 of a cycle flows east, slot 1 west; a is on streams 0.. and b on streams 4.. of that
    direction, the result goes to streams 0.. of the same direction. The ALUs rotate.
    """

    def __init__(self, p, t0=0):
        self.p, self.t, self.j = p, t0, 0
        assert p.streams >= 8

    def add(self, prog, mnemonic, a, b, dtype, imm=0, b_mode=isa.VXM_B_STREAM, b_raw=None):
        d = (EAST, WEST)[self.j]
        alu = (2 * self.t + self.j) % len(ALUS)
        prog.put(self.t, d, 0, a, dtype)
        if b is not None and b_mode == isa.VXM_B_STREAM:
            prog.put(self.t, d, 4, b, dtype)
        bs, bd = (4, d) if b_raw is None else b_raw
        prog.issue(self.t, alu, mnemonic, **fields(a_stream=0, a_dir=d, b_stream=bs, b_dir=bd,
                                                   b_mode=b_mode, out_dir=d, dtype=dtype,
                                                   imm=imm))
        self.j += 1
        if self.j == 2:
            self.j, self.t = 0, self.t + 1

    def next_cycle(self):
        if self.j:
            self.j, self.t = 0, self.t + 1


@pytest.fixture(params=["tiny", "quad"])
def p(request):
    return preset(request.param)


# -- tests ---------------------------------------------------------------------------------------

def test_binary_ops(p):
    """Every binary op on every dtype: seeded random data plus all pairs of edge values."""
    rng = np.random.default_rng(1)
    prog, sch = Program(p), Scheduler(p)
    for op in BINARY:
        for dtype in vxm_ops.DTYPE_BYTES:
            bits = 8 * vxm_ops.DTYPE_BYTES[dtype]
            extra = (bits - 1,) if op in ("SHL", "SRA", "SRL") else ()
            pairs = _pairs(dtype, extra)
            avs = _chunks([x for x, _ in pairs], p.vl)
            bvs = _chunks([y for _, y in pairs], p.vl)
            avs.append(rand(rng, dtype, p.vl))
            bvs.append(rand(rng, dtype, p.vl) if op not in ("SHL", "SRA", "SRL")
                       else rng.integers(0, bits, p.vl))
            for k, (a, b) in enumerate(zip(avs, bvs)):
                imm = 0
                if op == "MULSHR":
                    imm = [0, bits - 1, bits, 2 * bits - 1, 63, int(rng.integers(0, 64))][k % 6]
                sch.add(prog, "V" + op, a, b, dtype, imm=imm)
    checked, errors = run_and_check(p, prog)
    assert checked > 0 and not any(errors)


def test_unary_compare_cast(p):
    """RELU/ABS/NEG, VCMP with every code, VCAST between every pair of dtypes."""
    rng = np.random.default_rng(2)
    prog, sch = Program(p), Scheduler(p)
    for dtype in vxm_ops.DTYPE_BYTES:
        vals = edges(dtype) + rand(rng, dtype, p.vl).tolist()
        for op in UNARY:
            for a in _chunks(vals, p.vl):
                sch.add(prog, "V" + op, a, None, dtype, b_mode=isa.VXM_B_IMM)
        pairs = _pairs(dtype)
        pairs += list(zip(rand(rng, dtype, p.vl), rand(rng, dtype, p.vl)))
        pairs += [(x, x) for x in rand(rng, dtype, 4)]
        for code in vxm_ops.CMP_CODES:
            for a, b in zip(_chunks([x for x, _ in pairs], p.vl), _chunks([y for _, y in pairs], p.vl)):
                sch.add(prog, "VCMP", a, b, dtype, imm=code)
        for to in vxm_ops.DTYPE_BYTES:
            for a in _chunks(vals, p.vl):
                sch.add(prog, "VCAST", a, None, dtype, imm=to, b_mode=isa.VXM_B_IMM)
    checked, errors = run_and_check(p, prog)
    assert checked > 0 and not any(errors)


def test_b_modes_const_select(p):
    """b from input-side streams, chained streams, the constant register and the immediate;
    VLC then VSEL / VADD with the constant in the next cycle (per ALU constants). VSEL tests
    the low byte of b only: masks (streams, constant) whose low byte is 0 but not the value."""
    rng = np.random.default_rng(3)
    prog = Program(p)
    t = 0
    for dtype in vxm_ops.DTYPE_BYTES:
        # VLC on every ALU (a on east group 0 / west group 0 ...), then ops in the next cycle
        consts = []
        for j in range(4):
            d, g = (EAST, WEST)[j % 2], 4 * (j // 2)
            cv = rand(rng, dtype, p.vl)
            cv[:3] = [0, 1, -1]
            if dtype:
                cv[3] = (256, -256)[j % 2]             # low byte 0, value not
            consts.append(cv)
            prog.put(t, d, g, cv, dtype)
            prog.issue(t, j, "VLC", **fields(a_stream=g, a_dir=d, dtype=dtype))
        t += 1
        sel = [rand(rng, dtype, p.vl), rand(rng, dtype, p.vl)]
        sel[0][::3] = 0
        sel[1][1::3] = 0
        if dtype:                                     # low byte 0, higher bytes not
            sel[0][1::4] = -256
            sel[1][2::4] = 0x7F00 if dtype == 1 else 0x12345600
        for j in range(4):
            d = (EAST, WEST)[j % 2]
            if j < 2:
                prog.put(t, d, 0, rand(rng, dtype, p.vl), dtype)
                prog.issue(t, j, "VADD", **fields(a_stream=0, a_dir=d, b_mode=isa.VXM_B_CONST,
                                                  out_dir=d, dtype=dtype))
            else:   # VSEL: a on streams 4.. of one direction, the mask on the other (zeros)
                prog.put(t, d, 4, sel[j - 2], dtype)
                prog.issue(t, j, "VSEL", **fields(a_stream=4, a_dir=d, b_stream=4,
                                                  b_dir=(WEST, EAST)[j % 2], out_dir=d,
                                                  dtype=dtype))
        t += 1
        # VSEL with the constant as condition (ALU0/1) and with an immediate (ALU2: 0, ALU3: -32)
        for j in range(4):
            d = (EAST, WEST)[j % 2]
            g = 0 if j < 2 else 4
            prog.put(t, d, g, rand(rng, dtype, p.vl), dtype)
            imm6 = (0, -32)[j % 2] & 63
            bf = (dict(b_mode=isa.VXM_B_CONST) if j < 2 else
                  dict(b_mode=isa.VXM_B_IMM, b_stream=imm6 & 31, b_dir=imm6 >> 5))
            prog.issue(t, j, "VSEL", **fields(a_stream=g, a_dir=d, out_dir=d, dtype=dtype, **bf))
        t += 1
        # immediates: every sign / magnitude class
        for imm6 in (-32, 31, 0, 1, -1, int(rng.integers(-32, 32))):
            u = imm6 & 63
            j = t % 4
            d, g = (EAST, WEST)[j % 2], 4 * (j // 2)
            prog.put(t, d, g, np.array((edges(dtype) * p.vl)[:p.vl]), dtype)
            prog.issue(t, j, "VADD", **fields(a_stream=g, a_dir=d, b_stream=u & 31, b_dir=u >> 5,
                                              b_mode=isa.VXM_B_IMM, out_dir=d, dtype=dtype))
            t += 1
        # chained b: ALU0 VSUB result (east, group 0) feeds ALU1's b two cycles later
        a, b, c = (rand(rng, dtype, p.vl) for _ in range(3))
        prog.put(t, EAST, 0, a, dtype)
        prog.put(t, EAST, 4, b, dtype)
        prog.issue(t, 0, "VSUB", **fields(a_stream=0, b_stream=4, dtype=dtype))
        prog.put(t + 3, WEST, 4, c, dtype)
        prog.issue(t + 3, 1, "VMAX", **fields(a_stream=4, a_dir=WEST, b_stream=0, b_dir=EAST,
                                              b_mode=isa.VXM_B_CHAIN, out_dir=WEST, dtype=dtype))
        t += 5
    checked, errors = run_and_check(p, prog)
    assert checked > 0 and not any(errors)


def test_requantize(p):
    """VREQ with random and edge int32 values, multipliers from streams / const / immediate."""
    rng = np.random.default_rng(4)
    prog, sch = Program(p), Scheduler(p)
    e = edges(2)
    for shift in (0, 1, 7, 15, 31, int(rng.integers(0, 32))):
        a = np.array((e + rand(rng, 2, p.vl).tolist())[:p.vl])
        mult = rng.integers(1 << 29, 1 << 31, p.vl)
        mult[:5] = e
        sch.add(prog, "VREQ", a, mult, 2, imm=shift)
        sch.add(prog, "VREQ", rand(rng, 2, p.vl), None, 2, imm=shift, b_mode=isa.VXM_B_IMM,
                b_raw=(int(rng.integers(0, 32)), int(rng.integers(0, 2))))
    checked, errors = run_and_check(p, prog)
    assert checked > 0 and not any(errors)


def fx_values(rng):
    special = [0, 1, -1, 2, 3, INT32_MIN, INT32_MAX, INT32_MIN + 1, INT32_MAX - 1, 65536, -65536,
               65535, 65537, 1 << 30, (1 << 30) - 1, (1 << 30) + 1, 1 << 29, 3 << 28]
    powers = [(1 << k) + d for k in range(0, 31) for d in (-1, 0, 1) if (1 << k) + d > 0]
    neg = [-(1 << k) for k in range(0, 31)] + [-(k * 65536) // 7 for k in range(1, 60)]
    rnd = rng.integers(INT32_MIN, INT32_MAX + 1, 64).tolist()
    small = rng.integers(1, 1 << 17, 32).tolist()
    return sorted(set(special + powers + neg + rnd + small))


def test_functions(p):
    """VEXP, VRECIP, VRSQRT on zero, negatives, extremes, every power of two (+-1) and random
    values, issued back to back on all four ALUs (pipelining)."""
    rng = np.random.default_rng(5)
    prog, sch = Program(p), Scheduler(p)
    vals = fx_values(rng)
    for m in FX:
        for a in _chunks(vals, p.vl):
            sch.add(prog, m, a, None, 2, b_mode=isa.VXM_B_IMM)
    # a simple op on the same ALU landing between function results (two pipelines, one ALU)
    sch.next_cycle()
    t = sch.t + 1
    prog.put(t, EAST, 0, rand(rng, 2, p.vl), 2)
    prog.issue(t, 0, "VEXP", **fields(a_stream=0, dtype=2))
    prog.put(t + 1, WEST, 0, rand(rng, 2, p.vl), 2)
    prog.issue(t + 1, 0, "VRSQRT", **fields(a_stream=0, a_dir=WEST, out_dir=WEST, dtype=2))
    prog.put(t + 2, EAST, 4, rand(rng, 2, p.vl), 2)
    prog.issue(t + 2, 0, "VNEG", **fields(a_stream=4, dtype=2))
    checked, errors = run_and_check(p, prog)
    assert checked > 0 and not any(errors)


def test_chain_of_four(p):
    """VCAST -> VMUL -> VADD -> VREQ on ALUs 0..3, one vector per cycle, all operands passed
    through the output-side columns (chaining), no MEM round trip."""
    rng = np.random.default_rng(6)
    prog = Program(p)
    n = 6
    t0 = 1
    scale = rand(rng, 2, p.vl) >> 12          # VMUL constant (ALU1)
    mult = rng.integers(1 << 28, 1 << 31, p.vl)  # VREQ constant (ALU3)
    prog.put(0, EAST, 0, scale, 2)
    prog.issue(0, 1, "VLC", **fields(a_stream=0, dtype=2))
    prog.put(0, WEST, 4, mult, 2)
    prog.issue(0, 3, "VLC", **fields(a_stream=4, a_dir=WEST, dtype=2))
    for k in range(n):
        t = t0 + k
        x = rand(rng, 0, p.vl)
        if k == 0:
            x[:5] = edges(0)
        prog.put(t, EAST, 0, x, 0)
        # ALU0: int8 -> int32, driven west on streams 0..3 at t+2, in west_out at t+3
        prog.issue(t, 0, "VCAST", **fields(a_stream=0, out_dir=WEST, dtype=0, imm=2))
        # ALU1: chained a (west 0..3) * constant, driven east 0..3 at t+5
        prog.issue(t + 3, 1, "VMUL", **fields(a_stream=0, a_dir=WEST, a_chain=1,
                                              b_mode=isa.VXM_B_CONST, out_dir=EAST, dtype=2))
        # ALU2: fresh a (east 4..7) + chained b (east 0..3), driven west 4..7 at t+8
        prog.put(t + 6, EAST, 4, rand(rng, 2, p.vl) >> 4, 2)
        prog.issue(t + 6, 2, "VADD", **fields(a_stream=4, b_stream=0, b_mode=isa.VXM_B_CHAIN,
                                              out_dir=WEST, dtype=2))
        # ALU3: chained a (west 4..7), requantized with the constant, int8 east on stream 4
        prog.issue(t + 9, 3, "VREQ", **fields(a_stream=4, a_dir=WEST, a_chain=1,
                                              b_mode=isa.VXM_B_CONST, out_dir=EAST, dtype=2,
                                              imm=3))
    checked, errors = run_and_check(p, prog)
    assert not any(errors)
    n_req = sum(1 for (t, d, s) in prog.expected(prog.last_cycle + 8)[0]
                if d == EAST and s == 4 and t >= t0 + 11)
    assert n_req == n, "every vector must reach the end of the chain"


def test_errors(p):
    """Each error flag fires on a bad instruction (and the expectation says so); good
    instructions around them raise nothing."""
    rng = np.random.default_rng(7)
    prog = Program(p)
    ns = p.streams
    v32 = lambda: rand(rng, 2, p.vl)      # noqa: E731
    t = 0
    cases = []

    def case(flag, setup):
        nonlocal t
        setup(t)
        cases.append((t, flag))
        t += 6

    # BAD_INSTRUCTION: dtype 3; int32-only ops on int8/int16; VCAST to dtype 3; VCMP code 6
    case(ErrorFlag.BAD_INSTRUCTION, lambda t: prog.issue(t, 0, "VADD", **fields(dtype=3)))
    case(ErrorFlag.BAD_INSTRUCTION, lambda t: prog.issue(t, 1, "VREQ", **fields(dtype=0)))
    case(ErrorFlag.BAD_INSTRUCTION, lambda t: prog.issue(t, 2, "VEXP", **fields(dtype=1)))
    case(ErrorFlag.BAD_INSTRUCTION, lambda t: prog.issue(t, 2, "VRECIP", **fields(dtype=0)))
    case(ErrorFlag.BAD_INSTRUCTION, lambda t: prog.issue(t, 3, "VRSQRT", **fields(dtype=1)))
    case(ErrorFlag.BAD_INSTRUCTION, lambda t: prog.issue(t, 3, "VCAST", **fields(dtype=0, imm=3)))

    def bad_cmp(t):
        prog.put(t, EAST, 0, v32(), 2)
        prog.put(t, EAST, 4, v32(), 2)
        prog.issue(t, 0, "VCMP", **fields(b_stream=4, imm=6))
    case(ErrorFlag.BAD_INSTRUCTION, bad_cmp)

    # ADDR_RANGE: a, b and result streams past the last one
    def a_range(t):
        prog.put(t, EAST, 4, v32(), 2)
        prog.issue(t, 0, "VADD", **fields(a_stream=ns - 2, b_stream=4, dtype=2))
    case(ErrorFlag.ADDR_RANGE, a_range)

    def b_range(t):
        prog.put(t, WEST, 0, rand(rng, 1, p.vl), 1)
        prog.issue(t, 1, "VSUB", **fields(a_dir=WEST, b_stream=ns - 1, b_dir=WEST,
                                          out_dir=WEST, dtype=1))
    case(ErrorFlag.ADDR_RANGE, b_range)

    def res_range(t):
        prog.put(t, EAST, ns - 1, rand(rng, 0, p.vl), 0)
        prog.issue(t, 2, "VCAST", **fields(a_stream=ns - 1, dtype=0, imm=2))
    case(ErrorFlag.ADDR_RANGE, res_range)

    def req_a_range(t):       # int32 operand out of range, int8 result in range: drives req(0)
        prog.issue(t, 3, "VREQ", **fields(a_stream=ns - 2, b_mode=isa.VXM_B_IMM, b_stream=5,
                                          dtype=2))
    case(ErrorFlag.ADDR_RANGE, req_a_range)

    # STREAM_UNWRITTEN: one of the w streams of a, of b, and of a chained operand
    def a_unwritten(t):
        prog.put(t, EAST, 0, rand(rng, 0, p.vl), 0)       # only byte 0 of the int16
        prog.put(t, EAST, 2, rand(rng, 1, p.vl), 1)
        prog.issue(t, 0, "VADD", **fields(a_stream=0, b_stream=2, dtype=1))
    case(ErrorFlag.STREAM_UNWRITTEN, a_unwritten)

    def b_unwritten(t):
        prog.put(t, WEST, 0, v32(), 2)
        prog.put(t, WEST, 4, rand(rng, 1, p.vl), 1)       # only two bytes of the int32
        prog.issue(t, 1, "VMUL", **fields(a_dir=WEST, b_stream=4, b_dir=WEST, out_dir=WEST))
    case(ErrorFlag.STREAM_UNWRITTEN, b_unwritten)

    def chain_unwritten(t):
        prog.issue(t, 2, "VRELU", **fields(a_stream=4, a_dir=WEST, a_chain=1, dtype=0))
    case(ErrorFlag.STREAM_UNWRITTEN, chain_unwritten)

    # STREAM_COLLISION: two ALUs on the same stream; a function and a simple op on one ALU
    def collide(t):
        prog.put(t, EAST, 0, v32(), 2)
        prog.issue(t, 0, "VNEG", **fields(dtype=2))
        prog.issue(t, 1, "VABS", **fields(a_stream=0, dtype=0))
    case(ErrorFlag.STREAM_COLLISION, collide)

    def collide_fx(t):
        prog.put(t, WEST, 0, v32(), 2)
        prog.issue(t, 3, "VRECIP", **fields(a_dir=WEST, out_dir=EAST))
        prog.put(t + 2, EAST, 4, v32(), 2)
        prog.issue(t + 2, 3, "VRELU", **fields(a_stream=2, a_dir=EAST, dtype=0))
        prog.put(t + 2, EAST, 2, rand(rng, 0, p.vl), 0)
    case(ErrorFlag.STREAM_COLLISION, collide_fx)

    # VSEL: b is one byte at any dtype: out of range only past the last stream; only the
    # condition byte must be written
    def vsel_b_range(t):
        prog.put(t, EAST, 0, rand(rng, 0, p.vl), 0)
        prog.issue(t, 0, "VSEL", **fields(b_stream=ns, dtype=0))
    case(ErrorFlag.ADDR_RANGE, vsel_b_range)

    def vsel_b_unwritten(t):
        prog.put(t, WEST, 0, rand(rng, 1, p.vl), 1)
        prog.put(t, WEST, 5, rand(rng, 1, p.vl), 1)    # streams 5, 6 but not the condition, 4
        prog.issue(t, 3, "VSEL", **fields(a_dir=WEST, b_stream=4, b_dir=WEST, out_dir=WEST,
                                          dtype=1))
    case(ErrorFlag.STREAM_UNWRITTEN, vsel_b_unwritten)

    def vsel_good(t):         # int32 VSEL, condition on the last stream (streams past it unused)
        prog.put(t, EAST, 0, v32(), 2)
        prog.put(t, EAST, ns - 1, rand(rng, 0, p.vl), 0)
        prog.issue(t, 2, "VSEL", **fields(b_stream=ns - 1, dtype=2))
    case(0, vsel_good)

    # good instructions: unary op with an invalid b stream, VLC with a high a stream
    def good(t):
        prog.put(t, EAST, 0, v32(), 2)
        prog.issue(t, 0, "VABS", **fields(b_stream=ns + 3, dtype=2))
        prog.put(t, WEST, ns - 1, rand(rng, 0, p.vl), 0)
        prog.issue(t, 1, "VLC", **fields(a_stream=ns - 1, a_dir=WEST, dtype=0))
    case(0, good)

    n_cycles = prog.last_cycle + isa.VXM_FUNC_LATENCY + p.superlanes + 2
    _, _, _, exp = prog.expected(n_cycles)
    for t0, flag in cases:
        window = 0
        for tt in range(t0, t0 + 6):
            window |= exp[tt]
        if flag:
            assert window & flag, f"case at cycle {t0} should raise {flag!r}"
            assert window == flag, f"case at cycle {t0} raises more than {flag!r}: {window:#x}"
        else:
            assert window == 0
    run_and_check(p, prog)


def test_fx_widths():
    """The register widths of the Newton-Raphson pipeline hold every intermediate (dense sample
    of the normalised mantissas plus both ends; the full range was checked when they were set)."""
    def fits(x, bits):
        return int(x.min()) >= 0 and int(x.max()) < (1 << bits)
    m = np.unique(np.concatenate([np.arange(1 << 30, 1 << 31, 4099),
                                  np.arange(1 << 30, (1 << 30) + 4096),
                                  np.arange((1 << 31) - 4096, 1 << 31)])).astype(np.int64)
    y = vxm_ops.RECIP_K1 - ((vxm_ops.RECIP_K2 * m) >> 31)
    assert fits(m, FX_WIDTHS["recip_m"]) and fits(y, FX_WIDTHS["recip_y"])
    for _ in range(vxm_ops.RECIP_ITERATIONS):
        e = (1 << 31) - ((m * y) >> 31)
        y = (y * e) >> 30
        assert fits(e, FX_WIDTHS["recip_e"]) and fits(y, FX_WIDTHS["recip_y"])
    m = np.unique(np.concatenate([np.arange(1 << 28, 1 << 30, 4099),
                                  np.arange(1 << 28, (1 << 28) + 4096),
                                  np.arange((1 << 30) - 4096, 1 << 30)])).astype(np.int64)
    y = vxm_ops.RSQRT_K1 - ((vxm_ops.RSQRT_K2 * m) >> 30)
    assert fits(m, FX_WIDTHS["rsqrt_m"]) and fits(y, FX_WIDTHS["rsqrt_y"])
    for _ in range(vxm_ops.RSQRT_ITERATIONS):
        yy = (y * y) >> 30
        t = (3 << 30) - ((m * yy) >> 30)
        y = (y * t) >> 31
        assert fits(yy, FX_WIDTHS["rsqrt_yy"]) and fits(t, FX_WIDTHS["rsqrt_t"])
        assert fits(y, FX_WIDTHS["rsqrt_y"])


def test_bad_slice_kind():
    p = preset("tiny")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)
        with pytest.raises(ValueError, match="kind 'vxm'"):
            VxmSlice(p, p.slice("mem_w0"))
        gc.collect()


def test_verilog_convert():
    p = preset("tiny")
    dut = VxmSlice(p, p.slice("vxm"))
    text = verilog.convert(dut, name="vxm", emit_src=False)
    assert "module vxm" in text
    assert "drive_east" in text and "sr_east_out" in text


# -- ALU classes (params.vxm_fx_alus, params.vxm_mul_alus) ---------------------------------------

def lite(name="tiny", fx=1, mul=2):
    """``name`` with a 4-ALU VXM: ALUs 0 .. fx-1 with the function pipelines, 0 .. mul-1 with
    the 32x32 multiplier."""
    return dataclasses.replace(preset(name), name=f"{name}_fx{fx}_mul{mul}", vxm_alus=4,
                               vxm_fx_alus=fx, vxm_mul_alus=mul)


@pytest.mark.parametrize("fx, mul", [(1, 2), (2, 0)])
def test_alu_classes(fx, mul):
    """Every instruction that needs a unit, on every ALU of a reduced VXM: the ALUs that have
    the unit compute it (vs vxm_ops), the others raise BAD_INSTRUCTION and drive nothing; the
    instructions without a unit run on every ALU, also between the rejected ones."""
    p = dataclasses.replace(lite(fx=fx, mul=mul), lanes=2, superlanes=1)    # VL 2: fast
    dut = VxmSlice(p, p.slice("vxm"))
    assert [dut.alu_units(i) for i in range(4)] == [isa.vxm_alu_units(p, i) for i in range(4)]
    rng = np.random.default_rng(11)
    prog = Program(p)
    t, n_bad = 0, 0
    for m in tuple(isa.VXM_UNIT_OF) + ("VADD", "VSEL", "VCMP"):
        for alu in range(4):
            d = (EAST, WEST)[alu % 2]
            a = np.array(fx_values(rng)[:p.vl]) if m in FX else rand(rng, 2, p.vl)
            prog.put(t, d, 0, a, 2)
            prog.put(t, d, 4, rand(rng, 2, p.vl), 2)
            prog.issue(t, alu, m, **fields(a_dir=d, b_stream=4, b_dir=d, out_dir=d, dtype=2,
                                           imm=2 if m == "VCMP" else 3))
            n_bad += lacks_unit(p, alu, m)
            t += 1
    checked, errors = run_and_check(p, prog)
    assert n_bad == (4 - fx) * 3 + (4 - mul) * 3
    assert checked > 0 and sum(bool(e & ErrorFlag.BAD_INSTRUCTION) for e in errors) == n_bad


def test_alu_classes_leave_units_out():
    """The reduced ALUs carry no function-pipeline or multiplier logic: the multiplier count
    (``VxmSlice.multipliers``) shrinks with the options (the Verilog sizes are in the *Cost*
    table of docs/architecture.md, ``benchmarks/vxm_cost.py``)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)
        for p, n in ((preset("mini"), 4 * 22), (lite("mini", fx=1, mul=4), 22 + 3),
                     (lite("mini", fx=2, mul=1), 2 * 21 + 1), (lite("mini", fx=0, mul=0), 0)):
            dut = VxmSlice(p, p.slice("vxm"))
            assert sum(dut.multipliers.values()) == n * p.vl
            assert [dut.alu_units(i) for i in range(4)] == [isa.vxm_alu_units(p, i)
                                                            for i in range(4)]
        gc.collect()


@pytest.mark.parametrize("role, bad", [("alu0", []), ("alu1", [1, 3])])
def test_icu_rejects_what_its_alu_lacks(role, bad):
    """On ``mini_lite`` (function pipelines in alu0 only) the ICU of vxm.alu1 skips VEXP and
    VRSQRT words in one cycle with BAD_INSTRUCTION, like an unknown opcode; vxm.alu0 issues
    them. The words around them issue as on the full chip."""
    from tests.rtl.test_icu import expected_schedule, queue_of, run_icu
    p = preset("mini_lite")
    enc = lambda m, **f: isa.BY_MNEMONIC[m].encode(**fields(**f))     # noqa: E731
    words = [enc("VADD"), enc("VEXP"), enc("VMUL"), enc("VRSQRT"), enc("VSUB", dtype=0),
             isa.BY_MNEMONIC["HALT"].encode()]
    q = queue_of(p, role)
    trace = run_icu(p, q, words, 8)
    assert trace == expected_schedule(p, q.role, words, 8)
    assert [t for t, (_, e, _) in enumerate(trace) if e & ErrorFlag.BAD_INSTRUCTION] == bad
    assert [t for t, (w, _, _) in enumerate(trace) if w is not None] == \
        [t for t in range(5) if t not in bad]


def test_verilog_one_module_per_lane_class():
    """In the chip's Verilog path (openlpu.rtl.shared) the VXM is one superlane module and one
    lane module per ALU class, instantiated superlanes and lanes x ALUs times."""
    from openlpu.rtl import shared
    p = lite("mini", fx=1, mul=1)
    with shared.library("v") as lib:
        text = verilog.convert(VxmSlice(p, p.slice("vxm")), name="vxm", emit_src=False)
    text += lib.verilog()
    lanes = sorted(n for n in lib.placed if n.startswith("v_vxm_lane_"))
    superlanes = [n for n in lib.placed if n.startswith("v_vxm_superlane_")]
    assert len(lanes) == 2 and len(superlanes) == 1     # {fx, mul} and no unit
    assert lib.placed[superlanes[0]] == p.superlanes
    # placed inside the one superlane module (the other superlanes instantiate it)
    assert sorted(lib.placed[n] for n in lanes) == [p.lanes, 3 * p.lanes]
    for n in lanes + superlanes:
        assert len(re.findall(rf"^module {n}\(", text, re.M)) == 1
