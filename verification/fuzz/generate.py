"""Generator of legal random programs over the whole ISA, with deliberate faults.

:func:`generate` builds one :class:`~.program.FuzzProgram` for a preset from a seed. Programs are
made of *phases*; in each phase the generator places *flows* on a timeline, each a producer and
its consumers at the cycles the ISA latencies say the data meets (``isa.InstrDef.d_func`` and
one stream-register hop per slice position), so most reads see valid stream slots and real
values travel through the slices:

* MEM ``READ`` -> ``WRITE`` copies, ``GATHER`` (map from another slice) and ``SCATTER``;
* VXM operations of every mnemonic: int8 ones on MEM operands, wide ones (int16/int32) on
  ``VCAST`` results through the chaining path, with stream, chained, constant (after ``VLC``)
  and immediate second operands;
* MXM ``LW`` / ``LWT`` rows and ``LWW`` wide loads (one MEM slice per stream), ``IW``, ``ABC``
  (accumulating or not) and ``ACC`` results written back by four MEM slices;
* SXM ``SHIFT``, ``PERMUTE``, ``DISTRIBUTE`` (maps from MEM) and ``TRANSPOSE``;
* ``REPEAT`` on producers and consumers (when the preset has ``icu_repeat``), ``CONFIG``
  superlane masks in MEM queues, ``NOP`` gaps.

Phases end with a barrier: every queue that has work later issues ``SYNC`` and one of them
issues ``NOTIFY`` once all have arrived. On top of that, a share of the programs gets faults:
random legal instructions at random cycles (unwritten-slot reads, stream collisions, bank
conflicts), undecodable words, instructions in the wrong queue, out-of-range fields, a REPEAT
with nothing before it, a missing NOTIFY or an early one (the run hangs: the runner's cycle
limit ends it), a queue without HALT (IMEM overrun). Instructions the preset does not implement
(``isa.unavailable``) are only emitted as deliberate bad words.

The MEM starts with random contents in the words the flows read, plus a few random others.
"""

from __future__ import annotations

import random
from collections import defaultdict

from openlpu import isa, vxm_ops
from openlpu.isa import Dir
from openlpu.params import LpuParams, preset

from .program import HALT, FuzzProgram

__all__ = ["generate", "GeneratorConfig"]

OP = isa.BY_MNEMONIC
VXM_OPS = [i.mnemonic for i in isa.VXM_INSTRUCTIONS if i.mnemonic != "VLC"]
_UNARY = {"VRELU", "VABS", "VNEG", "VCAST", "VEXP", "VRECIP", "VRSQRT"}
_NEEDS32 = {"VREQ", "VEXP", "VRECIP", "VRSQRT"}


class GeneratorConfig:
    """Probabilities of the generator (defaults are the campaign's)."""
    phases = (1, 3)            # phases per program (inclusive range)
    flows = (1, 6)             # flows per phase
    p_faulty = 0.4             # share of programs that get faults on top of their flows
    p_masked = 0.5             # share of programs with CONFIG masks
    p_config = 0.3             # then, per MEM queue and phase: a CONFIG mask somewhere
    p_hang = 0.04              # a barrier without NOTIFY / with an early NOTIFY
    p_overrun = 0.02           # a queue without HALT


class _Phase:
    """One timeline: per queue, the cycles taken and the words placed there."""

    def __init__(self):
        self.busy = defaultdict(set)
        self.items = defaultdict(list)         # queue -> [(t, [words], duration)]

    def free(self, q, t, dur):
        return t >= 0 and not any(x in self.busy[q] for x in range(t, t + dur))

    def put(self, q, t, words, dur):
        self.busy[q].update(range(t, t + dur))
        self.items[q].append((t, list(words), dur))


class _Flow:
    """Requests of one flow: (queue, cycle, words, duration), placed together or not at all."""

    def __init__(self, note):
        self.note = note
        self.reqs = []
        self.mem = {}

    def add(self, q, t, words, dur=None):
        if isinstance(words, int):
            words = [words]
        self.reqs.append((q, t, words, dur if dur is not None else len(words)))


