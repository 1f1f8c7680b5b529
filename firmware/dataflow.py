"""Dataflow builder: express one job (e.g. one tensor row) as MEM reads, VXM/SXM operations and MEM
writes; get it placed on the exact cycles the timing rule dictates.

A :class:`Flow` collects tentative instructions with times relative to the job's start, together
with the stream-register slots its values occupy and the MEM banks it touches. Operands from MEM
are *lazy* (:class:`MemSrc`): their READs are placed backwards from the cycle their consumer samples
them, so every operand of an instruction arrives in exactly the same cycle. :meth:`Schedule.commit`
(see :func:`commit`) then finds the earliest offset at which a flow fits next to everything
already placed on the :class:`~openlpu.firmware.chipstate.ChipState` (by hand or by other flows):
no queue slot used twice, no stream slot needed by two values, no MEM bank read and written in
one cycle, no cycle whose stream registers a kernel uses untracked. Kernels build one flow per row
and commit them one after the other, which pipelines the rows as densely as the resources allow.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from openlpu import isa, vxm_ops
from openlpu.isa import Dir
from openlpu.params import LpuParams

from .chipstate import lead, stream_path
from .schedule import CompileError, Schedule

__all__ = ["Flow", "MemSrc", "Val", "commit", "INT8", "INT16", "INT32"]

INT8, INT16, INT32 = 0, 1, 2


@dataclass(frozen=True)
class MemSrc:
    """A vector (``len(planes)`` byte planes) in MEM, to be READ when a consumer needs it.

    ``planes`` lists ``(slice name, address)`` per byte plane; plane ``b`` travels on
    ``stream + b``.
    """
    planes: tuple
    stream: int
    dtype: int = INT8


# Names of the values VXM and SXM instructions of flows drive (see ``Val.token``).
_DRIVES = itertools.count(1)


@dataclass(frozen=True)
class Val:
    """A vector on streams ``stream ..`` flowing ``dir``, driven at ``t_drive`` by the slice at
    ``pos`` (relative time within its flow).

    ``token`` names the instruction that drove it when place and time do not: the VXM's ALUs
    share one position, so two of them driving one stream in one cycle (say the last op of one
    vector's chain and the first of a later vector's) are two values, which :func:`commit`
    must see as a conflict. ``None`` (a value driven where and when only one instruction can
    drive it, e.g. by hand-placed MXM instructions) names the value by place and time alone,
    as :meth:`ChipState.drive` does."""
    stream: int
    nbytes: int
    dir: Dir
    pos: int
    t_drive: int
    dtype: int
    token: int | None = None

    def arrival(self, q: int, *, chain: bool = False) -> int:
        """Cycle the slice at ``q`` samples it (``chain``: the producer's own output side)."""
        dist = (q - self.pos) if self.dir == Dir.EAST else (self.pos - q)
        if chain:
            if dist != 0:
                raise CompileError("a chained operand must come from the same slice")
            return self.t_drive + 1
        if dist <= 0:
            raise CompileError(f"value flowing {self.dir.name} from position {self.pos} never "
                               f"reaches position {q}")
        return self.t_drive + dist


@dataclass
class Flow:
    """Tentative instructions of one job, times relative to its start."""
    params: LpuParams
    ops: list = field(default_factory=list)      # (queue, t, mnemonic, fields)
    occ: list = field(default_factory=list)      # (dir, stream, column, cycle)
    banks: list = field(default_factory=list)    # (slice index, "r"/"w", cycle, bank)
    alu_pool: tuple = isa.VXM_ALU_ROLES

    # -- low level ---------------------------------------------------------------------------
    def _op(self, queue, t, mnemonic, **f):
        self.ops.append((queue, t, mnemonic, f))

    def _occupy(self, d: Dir, stream: int, pos: int, t_drive: int, q_far: int, token=None):
        """Record the SR slots a value driven at ``t_drive`` by ``pos`` uses up to ``q_far``.

        A value is identified by where and when it was driven (and by its driving instruction's
        ``token``, see :class:`Val`), so several consumers of one value share its slots while
        two different values on one slot are a conflict.
        """
        vid = (d, stream, pos, t_drive) if token is None else (d, stream, pos, t_drive, token)
        self.occ.extend((*k, vid) for k in stream_path(d, stream, pos, t_drive, q_far))

    def _pos(self, slice_name):
        return self.params.slice(slice_name).position

    # -- operands ----------------------------------------------------------------------------
    def materialize(self, src, q: int, t: int, *, chain: bool = False) -> tuple:
        """Make operand ``src`` available to the slice at ``q`` at cycle ``t``.

        Returns ``(stream, dir, chain)`` for the consumer's fields.
        """
        if isinstance(src, Val):
            if src.arrival(q, chain=chain) != t:
                raise CompileError(f"operand arrives at {src.arrival(q, chain=chain)}, "
                                   f"needed at {t}")
            for b in range(src.nbytes):
                self._occupy(src.dir, src.stream + b, src.pos, src.t_drive, q, src.token)
            return src.stream, src.dir, chain
        p = self.params
        d_read = lead(p, "READ", q, q)
        dirs = set()
        for b, (sname, addr) in enumerate(src.planes):
            sl = p.slice(sname)
            d = Dir.EAST if sl.position < q else Dir.WEST
            if sl.position == q:
                raise CompileError(f"{sname} cannot feed the slice at its own position")
            dirs.add(d)
            t_read = t - lead(p, "READ", sl, q)
            self._op(f"{sname}.read", t_read, "READ", addr=addr, stream=src.stream + b, dir=d)
            self.banks.append((sl.index, "r", t_read, p.mem_bank_of(addr)))
            self._occupy(d, src.stream + b, sl.position, t_read + d_read, q)
        if len(dirs) != 1:
            raise CompileError("all byte planes of an operand must arrive from the same side")
        return src.stream, dirs.pop(), False

    @staticmethod
    def _lead(src, q, p) -> int:
        """Earliest relative cycle at which ``src`` can be sampled at ``q``."""
        if isinstance(src, Val):
            return src.arrival(q)
        return max(lead(p, "READ", s, q) for s, _ in src.planes)

    # -- VXM ---------------------------------------------------------------------------------
    def vxm(self, op: str, a, b=None, *, dtype: int, out_dir: Dir, imm: int = 0,
            b_const: bool = False, b_imm: int | None = None, t: int | None = None,
            alu: str | None = None, a_chain: bool = False, b_chain: bool = False) -> Val:
        """Place VXM ``op`` (mnemonic without the leading V) on operands ``a`` (and ``b``)."""
        p = self.params
        vx = p.slice("vxm")
        q = vx.position
        idef = isa.BY_MNEMONIC["V" + op]
        srcs = [a] + ([b] if b is not None else [])
        fixed = [s.arrival(q, chain=c) for s, c in ((a, a_chain), (b, b_chain))
                 if isinstance(s, Val)]
        if fixed:
            if len(set(fixed)) != 1:
                raise CompileError(f"V{op}: operands arrive at different cycles {fixed}")
            t0 = fixed[0]
        else:
            t0 = max(self._lead(s, q, p) for s in srcs)
        if t is not None:
            if fixed and t != t0:
                raise CompileError(f"V{op}: cannot issue at {t}, operands arrive at {t0}")
            t0 = max(t0, t) if not fixed else t0
        a_stream, a_dir, a_ch = self.materialize(a, q, t0, chain=a_chain)
        f = dict(a_stream=a_stream, a_dir=a_dir, a_chain=int(a_ch), b_stream=0, b_dir=0,
                 b_mode=isa.VXM_B_STREAM, out_dir=out_dir, dtype=dtype, imm=imm)
        if b is not None:
            b_stream, b_dir, b_ch = self.materialize(b, q, t0, chain=b_chain)
            f.update(b_stream=b_stream, b_dir=b_dir,
                     b_mode=isa.VXM_B_CHAIN if b_ch else isa.VXM_B_STREAM)
        elif b_const:
            f["b_mode"] = isa.VXM_B_CONST
        elif b_imm is not None:
            if not -32 <= b_imm < 32:
                raise CompileError(f"immediate {b_imm} does not fit 6 bits")
            v = b_imm & 63
            f.update(b_mode=isa.VXM_B_IMM, b_stream=v & 31, b_dir=v >> 5)
        self._op(f"vxm.{alu}" if alu else "vxm.?", t0, "V" + op, **f)
        out_dtype = {"CAST": imm & 3, "REQ": INT8}.get(op, dtype)
        if op == "LC":
            return None
        return Val(a_stream, vxm_ops.DTYPE_BYTES[out_dtype], out_dir, q,
                   t0 + lead(p, idef, q, q), out_dtype, next(_DRIVES))

    # -- SXM -----------------------------------------------------------------------------------
    def sxm(self, op: str, x, *, side: str, out_stream: int, out_dir: Dir, amount: int = 0,
            amap=None) -> Val:
        """Place SXM ``op`` (SHIFT, PERMUTE, DISTRIBUTE) of the SXM on ``side`` ('w' or 'e')."""
        p = self.params
        sx = p.slice(f"sxm_{side}")
        q = sx.position
        idef = isa.BY_MNEMONIC[op]
        srcs = [x] + ([amap] if amap is not None else [])
        fixed = [s.arrival(q) for s in srcs if isinstance(s, Val)]
        if fixed and len(set(fixed)) != 1:
            raise CompileError(f"{op}: operands arrive at different cycles {fixed}")
        t0 = fixed[0] if fixed else max(self._lead(s, q, p) for s in srcs)
        in_stream, in_dir, _ = self.materialize(x, q, t0)
        f = dict(in_stream=in_stream, in_dir=in_dir, out_stream=out_stream, out_dir=out_dir)
        if op == "SHIFT":
            f["amount"] = amount
        else:
            ms, md, _ = self.materialize(amap, q, t0)
            f.update(map_stream=ms, map_dir=md)
        role = idef.roles[0]
        self._op(f"{sx.name}.{role}", t0, op, **f)
        return Val(out_stream, 1, out_dir, q, t0 + lead(p, idef, q, q), INT8, next(_DRIVES))

    # -- MEM writes ----------------------------------------------------------------------------
    def write(self, val: Val, planes) -> int:
        """WRITE each byte plane of ``val`` (``planes``: (slice name, address) per byte)."""
        p = self.params
        if len(planes) != val.nbytes:
            raise CompileError(f"value has {val.nbytes} byte plane(s), {len(planes)} given")
        last = 0
        for b, (sname, addr) in enumerate(planes):
            sl = p.slice(sname)
            t = val.arrival(sl.position)
            self._occupy(val.dir, val.stream + b, val.pos, val.t_drive, sl.position, val.token)
            self._op(f"{sname}.write", t, "WRITE", addr=addr, stream=val.stream + b, dir=val.dir)
            self.banks.append((sl.index, "w", t, p.mem_bank_of(addr)))
            last = max(last, t)
        return last


def commit(state, flow: Flow, earliest: int = 0, *, limit: int = 1 << 16) -> int:
    """Place ``flow`` at the first offset >= ``earliest`` where it fits next to everything
    already on ``state`` (a :class:`~openlpu.firmware.chipstate.ChipState`: instructions placed
    by hand or by other flows, their MEM bank ports and the stream slots claimed); returns the
    offset. A plain :class:`Schedule` gets a chip state of its own, kept beside it.

    VXM operations without a fixed ALU go to the first ALU queue free at their cycle.
    """
    from .chipstate import ChipState
    if isinstance(state, Schedule):
        st = state.__dict__.get("_state")
        if st is None:
            st = state.__dict__["_state"] = ChipState(state.params)
            st.sched = state
        state = st
    lo = -min((t for _, t, _, _ in flow.ops), default=0)
    off = max(earliest, lo)
    for _ in range(limit):
        ok, alu_choice = _fits(state, flow, off)
        if ok:
            for i, (queue, t, m, f) in enumerate(flow.ops):
                state.place(alu_choice.get(i, queue), t + off, m, **f)
            for d, s, c, t, vid in flow.occ:
                state.streams[(d, s, c, t + off)] = _shift_vid(vid, off)
            if flow.occ:
                state.stream_hi = max(state.stream_hi, max(o[3] for o in flow.occ) + off)
            return off
        off += 1
    raise CompileError(f"could not place a job within {limit} cycles")


def _shift_vid(vid, off):
    d, s, pos, t, *token = vid
    return (d, s, pos, t + off, *token)


def _fits(state, flow, off):
    """Whether ``flow`` at offset ``off`` fits ``state`` (queue slots, stream slots, bank
    ports); ``(ok, {op index: chosen VXM ALU queue})``."""
    used = set()
    alu_choice = {}
    params = state.params
    for i, (queue, t, m, f) in enumerate(flow.ops):
        tt = t + off
        if queue == "vxm.?":
            having = isa.vxm_alus_with(params, m)      # ALUs with m's function unit
            if not having:
                why = isa.unavailable_reason(isa.BY_MNEMONIC[m], "alu0", params)
                raise CompileError(f"no VXM ALU implements {m}: {why}")
            for role in (r for r in flow.alu_pool if r in having):
                qn = f"vxm.{role}"
                if not state.busy(qn, tt) and (qn, tt) not in used:
                    alu_choice[i] = qn
                    used.add((qn, tt))
                    break
            else:
                return False, {}
            continue
        if state.busy(queue, tt) or (queue, tt) in used:
            return False, {}
        used.add((queue, tt))
    if flow.occ and state.streams_opaque_in(min(o[3] for o in flow.occ) + off,
                                            max(o[3] for o in flow.occ) + off):
        return False, {}
    seen = {}
    occ = state.streams
    for d, s, c, t, vid in flow.occ:
        key = (d, s, c, t + off)
        v = _shift_vid(vid, off)
        if occ.get(key, v) != v or seen.get(key, v) != v:
            return False, {}
        seen[key] = v
    new_banks = {}
    banks = state.banks
    for sl, port, t, bank in flow.banks:
        other = "w" if port == "r" else "r"
        tt = t + off
        if banks.get((sl, other, tt), new_banks.get((sl, other, tt))) == bank:
            return False, {}
        new_banks[(sl, port, tt)] = bank
    return True, alu_choice
