"""The MXM slice: an int8 weight-stationary VL x VL matrix unit with int32 accumulators.

See ``docs/architecture.md`` ("MXM pipeline") for the contract and :mod:`openlpu.isa` for the
instructions it executes (``LW``, ``LWT``, ``IW`` on the ``weights`` queue, ``ABC`` on ``compute``,
``ACC`` on ``result``).
"""

from amaranth.hdl import Array, C, Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from openlpu import isa
from openlpu.params import LpuParams, SliceInfo

from .common import (ERROR_BITS, decode_stage, instruction_line, issue_signature, stream_column,
                     stream_drive, stream_slot)

__all__ = ["MxmSlice"]

# Which queue of the slice executes which instruction (checked against the ISA table below).
_QUEUE_OF = {"LW": "weights", "LWT": "weights", "LWW": "weights", "IW": "weights",
             "ABC": "compute", "ACC": "result"}


def _booth_product(a, w):
    """``a * w`` for signed 8-bit ``a`` and ``w``, as radix-4 Booth partial products of ``a``.

    ``w`` is recoded into four digits ``d_i`` in ``{-2..2}`` (from bits ``w[2i+1], w[2i],
    w[2i-1]``); each partial product is ``a``, ``2a`` or 0, inverted when ``d_i < 0``, and the
    inversions' +1 are added as separate terms. The result is a sum expression (no
    multiplier cell), so the synthesizer builds one adder tree per dot product. Same value as
    ``a * w``; fewer LUTs than a LUT multiplier (``LpuParams.mxm_booth``).
    """
    a = a.as_signed()
    wb = Cat(C(0, 1), w)                   # w[-1] = 0
    terms = []
    for i in range(4):
        b0, b1, b2 = wb[2 * i], wb[2 * i + 1], wb[2 * i + 2]
        one = b0 ^ b1                      # |d_i| = 1
        two = (b2 & ~b1 & ~b0) | (~b2 & b1 & b0)   # |d_i| = 2
        mag = Mux(one, a, Mux(two, a << 1, 0))     # signed
        pp = mag ^ b2.as_signed()          # d_i < 0: ~mag (XOR with -1; the +1 below)
        terms.append(pp << (2 * i))
        terms.append(b2.as_unsigned() << (2 * i))
    return _tree_sum(terms)


def _tree_sum(values):
    """Balanced adder tree (Amaranth widens every level, so nothing overflows)."""
    values = list(values)
    while len(values) > 1:
        pairs = [values[i] + values[i + 1] for i in range(0, len(values) - 1, 2)]
        if len(values) % 2:
            pairs.append(values[-1])
        values = pairs
    return values[0]