class Generator:
    def __init__(self, params: LpuParams, seed: int, cfg: GeneratorConfig | None = None):
        self.p = params
        self.seed = seed
        self.rng = random.Random(seed)
        self.cfg = cfg or GeneratorConfig()
        self.pos = {s.name: s.position for s in params.floorplan}
        self.mems = [s for s in params.floorplan if s.kind == "mem"]
        self.has = {k: any(s.kind == k for s in params.floorplan) for k in ("vxm", "sxm")}
        self.missing = isa.unavailable(params)
        self.mem = {}
        self.notes = []

    # -- helpers ----------------------------------------------------------------------------
    def enc(self, mnemonic, **f):
        return OP[mnemonic].encode(**f)

    def arrive(self, src, dst, d_func):
        """Cycle offset at which a result driven ``d_func`` after issue by slice ``src`` is
        readable by slice ``dst`` (one SR hop per position)."""
        return d_func + abs(self.pos[dst] - self.pos[src])

    @staticmethod
    def direction(src_pos, dst_pos):
        return Dir.EAST if dst_pos > src_pos else Dir.WEST

    def mem_word(self, sl_index, addr=None, kind="rand"):
        """An address in MEM slice ``sl_index`` with random contents (recorded in the image)."""
        p, r = self.p, self.rng
        if addr is None:
            addr = r.randrange(p.mem_addr_words)
        key = (sl_index, addr)
        if key not in self.mem or kind != "rand":
            if kind == "small":
                data = bytes(r.randrange(0, p.vl + 2) for _ in range(p.vl))
            elif kind == "lanes":
                data = bytes(r.randrange(0, p.lanes + 1) for _ in range(p.vl))
            else:
                data = bytes(r.randrange(256) for _ in range(p.vl))
            self.mem[key] = data
        return addr

    def rep(self, flow, q, t, word, count, interval, stride, field_name=None):
        """``word`` at ``t`` and ``count`` copies every ``interval`` cycles (REPEAT, or the copies
        spelt out when the preset has no REPEAT)."""
        if count == 0:
            flow.add(q, t, word)
            return
        if "REPEAT" not in self.missing:
            flow.add(q, t, [word, self.enc("REPEAT", count=count, interval=interval,
                                          stride=stride)], 1 + count * interval)
            return
        idef, f = isa.decode(word)
        fld = field_name or isa.REPEAT_FIELD.get(idef.mnemonic)
        flow.add(q, t, word)
        for k in range(1, count + 1):
            fk = dict(f)
            if fld:
                bits = next(x.bits for x in idef.fields if x.name == fld)
                fk[fld] = (f[fld] + k * stride) & ((1 << bits) - 1)
            flow.add(q, t + k * interval, idef.encode(**fk))

    def reps(self):
        """(count, interval, stride) of a random REPEAT (count 0: none)."""
        r = self.rng
        if r.random() < 0.6:
            return 0, 1, 0
        return r.randint(1, 4), r.choice([1, 1, 2, 3]), r.choice([0, 1, 1, -1, 2])

    def writer(self, flow, src, t_drive, stream, d, exclude=(), reps=(0, 1, 0)):
        """A MEM WRITE in a slice downstream of ``src`` (in direction ``d``) of the value on
        ``stream`` that ``src`` drives ``t_drive`` cycles after the flow's base."""
        cands = [s for s in self.mems if s.name not in exclude
                 and self.direction(self.pos[src], s.position) == d and s.name != src]
        if not cands:
            return None
        dst = self.rng.choice(cands)
        t = t_drive + abs(dst.position - self.pos[src])
        addr = self.rng.randrange(self.p.mem_addr_words)
        count, iv, stride = reps
        self.rep(flow, f"{dst.name}.write", t,
                 self.enc("WRITE", addr=addr, stream=stream, dir=int(d)), count, iv, stride)
        return dst.name

    def reader(self, flow, dst, t_arrive, stream, exclude=(), reps=(0, 1, 0), kind="rand",
               d=None):
        """A MEM READ whose value reaches slice ``dst`` on ``stream`` at ``t_arrive``."""
        cands = [s for s in self.mems if s.name not in exclude and s.name != dst
                 and (d is None or self.direction(s.position, self.pos[dst]) == d)]
        if not cands:
            return None
        src = self.rng.choice(cands)
        d = self.direction(src.position, self.pos[dst])
        t = t_arrive - self.arrive(src.name, dst, OP["READ"].d_func(self.p))
        count, iv, stride = reps
        addr = self.mem_word(src.index, kind=kind)
        if count:
            for k in range(1, count + 1):
                self.mem_word(src.index, (addr + k * stride) % (1 << 16) % self.p.mem_addr_words,
                              kind=kind)
        self.rep(flow, f"{src.name}.read", t,
                 self.enc("READ", addr=addr, stream=stream, dir=int(d)), count, iv, stride)
        return src.name, d

    # -- flows ------------------------------------------------------------------------------
    def flow_copy(self):
        p, r = self.p, self.rng
        f = _Flow("copy")
        src, dst = r.sample(self.mems, 2)
        d = self.direction(src.position, dst.position)
        s = r.randrange(p.streams)
        count, iv, stride = self.reps()
        addr = self.mem_word(src.index)
        for k in range(1, count + 1):
            self.mem_word(src.index, (addr + k * stride) % p.mem_addr_words)
        self.rep(f, f"{src.name}.read", 0, self.enc("READ", addr=addr, stream=s, dir=int(d)),
                 count, iv, stride)
        t = self.arrive(src.name, dst.name, OP["READ"].d_func(p))
        self.rep(f, f"{dst.name}.write", t,
                 self.enc("WRITE", addr=r.randrange(p.mem_addr_words), stream=s, dir=int(d)),
                 count, iv, r.choice([stride, 1, -1]))
        return f

    def flow_gather(self, scatter=False):
        p, r = self.p, self.rng
        if "GATHER" in self.missing:
            return None
        f = _Flow("scatter" if scatter else "gather")
        a = r.choice(self.mems)
        ms = r.randrange(p.streams)
        if self.reader(f, a.name, 0, ms) is None:
            return None
        md = Dir(isa.decode(f.reqs[-1][2][0])[1]["dir"])
        addr = r.randrange(1 << 14) if r.random() < 0.1 else r.randrange(p.mem_addr_words)
        if scatter:
            ds = r.choice([x for x in range(p.streams) if x != ms] or [ms])
            if self.reader(f, a.name, 0, ds, exclude=(f.reqs[-1][0].split(".")[0],)) is None:
                return None
            dd = Dir(isa.decode(f.reqs[-1][2][0])[1]["dir"])
            f.add(f"{a.name}.write", 0, self.enc("SCATTER", addr=addr, map_stream=ms,
                                                 map_dir=int(md), stream=ds, dir=int(dd)))
            return f
        self.mem_word(a.index, addr % p.mem_addr_words)
        s = r.randrange(p.streams)
        d = r.choice(list(Dir))
        f.add(f"{a.name}.read", 0, self.enc("GATHER", addr=addr, map_stream=ms, map_dir=int(md),
                                            stream=s, dir=int(d)))
        self.writer(f, a.name, OP["GATHER"].d_func(p), s, d)
        return f

    def vxm_word(self, op, a_stream, a_dir, a_chain, b_mode, dtype, out_dir, b_stream=0,
                 b_dir=0, imm=None):
        r = self.rng
        if imm is None:
            imm = {"VCMP": r.randrange(6), "VMULSHR": r.randrange(12), "VCAST": r.randrange(3),
                   "VREQ": r.randrange(32), "VEXP": r.randrange(16)}.get(op, r.randrange(256))
        return self.enc(op, a_stream=a_stream, a_dir=int(a_dir), a_chain=a_chain,
                        b_stream=b_stream, b_dir=int(b_dir), b_mode=b_mode, out_dir=int(out_dir),
                        dtype=dtype, imm=imm)

    def flow_vxm(self):
        if not self.has["vxm"] or self.p.vxm_alus < 2:
            return None
        p, r = self.p, self.rng
        f = _Flow("vxm")
        alus = [f"vxm.{x}" for x in isa.VXM_ALU_ROLES[:p.vxm_alus]]
        r.shuffle(alus)
        op = r.choice(VXM_OPS)
        dtype = 2 if op in _NEEDS32 else r.choice([0, 0, 1, 2])
        w = {0: 1, 1: 2, 2: 4}[dtype]
        lat = isa.VXM_SIMPLE_LATENCY
        cast_to = r.randrange(3)
        wo = {"VCAST": vxm_ops.DTYPE_BYTES[cast_to], "VREQ": 1}.get(op, w)
        sa = r.randrange(p.streams - max(w, wo) + 1)
        if dtype == 0 and r.random() < 0.7:
            # int8 operands straight from MEM
            got = self.reader(f, "vxm", 0, sa)
            if got is None:
                return None
            a_dir, a_chain, t_op = got[1], 0, 0
        else:
            # VCAST an int8 MEM vector to dtype, then chain it into the operation
            got = self.reader(f, "vxm", 0, sa)
            if got is None:
                return None
            out_d = r.choice(list(Dir))
            f.add(alus[1], 0, self.vxm_word("VCAST", sa, got[1], 0, 0, 0, out_d, imm=dtype))
            a_dir, a_chain, t_op = out_d, 1, lat + 1
        b_mode = r.choice([isa.VXM_B_STREAM, isa.VXM_B_CHAIN, isa.VXM_B_CONST, isa.VXM_B_IMM])
        b_stream, b_dir = r.randrange(32), r.randrange(2)
        if op in _UNARY:
            b_mode = r.choice([isa.VXM_B_STREAM, isa.VXM_B_IMM])
        if b_mode in (isa.VXM_B_STREAM, isa.VXM_B_CHAIN):
            wb = 1 if op == "VSEL" else w
            others = [s for s in range(p.streams - wb + 1)
                      if a_chain != (b_mode == isa.VXM_B_CHAIN) or s + wb <= sa or s >= sa + w]
            b_stream = r.choice(others or [0])
            if b_mode == isa.VXM_B_STREAM and wb == 1:
                got = self.reader(f, "vxm", t_op, b_stream)
                b_dir = int(got[1]) if got else 0
            elif b_mode == isa.VXM_B_STREAM:
                b_dir = r.randrange(2)          # a wide stream operand: unwritten bytes
            elif len(alus) > 2:
                got = self.reader(f, "vxm", t_op - lat - 1, b_stream)
                if got is None:
                    return None
                b_dir = r.randrange(2)
                f.add(alus[2], t_op - lat - 1,
                      self.vxm_word("VCAST", b_stream, got[1], 0, 0, 0, b_dir, imm=dtype if wb > 1 else 0))
        if (b_mode == isa.VXM_B_CONST or op == "VSEL") and r.random() < 0.8:
            cs = r.randrange(p.streams)
            got = self.reader(f, "vxm", t_op - 1, cs)
            if got is not None:
                f.add(alus[0], t_op - 1, self.vxm_word("VLC", cs, got[1], 0, 0, 0, 0,
                                                       imm=r.randrange(2)))
        out_dir = r.choice(list(Dir))
        f.add(alus[0], t_op, self.vxm_word(op, sa, a_dir, a_chain, b_mode, dtype, out_dir,
                                           b_stream, b_dir,
                                           imm=cast_to if op == "VCAST" else None))
        t_res = t_op + OP[op].d_func(p)
        used = []
        for _ in range(r.randint(1, 2)):
            got = self.writer(f, "vxm", t_res, sa + r.randrange(wo), out_dir, exclude=used)
            if got:
                used.append(got)
        f.note = f"vxm {op} dtype {dtype}"
        return f

    def flow_mxm(self):
        p, r = self.p, self.rng
        f = _Flow("mxm")
        n = r.randint(1, min(p.vl, 6))
        kind = r.random()
        t = 0
        if kind < 0.3:
            # wide load: `width` rows per cycle, each stream from its own MEM slice, n copies
            # advancing the row by the width
            width = r.randint(1, isa.wide_load_feed_rows(p))
            n = r.randint(1, max(1, min(3, p.vl // width)))
            row = r.randrange(p.vl - width * n + 1)
            s = r.randrange(p.streams - width + 1)
            used = []
            for j in range(width):
                got = self.reader(f, "mxm_w", t, s + j, exclude=used, reps=(n - 1, 1, 1),
                                  d=Dir.WEST)
                if got:
                    used.append(got[0])
            m = f"LWW x{width}"
            self.rep(f, "mxm_w.weights", t, self.enc("LWW", row=row, stream=s,
                                                     dir=int(Dir.WEST), count=width),
                     n - 1, 1, width)
        else:
            lwt = kind < 0.55
            row = r.randrange(p.vl - n + 1)
            s = r.randrange(p.streams)
            self.reader(f, "mxm_w", t, s, reps=(n - 1, 1, 1), d=Dir.WEST)
            m = "LWT" if lwt else "LW"
            fld = "col" if lwt else "row"
            self.rep(f, "mxm_w.weights", t, self.enc(m, **{fld: row}, stream=s,
                                                     dir=int(Dir.WEST)), n - 1, 1, 1)
        t += n + p.superlanes + r.randrange(3)
        f.add("mxm_w.weights", t, self.enc("IW"))
        t += r.randint(1, 3)
        na = r.randint(1, min(4, p.mxm_acc_words))
        acc = r.randrange(p.mxm_acc_words - na + 1)
        s2 = r.randrange(p.streams)
        self.reader(f, "mxm_w", t, s2, reps=(na - 1, 1, 1), d=Dir.WEST)
        self.rep(f, "mxm_w.compute", t, self.enc("ABC", acc=acc, stream=s2, dir=int(Dir.WEST),
                                                 accumulate=int(r.random() < 0.4)), na - 1, 1, 1)
        t += OP["ABC"].d_func(p) + r.randrange(-1, 3) + na - 1
        g = r.randrange(p.stream_groups)
        arow = acc + r.randrange(na)
        f.add("mxm_w.result", t, self.enc("ACC", acc=arow, group=g, dir=int(Dir.EAST)))
        used = []
        for b in r.sample(range(4), r.randint(1, 4)):
            got = self.writer(f, "mxm_w", t + 1, 4 * g + b, Dir.EAST, exclude=used)
            if got:
                used.append(got)
        f.note = f"mxm {m} x{n}, ABC x{na}, ACC"
        return f

    def flow_sxm(self):
        if not self.has["sxm"]:
            return None
        p, r = self.p, self.rng
        side = r.choice(["sxm_w", "sxm_e"])
        f = _Flow("sxm")
        m = r.choice(["SHIFT", "PERMUTE", "DISTRIBUTE", "TRANSPOSE"])
        s_in = r.randrange(p.streams)
        d_in = Dir.WEST if side == "sxm_w" else Dir.EAST
        out_d = Dir.EAST if side == "sxm_w" else Dir.WEST
        s_out = r.randrange(p.streams)
        io = dict(in_stream=s_in, in_dir=int(d_in), out_stream=s_out, out_dir=int(out_d))
        if m == "TRANSPOSE":
            self.reader(f, side, 0, s_in, reps=(p.lanes - 1, 1, 1), d=d_in)
            f.add(f"{side}.transpose", 0, self.enc(m, **io))
            self.writer(f, side, OP[m].d_func(p), s_out, out_d, reps=(p.lanes - 1, 1, 1))
        else:
            self.reader(f, side, 0, s_in, d=d_in)
            extra = {}
            queue = "shift" if m == "SHIFT" else "permute"
            if m == "SHIFT":
                extra["amount"] = r.randint(-p.vl - 1, p.vl + 1)
            else:
                ms = r.choice([x for x in range(p.streams) if x != s_in])
                got = self.reader(f, side, 0, ms, kind="small" if m == "PERMUTE" else "lanes",
                                  d=d_in, exclude=(f.reqs[0][0].split(".")[0],))
                extra.update(map_stream=ms, map_dir=int(got[1]) if got else int(d_in))
            f.add(f"{side}.{queue}", 0, self.enc(m, **io, **extra))
            self.writer(f, side, OP[m].d_func(p), s_out, out_d)
        f.note = f"sxm {side} {m}"
        return f

    # -- faults -----------------------------------------------------------------------------
    def random_legal(self, q):
        """A random instruction the queue accepts, fields anywhere in their ISA range but
        mostly in the preset's ranges."""
        p, r = self.p, self.rng
        cands = [i for i in isa.INSTRUCTIONS if isa.available(i, q.role, p)
                 and i.mnemonic not in ("HALT", "SYNC", "NOTIFY", "REPEAT")]
        idef = r.choice(cands)
        limits = {"addr": p.mem_addr_words, "stream": p.streams, "map_stream": p.streams,
                  "a_stream": p.streams, "b_stream": p.streams, "row": p.vl, "col": p.vl,
                  "acc": p.mxm_acc_words, "group": p.stream_groups, "count": 8, "dtype": 3,
                  "amount": p.vl + 2}
        vals = {}
        for fl in idef.fields:
            hi = limits.get(fl.name)
            if hi is not None and r.random() < 0.9:
                vals[fl.name] = max(fl.min, min(fl.max, r.randrange(-hi if fl.signed else 0, hi)))
            else:
                vals[fl.name] = r.randint(fl.min, fl.max if fl.max < 64 or r.random() < 0.3 else 63)
        if idef.mnemonic == "NOP":
            vals["count"] = r.randint(1, 6)
        return idef.encode(**vals)

    def fault_word(self, q):
        """A word that should raise an error: undecodable, wrong queue, not implemented, or a
        field out of the preset's range."""
        p, r = self.p, self.rng
        kind = r.choice(["raw", "wrong_queue", "range", "range", "missing"])
        if kind == "raw":
            return r.getrandbits(32)
        if kind == "missing" and self.missing:
            m = r.choice(sorted(self.missing))
            idef = OP[m]
            return idef.encode(**{fl.name: max(fl.min, 0) for fl in idef.fields})
        if kind == "wrong_queue":
            idef = r.choice([i for i in isa.INSTRUCTIONS if not isa.allowed(i, q.role)])
            return idef.encode(**{fl.name: max(fl.min, 0) for fl in idef.fields})
        # out of range for the preset
        cands = [i for i in isa.INSTRUCTIONS if isa.available(i, q.role, p)
                 and i.mnemonic not in isa.CONTROL_MNEMONICS]
        if not cands:
            return r.getrandbits(32)
        idef = r.choice(cands)
        vals = {fl.name: max(fl.min, 0) for fl in idef.fields}
        over = {"addr": p.mem_addr_words, "stream": p.streams, "map_stream": p.streams,
                "a_stream": p.streams - 1, "row": p.vl, "col": p.vl, "acc": p.mxm_acc_words,
                "group": p.stream_groups, "dtype": 3, "imm": 6, "in_stream": p.streams,
                "out_stream": p.streams, "count": isa.wide_load_max_rows(p) + 1}
        names = [fl for fl in idef.fields if fl.name in over and over[fl.name] <= fl.max]
        if names:
            fl = r.choice(names)
            vals[fl.name] = r.randint(over[fl.name], fl.max)
        return idef.encode(**vals)

    # -- assembly ---------------------------------------------------------------------------
    def place(self, phase, flow, tries=12):
        if flow is None or not flow.reqs:
            return False
        lo = -min(t for _, t, _, _ in flow.reqs)
        for _ in range(tries):
            base = lo + self.rng.randrange(0, 24)
            if all(phase.free(q, base + t, dur) for q, t, _, dur in flow.reqs):
                # two requests of one flow in one queue must not overlap either
                seen = defaultdict(set)
                ok = True
                for q, t, _, dur in flow.reqs:
                    span = set(range(base + t, base + t + dur))
                    if seen[q] & span:
                        ok = False
                        break
                    seen[q] |= span
                if not ok:
                    return False
                for q, t, words, dur in flow.reqs:
                    phase.put(q, base + t, words, dur)
                self.notes.append(flow.note)
                return True
        return False

    def generate(self) -> FuzzProgram:
        p, r, cfg = self.p, self.rng, self.cfg
        faulty = r.random() < cfg.p_faulty
        masked = r.random() < cfg.p_masked
        kinds = [self.flow_copy, self.flow_gather, lambda: self.flow_gather(True), self.flow_vxm,
                 self.flow_vxm, self.flow_mxm, self.flow_sxm, self.flow_sxm]
        phases = []
        for _ in range(r.randint(*cfg.phases)):
            ph = _Phase()
            for _ in range(r.randint(*cfg.flows)):
                self.place(ph, r.choice(kinds)())
            for s in self.mems:
                for role in ("read", "write"):
                    if masked and r.random() < cfg.p_config:
                        q = f"{s.name}.{role}"
                        mask = r.randrange(1 << p.superlanes) if r.random() < 0.9 \
                            else r.randrange(1 << 16)
                        for _ in range(8):
                            t = r.randrange(0, 30)
                            if ph.free(q, t, 1):
                                ph.put(q, t, [self.enc("CONFIG", mask=mask)], 1)
                                self.notes.append(f"CONFIG {mask:#x} in {q}")
                                break
            if faulty:
                for _ in range(r.randint(1, 8)):
                    q = r.choice(p.queues)
                    t = r.randrange(0, 40)
                    if ph.free(q.name, t, 1):
                        w = self.fault_word(q) if r.random() < 0.4 else self.random_legal(q)
                        ph.put(q.name, t, [w], 1)
                        self.notes.append(f"fault/noise word 0x{w:08x} in {q.name}")
            phases.append(ph)

        # queue words, phase by phase, with barriers between phases
        queues = {q.name: [] for q in p.queues}
        cursor = {q.name: 0 for q in p.queues}    # cycle within the current phase
        last_used = {}
        for k, ph in enumerate(phases):
            for q in ph.items:
                last_used[q] = k
        for k, ph in enumerate(phases):
            for q in p.queues:
                for t, words, dur in sorted(ph.items.get(q.name, []), key=lambda x: x[0]):
                    gap = t - cursor[q.name]
                    while gap > 0:
                        n = min(gap, isa.NOP_MAX)
                        queues[q.name].append(self.enc("NOP", count=n))
                        gap -= n
                    queues[q.name] += words
                    cursor[q.name] = t + dur
            later = [q.name for q in p.queues if last_used.get(q.name, -1) > k]
            if not later:
                break
            end = max(cursor[q] for q in later)
            notifier = r.choice(later)
            hang = r.random() < cfg.p_hang
            for q in later:
                if q == notifier:
                    t_n = end if not hang else r.randrange(0, end + 1)
                    if t_n > cursor[q]:
                        queues[q].append(self.enc("NOP", count=t_n - cursor[q]))
                    if not (hang and r.random() < 0.5):
                        queues[q].append(self.enc("NOTIFY"))
                    else:
                        queues[q].append(self.enc("SYNC"))
                else:
                    queues[q].append(self.enc("SYNC"))
                cursor[q] = 0
            if hang:
                self.notes.append("barrier that may hang")
        fill = {}
        for q in p.queues:
            words = queues[q.name]
            if faulty and r.random() < 0.08 and "REPEAT" not in self.missing:
                words.insert(0, self.enc("REPEAT", count=1, interval=1, stride=0))
                self.notes.append(f"REPEAT first in {q.name}")
            if r.random() < cfg.p_overrun and len(words) < p.imem_words:
                fill[q.name] = r.choice([0, self.enc("NOP", count=1)])
                self.notes.append(f"no HALT in {q.name}")
            else:
                words.append(HALT)
            if len(words) > p.imem_words:
                del words[p.imem_words:]
        # a few random MEM words
        for _ in range(r.randint(0, 6)):
            self.mem_word(r.randrange(2 * p.mem_slices))
        return FuzzProgram(preset=p.name, queues={k: v for k, v in queues.items() if v != [HALT]},
                           mem=dict(self.mem), fill=fill, seed=self.seed, notes=self.notes)


def generate(params: LpuParams | str, seed: int, cfg: GeneratorConfig | None = None) -> FuzzProgram:
    """One random program for ``params`` (a preset or its name), reproducible from ``seed``."""
    if isinstance(params, str):
        params = preset(params)
    return Generator(params, seed, cfg).generate()