class MxmSlice(wiring.Component):
    """Matrix execution slice (MXM): ``superlanes`` tiles of an int8 VL x VL weight-stationary array.

    Superlane ``c`` owns activations ``k`` in ``[c*lanes, (c+1)*lanes)``: it holds the weights
    ``W[n][k]`` of those ``k`` for every output lane ``n`` (a shadow and an active copy, both in
    registers: ``shadow[c][n][k - c*lanes]``), ``lanes x VL`` signed 8x8 multipliers with one adder tree per output lane, and
    its own accumulator of ``mxm_acc_words`` rows of ``lanes`` int32 (an
    :class:`amaranth.lib.memory.Memory` with one write port and two synchronous read ports, both
    transparent for the write port).

    Timing (instruction issued at cycle ``t``; superlane ``c`` executes it at ``t + c``; every
    instruction register is shifted north one superlane per cycle; ``S = superlanes``,
    ``P = mxm_pipeline``):

    * ``LW row, stream, dir``: superlane ``c`` samples the stream at ``t + c`` and writes its
      ``lanes`` bytes into shadow row ``row`` at the end of that cycle.
    * ``LWT col, stream, dir`` (transposed load, ``L = lanes``): superlane ``c`` samples its chunk
      of the stream (lanes ``n`` in ``[c*L, (c+1)*L)``, same stream selection as ``LW``) at
      ``t + c`` and writes, at the end of that cycle, byte ``n - c*L`` of it into shadow row
      ``n``, element ``col``: register ``shadow[col // L][n][col % L]``. One ``LWT`` thus writes
      the superlane holding column ``col`` from every superlane, one superlane per cycle over
      ``S`` cycles. When an ``LW`` and an ``LWT`` write the same shadow byte in the same cycle,
      the ``LWT`` wins. The superlane-0 frame (the whole column written at the end of ``t``)
      holds when an ``IW`` issues at least ``S`` cycles after an ``LWT``, an ``LWT`` at least
      ``S`` cycles after an ``IW``, and an ``LW`` and an ``LWT`` writing the same byte are at
      least ``S`` cycles apart (the reference model raises ``ScheduleHazard`` for the first two).
    * ``LWW row, stream, dir, count`` (wide load, ``K = isa.wide_load_max_rows``): superlane
      ``c`` samples streams ``stream .. stream + count - 1`` at ``t + c`` (``K`` stream selects
      per superlane, the first shared with ``LW``) and writes stream ``stream + i`` into shadow
      row ``row + i`` at the end of that cycle, exactly as ``count`` ``LW`` instructions of one
      cycle would (so the ``LW``/``LWT`` ordering rule below applies row by row).
    * ``IW``: superlane ``c`` copies shadow into active at the end of ``t + c``; an ``ABC`` in
      the same superlane and cycle still multiplies with the old weights.
    * ``ABC acc, stream, dir, accumulate``: superlane ``c`` samples its activations and forms its
      products at ``t + c``; after ``P`` register stages (``P >= 1`` registers the products,
      ``P >= 2`` also the per-superlane adder-tree sums, further stages delay those sums) it adds
      them to the partial sums registered by superlane ``c - 1`` one cycle earlier. The full
      result leaves the top superlane's register in cycle ``t + S + P``; chunk ``j`` is delayed
      ``j`` cycles and written to superlane ``j``'s accumulator row ``acc`` at the edge ending
      cycle ``t + S + P + j`` (``= t + d_func + j``), overwriting it or adding to it (int32
      wrap-around). The read for the addition is issued one cycle earlier on a transparent
      port, so accumulating ``ABC`` instructions to one row may follow each other every cycle.
    * ``ACC acc, group, dir``: superlane ``c`` reads row ``acc`` at ``t + c`` (transparent: it
      sees a write of the same cycle) and drives it at ``t + c + 1`` on streams ``4*group + b``
      (byte ``b`` of each lane) of ``drive_east`` or ``drive_west``. ``data`` carries the
      accumulator bytes on every stream; only ``en`` selects.

    With ``mxm_act_reg`` (``A = 1``) the selected stream bytes are registered after the
    select: the stream is still sampled (and ``STREAM_UNWRITTEN`` checked) at ``t + c``, but
    ``LW``/``LWT`` write the shadow, ``IW`` copies it and ``ABC`` forms its products one cycle
    later, at ``t + c + 1``, so every rule above holds unchanged and ABC's accumulator write
    moves to ``t + S + P + 1 + j`` (``= t + d_func + j``).

    Errors (``openlpu.isa.ErrorFlag``, pulsed on ``error``), as in the reference model:
    ``ADDR_RANGE`` in the issue cycle ``t`` when ``LW row >= VL``, ``LWT col >= VL``,
    ``LWW row + count > VL`` or ``stream + count > streams`` (it then samples and writes nothing),
    ``ABC``/``ACC`` ``acc >= mxm_acc_words``, ``LW``/``LWT``/``ABC`` ``stream >= streams`` or
    ``ACC`` ``group >= streams / 4``. A bad row, column or accumulator row writes nothing, a bad
    ``ACC`` drives nothing, an ``LW``/``LWT``/``ABC`` with a bad stream executes on a zero vector.
    ``STREAM_UNWRITTEN`` at ``t + c`` when an ``LW``, ``LWT``, ``ABC`` or in-range ``LWW`` in
    superlane ``c`` samples an existing slot with ``valid = 0``.

    Parameters
    ----------
    params : LpuParams
        Chip geometry; uses ``lanes``, ``superlanes``, ``streams``, ``mxm_acc_words``,
        ``mxm_pipeline``, ``mxm_act_reg``.
    slice_info : SliceInfo
        The floorplan entry of this slice (``kind`` must be ``"mxm"``).

    Members
    -------
    sr_east_in, sr_west_in : ``In(stream_column(params))``
        Eastward streams of the west SR column, westward streams of the east SR column.
    drive_east, drive_west : ``Out(stream_drive(params))``
        ``ACC`` results onto the east / west SR column.
    instr_weights, instr_compute, instr_result : ``In(issue_signature())``
        Instructions issued this cycle by the slice's three queues.
    error : ``Out(ERROR_BITS)``
        Error flags raised this cycle.
    """

    def __init__(self, params, slice_info):
        if not isinstance(params, LpuParams):
            raise TypeError(f"params must be an LpuParams, not {params!r}")
        if not isinstance(slice_info, SliceInfo) or slice_info.kind != "mxm":
            raise ValueError(f"slice_info must be a SliceInfo of kind 'mxm', not {slice_info!r}")
        roles = isa.QUEUE_ROLES["mxm"]
        for mnemonic, role in _QUEUE_OF.items():
            if role not in roles or not isa.allowed(isa.BY_MNEMONIC[mnemonic], role):
                raise ValueError(f"ISA table: {mnemonic} is not allowed in MXM queue {role!r}; "
                                 f"the MXM slice expects it there")
        self._params = params
        self._slice_info = slice_info
        members = {
            "sr_east_in": In(stream_column(params)),
            "sr_west_in": In(stream_column(params)),
            "drive_east": Out(stream_drive(params)),
            "drive_west": Out(stream_drive(params)),
        }
        for role in roles:
            members[f"instr_{role}"] = In(issue_signature())
        members["error"] = Out(ERROR_BITS)
        super().__init__(members)

    @property
    def params(self):
        return self._params

    @property
    def slice_info(self):
        return self._slice_info

    @property
    def multipliers(self) -> int:
        """Number of signed 8x8 multipliers (``lanes * VL`` per superlane, ``VL**2`` in all)."""
        return self._params.vl * self._params.vl

    def elaborate(self, platform):
        m = Module()
        p = self._params
        S, L, VL, P = p.superlanes, p.lanes, p.vl, p.mxm_pipeline
        A = int(p.mxm_act_reg)                  # operand register after the stream select
        depth = p.mxm_acc_words
        d_func = isa.BY_MNEMONIC["ABC"].d_func(p)
        if d_func != S + P + A:
            raise RuntimeError(f"ABC latency {d_func} in the ISA table does not match the MXM "
                               f"datapath (superlanes + mxm_pipeline + mxm_act_reg = {S + P + A})")

        def line(role, length):
            return instruction_line(m, getattr(self, f"instr_{role}"), role, length)

        decode = decode_stage

        w_line = line("weights", S + A)         # superlane c: samples at [c], updates at [c + A]
        c_line = line("compute", 2 * S + P + A)  # superlane c: [c]; acc row j: [S+P+A+j-1/0]
        r_line = line("result", S + 1)          # superlane c reads at [c], drives at [c + 1]

        # -- stream operand selection --------------------------------------------------------
        slot_layout = stream_slot(p)

        def select(c, stream, direction, name):
            """The slot ``stream`` of direction ``direction`` in superlane ``c`` (0 if none)."""
            slot = Signal(slot_layout, name=name)
            with m.Switch(Cat(stream, direction)):
                for d, column in ((isa.Dir.EAST, self.sr_east_in), (isa.Dir.WEST, self.sr_west_in)):
                    for s in range(p.streams):
                        with m.Case(s | (int(d) << len(stream))):
                            m.d.comb += slot.eq(column[c][s])
            return slot

        # LW, LWT and LWW share the stream operand fields (same bit positions): one slot
        # select, LWW's first stream; LW and LWW share the row field
        for other, flds in (("LWT", ("stream", "dir")), ("LWW", ("row", "stream", "dir"))):
            for fld in flds:
                if isa.layout("LW")[fld] != isa.layout(other)[fld]:
                    raise RuntimeError(f"ISA table: LW and {other} must place field {fld!r} at "
                                       f"the same bit position (the MXM shares their decode)")
        K = isa.wide_load_max_rows(p)           # LWW: rows (streams) per cycle

        def lww_ok(lww):
            """LWW's rows and streams are on the chip (else ADDR_RANGE, nothing written)."""
            return (lww.row + lww.count <= VL) & (lww.stream + lww.count <= p.streams)

        psum_shape = signed(ceil_log2(VL * 128 * 128 + 1) + 1)   # exact: no wrap before int32
        unwritten = []
        # weights of superlane c: shadow[c][n] / active[c][n], row n (output lane), lanes bytes
        # each (element k - c*L)
        shadow = [[Signal(data.ArrayLayout(unsigned(8), L), name=f"shadow_{c}_{n}", reset_less=True)
                   for n in range(VL)] for c in range(S)]
        active = [[Signal(data.ArrayLayout(unsigned(8), L), name=f"active_{c}_{n}", reset_less=True)
                   for n in range(VL)] for c in range(S)]
        w_slots = []
        for c in range(S):
            is_lw, lw = decode(w_line[c], "LW")
            is_lwt, _ = decode(w_line[c], "LWT")
            is_lww, lww = decode(w_line[c], "LWW")
            w_slot = select(c, lw.stream, lw.dir, f"w_slot_{c}")      # LW's, LWT's, LWW's first
            unwritten.append((is_lw | is_lwt) & (lw.stream < p.streams) & ~w_slot.valid)
            # LWW: streams stream + j (j < count) of the same direction, rows row + j
            wide = [w_slot] + [select(c, lww.stream + j, lww.dir, f"lww_slot_{c}_{j}")
                               for j in range(1, K)]
            lww_live = Signal(name=f"lww_live_{c}")
            m.d.comb += lww_live.eq(is_lww & lww_ok(lww))
            unwritten.append(lww_live & Cat(*[(lww.count > j) & ~wide[j].valid
                                              for j in range(K)]).any())
            w_data = w_slot.data
            wide_data = [x.data.as_value() for x in wide]
            if A:
                w_data = Signal.like(w_slot.data, name=f"w_data_r_{c}", reset_less=True)
                m.d.sync += w_data.eq(w_slot.data)
                regs = [Signal(8 * L, name=f"lww_data_r_{c}_{j}", reset_less=True)
                        for j in range(1, K)]
                m.d.sync += [r.eq(x) for r, x in zip(regs, wide_data[1:])]
                wide_data = [w_data.as_value()] + regs
                is_lw, lw = decode(w_line[c + A], "LW")
                is_lww, lww = decode(w_line[c + A], "LWW")
                lww_live = Signal(name=f"lww_live_{c}_a")
                m.d.comb += lww_live.eq(is_lww & lww_ok(lww))
            is_iw, _ = decode(w_line[c + A], "IW")
            w_slots.append(w_data)
            for n in range(VL):
                with m.If(is_lw & (lw.row == n)):
                    m.d.sync += shadow[c][n].eq(w_data)
                # row n of an LWW covering it takes stream stream + (n - row)
                with m.If(lww_live & (lww.row <= n) & (n < lww.row + lww.count)):
                    srcs = wide_data[:min(n, K - 1) + 1]
                    idx = (n - lww.row)[:max(1, (len(srcs) - 1).bit_length())]
                    m.d.sync += shadow[c][n].eq(srcs[0] if len(srcs) == 1 else Array(srcs)[idx])
                with m.If(is_iw):
                    m.d.sync += active[c][n].eq(shadow[c][n])
        # LWT, after every LW assignment (it wins on a byte both write in one cycle): superlane
        # c's lane j goes to row c*L + j, element col % L of superlane col // L
        for c in range(S):
            is_lwt, lwt = decode(w_line[c + A], "LWT")
            w_data = w_slots[c]
            for col in range(VL):
                hit = Signal(name=f"lwt_{c}_col{col}")
                m.d.comb += hit.eq(is_lwt & (lwt.col == col))
                cc, kk = divmod(col, L)
                with m.If(hit):
                    for j in range(L):
                        m.d.sync += shadow[cc][c * L + j][kk].eq(w_data[j])

        psum_prev = None
        for c in range(S):

            # dot products of this superlane's activation chunk, one adder tree per output lane
            is_abc, abc = decode(c_line[c], "ABC")
            act = select(c, abc.stream, abc.dir, f"act_{c}")
            unwritten.append(is_abc & (abc.stream < p.streams) & ~act.valid)
            act_data = act.data
            if A:
                act_data = Signal.like(act.data, name=f"act_r_{c}", reset_less=True)
                m.d.sync += act_data.eq(act.data)
            local = []
            for n in range(VL):
                if p.mxm_booth:
                    prods = [_booth_product(act_data[k], active[c][n][k]) for k in range(L)]
                else:
                    prods = [act_data[k].as_signed() * active[c][n][k].as_signed()
                             for k in range(L)]
                if P >= 1:
                    regs = [Signal(signed(16), name=f"prod_{c}_{n}_{k}", reset_less=True) for k in range(L)]
                    m.d.sync += [r.eq(x) for r, x in zip(regs, prods)]
                    prods = regs
                total = _tree_sum(prods)
                for i in range(1, P):
                    reg = Signal(signed(ceil_log2(L * 128 * 128 + 1) + 1), name=f"lsum_{c}_{n}_d{i}",
                                 reset_less=True)
                    m.d.sync += reg.eq(total)
                    total = reg
                local.append(total)

            # systolic reduction north: add to the sums registered by superlane c-1
            psum = [Signal(psum_shape, name=f"psum_{c}_{n}", reset_less=True) for n in range(VL)]
            for n in range(VL):
                m.d.sync += psum[n].eq(local[n] if psum_prev is None else psum_prev[n] + local[n])
            psum_prev = psum
        y = psum_prev                          # valid in cycle t + S + P + A for an ABC issued at t

        # -- deskew and accumulate: chunk j reaches superlane j's accumulator j cycles later --
        acc_data = []
        for j in range(S):
            chunk = y[j * L:(j + 1) * L]
            for i in range(1, j + 1):
                regs = [Signal(psum_shape, name=f"deskew_{j}_{n}_d{i}", reset_less=True) for n in range(L)]
                m.d.sync += [r.eq(x) for r, x in zip(regs, chunk)]
                chunk = regs

            m.submodules[f"acc_{j}"] = mem = Memory(
                shape=data.ArrayLayout(signed(32), L), depth=depth, init=[])
            wp = mem.write_port()
            rmw = mem.read_port(transparent_for=(wp,))
            rd = mem.read_port(transparent_for=(wp,))

            _, abc_rd = decode(c_line[S + P + A + j - 1], "ABC")
            is_wr, abc_wr = decode(c_line[S + P + A + j], "ABC")
            m.d.comb += [
                rmw.addr.eq(abc_rd.acc),
                wp.addr.eq(abc_wr.acc),
                wp.en.eq(is_wr & (abc_wr.acc < depth)),
            ]
            for n in range(L):
                m.d.comb += wp.data[n].eq(Mux(abc_wr.accumulate, rmw.data[n] + chunk[n], chunk[n]))

            _, acc_rd = decode(r_line[j], "ACC")
            m.d.comb += rd.addr.eq(acc_rd.acc)
            acc_data.append(rd.data)

        # -- ACC: drive the row read one cycle earlier on 4 byte streams -----------------------
        for c in range(S):
            is_acc, acc = decode(r_line[c + 1], "ACC")
            is_drive = is_acc & (acc.acc < depth)
            for d, port in ((isa.Dir.EAST, self.drive_east), (isa.Dir.WEST, self.drive_west)):
                for s in range(p.streams):
                    slot = port[c][s]
                    group, byte = divmod(s, 4)
                    m.d.comb += slot.en.eq(is_drive & (acc.dir == d) & (acc.group == group))
                    for n in range(L):
                        m.d.comb += slot.data[n].eq(acc_data[c][n][8 * byte:8 * byte + 8])

        # -- errors -------------------------------------------------------------------------------
        is_lw0, lw0 = decode(w_line[0], "LW")
        is_lwt0, lwt0 = decode(w_line[0], "LWT")
        is_lww0, lww0 = decode(w_line[0], "LWW")
        is_abc0, abc0 = decode(c_line[0], "ABC")
        is_acc0, acc0 = decode(r_line[0], "ACC")
        addr_range = ((is_lw0 & ((lw0.row >= VL) | (lw0.stream >= p.streams)))
                      | (is_lwt0 & ((lwt0.col >= VL) | (lwt0.stream >= p.streams)))
                      | (is_lww0 & ~lww_ok(lww0))
                      | (is_abc0 & ((abc0.acc >= depth) | (abc0.stream >= p.streams)))
                      | (is_acc0 & ((acc0.acc >= depth) | (acc0.group >= p.stream_groups))))
        m.d.comb += self.error.eq(
            Mux(addr_range, int(isa.ErrorFlag.ADDR_RANGE), 0)
            | Mux(Cat(*unwritten).any(), int(isa.ErrorFlag.STREAM_UNWRITTEN), 0))
        return m
