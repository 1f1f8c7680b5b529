"""The SXM slice: the switch that moves data north/south across lanes and superlanes.

See ``docs/sxm.md`` for how it works and :mod:`openlpu.isa` (``SXM_INSTRUCTIONS``) for the
instructions it executes (``SHIFT`` on the ``shift`` queue, ``PERMUTE`` and ``DISTRIBUTE`` on
``permute``, ``TRANSPOSE`` on ``transpose``).
"""

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from openlpu import isa
from openlpu.isa import ErrorFlag
from openlpu.params import LpuParams, SliceInfo

from .common import (ERROR_BITS, decode_stage, instruction_line, issue_signature, stream_column,
                     stream_drive, stream_slot)

__all__ = ["SxmSlice", "SXM_QUEUE_OF"]

# Which queue of the slice executes which instruction (checked against the ISA table).
SXM_QUEUE_OF = {"SHIFT": "shift", "PERMUTE": "permute", "DISTRIBUTE": "permute",
                "TRANSPOSE": "transpose"}
_ROLES = tuple(dict.fromkeys(SXM_QUEUE_OF.values()))       # shift, permute, transpose


def _any(values):
    values = list(values)
    return Cat(*values).any() if values else Const(0)


class SxmSlice(wiring.Component):
    """Switch execution slice (SXM): moves bytes between lanes and superlanes.

    Every instruction reads its operands with the superlane stagger (superlane ``c`` at
    ``t + c`` for an instruction issued at ``t``) from ``sr_east_in`` (``dir = EAST``) or
    ``sr_west_in`` (``WEST``) and drives its result on all ``lanes`` lanes of ``out_stream`` of
    ``drive_east`` (``out_dir = EAST``) or ``drive_west`` (``WEST``), again staggered: output
    chunk ``c`` (lanes ``c*lanes ..``) at ``t + d_func + c``. ``S = superlanes``,
    ``L = lanes``, ``VL = S * L``; latencies come from the ISA table and are checked against the
    datapath at elaboration.

    * ``SHIFT in, out, amount`` (``d_func = S + 1``): ``out[l] = in[l - amount]``, zero where
      ``l - amount`` is outside ``0 .. VL-1`` (``|amount| >= VL`` gives zero). Each input chunk
      is registered ``S - c`` times (deskew), so the whole vector is in registers at ``t + S``; a
      ``log2(VL)``-stage barrel shifter (3:1 byte mux per lane and stage) feeds a VL-byte
      register, and chunk ``c`` of it is delayed ``c`` more cycles (reskew).
    * ``PERMUTE in, out, map`` (``d_func = S + 1``): ``out[l] = in[map[l]]`` (``map[l] >= VL``
      gives 0; map bytes are unsigned), the map sampled with the same stagger. Same pipeline as
      ``SHIFT`` with a VL:1 byte mux per output lane.
    * ``DISTRIBUTE in, out, map`` (``d_func = 1``): within superlane ``c`` at ``t + c``,
      ``out_c[j] = in_c[map_c[j]]`` (``map_c[j] >= L`` gives 0), an L:1 byte mux per lane,
      registered and driven at ``t + c + 1``.
    * ``TRANSPOSE in, out`` (``d_func = L + 1``): superlane ``c`` samples row ``i`` of its
      ``L x L`` block at ``t + c + i`` (``i = 0 .. L-1``) and drives output row ``j``
      (``out_j[i] = in_i[j]``) at ``t + L + 1 + c + j``. The block shifts into an ``L x L`` byte
      register array (rows moving one way), and then shifts out along the other axis into an
      output register; consecutive ``TRANSPOSE`` instructions alternate the axis, so the next
      block can shift in while the previous one shifts out: a ``TRANSPOSE`` may issue ``L``
      cycles after the previous one. One issued earlier (while the previous one is still
      reading its rows) is not executed and raises ``BAD_INSTRUCTION``.

    The three queues run concurrently; ``PERMUTE`` and ``DISTRIBUTE`` have separate datapaths,
    so a ``DISTRIBUTE`` may follow a ``PERMUTE`` in the next cycle. If two results hit the same
    stream and direction in the same superlane and cycle, the slot is driven once (priority
    ``SHIFT``, ``PERMUTE``, ``DISTRIBUTE``, ``TRANSPOSE``) and ``STREAM_COLLISION`` is raised.

    Errors (``openlpu.isa.ErrorFlag``, pulsed on ``error``): ``STREAM_UNWRITTEN`` at ``t + c``
    (``TRANSPOSE``: ``t + c + i``) when superlane ``c`` reads an input or map slot with
    ``valid = 0``; ``STREAM_COLLISION`` in the cycle and superlane of the double drive;
    ``ADDR_RANGE`` in the issue cycle ``t`` when a stream field is ``>= streams`` (a bad input or
    map stream reads zeros, a bad output stream drives nothing); ``BAD_INSTRUCTION`` in the
    issue cycle of a rejected ``TRANSPOSE``.

    Parameters
    ----------
    params : LpuParams
        Chip geometry; uses ``lanes``, ``superlanes``, ``streams``.
    slice_info : SliceInfo
        The floorplan entry of this slice (``kind`` must be ``"sxm"``).

    Members
    -------
    sr_east_in, sr_west_in : ``In(stream_column(params))``
        Eastward streams of the west SR column, westward streams of the east SR column.
    drive_east, drive_west : ``Out(stream_drive(params))``
        Results onto the east / west SR column.
    instr_shift, instr_permute, instr_transpose : ``In(issue_signature())``
        Instructions issued this cycle by the slice's three queues.
    error : ``Out(ERROR_BITS)``
        Error flags raised this cycle.
    """

    def __init__(self, params, slice_info):
        if not isinstance(params, LpuParams):
            raise TypeError(f"params must be an LpuParams, not {params!r}")
        if not isinstance(slice_info, SliceInfo) or slice_info.kind != "sxm":
            raise ValueError(f"slice_info must be a SliceInfo of kind 'sxm', not {slice_info!r}")
        table_roles = isa.QUEUE_ROLES.get("sxm", ())
        if table_roles and set(table_roles) != set(_ROLES):
            raise ValueError(f"ISA table: SXM queues are {table_roles}, the SXM slice implements "
                             f"{_ROLES}")
        for mnemonic, role in SXM_QUEUE_OF.items():
            if not isa.allowed(isa.BY_MNEMONIC[mnemonic], role):
                raise ValueError(f"ISA table: {mnemonic} is not allowed in SXM queue {role!r}; "
                                 f"the SXM slice expects it there")
        self._params = params
        self._slice_info = slice_info
        members = {
            "sr_east_in": In(stream_column(params)),
            "sr_west_in": In(stream_column(params)),
            "drive_east": Out(stream_drive(params)),
            "drive_west": Out(stream_drive(params)),
        }
        for role in (table_roles or _ROLES):
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
    def resources(self) -> dict:
        """Datapath size estimate: byte-wide multiplexer inputs and byte registers.

        Per datapath: ``SHIFT`` ``log2(VL)`` stages of a 3:1 mux per lane; ``PERMUTE`` one
        ``VL:1`` mux per output lane (``min(VL, 256)`` inputs: map bytes are unsigned);
        ``DISTRIBUTE`` one ``L:1`` per lane; ``TRANSPOSE`` a 2:1 axis select per block byte and a
        2:1 exit select per output byte; 4 operand selects of ``2 * streams`` slots per superlane
        (SHIFT input, PERMUTE/DISTRIBUTE input and map, TRANSPOSE input); per output slot a
        choice between the 4 datapaths. Registers: ``SHIFT`` and ``PERMUTE`` ``VL * (S + 1)``
        each (deskew, result, reskew), the ``PERMUTE`` map deskew ``L * S * (S + 1) / 2``,
        ``DISTRIBUTE`` ``VL``, ``TRANSPOSE`` ``S * (L * L + L)``; instruction registers not
        counted.
        """
        p = self._params
        S, L, VL = p.superlanes, p.lanes, p.vl
        return {
            "shift_mux_inputs": 3 * VL * ceil_log2(VL),
            "permute_mux_inputs": VL * min(VL, 256),
            "distribute_mux_inputs": S * L * L,
            "transpose_mux_inputs": S * (2 * L * L + 2 * L),
            "operand_select_inputs": 4 * S * 2 * p.streams * L,
            "drive_mux_inputs": 4 * S * 2 * p.streams * L,
            "register_bytes": 2 * VL * (S + 1) + L * S * (S + 1) // 2 + VL + S * (L * L + L),
        }

    def elaborate(self, platform):
        m = Module()
        p = self._params
        S, L, VL, NS = p.superlanes, p.lanes, p.vl, p.streams
        lat = {mn: isa.BY_MNEMONIC[mn].d_func(p) for mn in SXM_QUEUE_OF}
        want = {"SHIFT": S + 1, "PERMUTE": S + 1, "DISTRIBUTE": 1, "TRANSPOSE": L + 1}
        for mn in SXM_QUEUE_OF:
            if lat[mn] != want[mn] or isa.BY_MNEMONIC[mn].d_skew != 0:
                raise RuntimeError(f"{mn}: latency d_func={lat[mn]}, d_skew="
                                   f"{isa.BY_MNEMONIC[mn].d_skew} in the ISA table do not match "
                                   f"the SXM datapath (d_func={want[mn]}, d_skew=0)")
        d_cross = lat["SHIFT"]

        def line(role, length):
            return instruction_line(m, getattr(self, f"instr_{role}"), role, length)

        decode = decode_stage

        def ok(stream):
            return stream < NS

        # -- stream operand selection (zero and valid=0 for a stream beyond the column) ----------
        slot_layout = stream_slot(p)

        def select(c, stream, direction, name):
            slot = Signal(slot_layout, name=name)
            with m.Switch(Cat(stream, direction)):
                for d, column in ((isa.Dir.EAST, self.sr_east_in), (isa.Dir.WEST, self.sr_west_in)):
                    for s in range(NS):
                        with m.Case(s | (int(d) << len(stream))):
                            m.d.comb += slot.eq(column[c][s])
            return slot

        def delay(value, n, name):
            """``value`` delayed by ``n`` registers."""
            for i in range(n):
                reg = Signal.like(value, name=f"{name}_d{i + 1}", reset_less=True)
                m.d.sync += reg.eq(value)
                value = reg
            return value

        def lanes_of(flat, n):
            return [flat[8 * i:8 * i + 8] for i in range(n)]

        unwritten = []
        addr_range = []
        bad_instr = []
        # producers[c]: list of (en, stream, dir, data) driving in superlane c, in priority order
        producers = [[] for _ in range(S)]

        def produce(c, en, stream, direction, value):
            producers[c].append((en, stream, direction, value))

        def cross_superlane(mnemonic, stages, operands, switch):
            """Deskew ``operands`` (lists of per-superlane flat chunks), switch, reskew, drive."""
            aligned = []
            for k, chunks in enumerate(operands):
                lanes = []
                for c, chunk in enumerate(chunks):
                    lanes += lanes_of(delay(chunk, S - c, f"{mnemonic.lower()}{k}_sl{c}"), L)
                aligned.append(lanes)
            _, view = decode(stages[S], mnemonic)
            result = Signal(8 * VL, name=f"{mnemonic.lower()}_result", reset_less=True)
            m.d.sync += result.eq(Cat(*switch(view, *aligned)))
            for c in range(S):
                hit, v = decode(stages[d_cross + c], mnemonic)
                chunk = delay(result[8 * L * c:8 * L * (c + 1)], c, f"{mnemonic.lower()}_out{c}")
                produce(c, hit & ok(v.out_stream), v.out_stream, v.out_dir, chunk)

        # -- SHIFT -----------------------------------------------------------------------------
        sh = line("shift", d_cross + S)
        sh_chunks = []
        for c in range(S):
            hit, v = decode(sh[c], "SHIFT")
            slot = select(c, v.in_stream, v.in_dir, f"shift_in_sl{c}")
            unwritten.append(hit & ok(v.in_stream) & ~slot.valid)
            sh_chunks.append(slot.data.as_value())
            if c == 0:
                addr_range.append(hit & ~(ok(v.in_stream) & ok(v.out_stream)))

        def barrel(view, lanes):
            amount = view.amount.as_signed()
            neg = amount < 0
            mag = Signal(len(view.amount), name="shift_mag")
            m.d.comb += mag.eq(Mux(neg, -amount, amount))
            zero = Const(0, 8)
            for k in range(ceil_log2(VL)):
                step = 1 << k
                up = [lanes[i - step] if i >= step else zero for i in range(VL)]        # north
                down = [lanes[i + step] if i + step < VL else zero for i in range(VL)]  # south
                lanes = [Mux(mag[k], Mux(neg, down[i], up[i]), lanes[i]) for i in range(VL)]
            return [Mux(mag >= VL, 0, x) for x in lanes]

        cross_superlane("SHIFT", sh, [sh_chunks], barrel)

        # -- PERMUTE and DISTRIBUTE (one queue, two datapaths) ---------------------------------
        pl = line("permute", d_cross + S)
        pm_in, pm_map, distribute = [], [], []
        for c in range(S):
            hit_p, vp = decode(pl[c], "PERMUTE")
            hit_d, vd = decode(pl[c], "DISTRIBUTE")
            in_stream = Mux(hit_d, vd.in_stream, vp.in_stream)
            in_dir = Mux(hit_d, vd.in_dir, vp.in_dir)
            map_stream = Mux(hit_d, vd.map_stream, vp.map_stream)
            map_dir = Mux(hit_d, vd.map_dir, vp.map_dir)
            src = select(c, in_stream, in_dir, f"permute_in_sl{c}")
            amap = select(c, map_stream, map_dir, f"permute_map_sl{c}")
            unwritten.append((hit_p | hit_d) & ((ok(in_stream) & ~src.valid)
                                                | (ok(map_stream) & ~amap.valid)))
            pm_in.append(src.data.as_value())
            pm_map.append(amap.data.as_value())
            if c == 0:
                out_stream = Mux(hit_d, vd.out_stream, vp.out_stream)
                addr_range.append((hit_p | hit_d) & ~(ok(in_stream) & ok(map_stream)
                                                      & ok(out_stream)))

            # DISTRIBUTE: local L:1 mux per lane, registered, driven one cycle later
            src_lanes = Array(lanes_of(src.data.as_value(), L))
            local = Signal(8 * L, name=f"distribute_out{c}", reset_less=True)
            m.d.sync += local.eq(Cat(*(
                Mux(idx < L, src_lanes[idx[:ceil_log2(L)]], 0)
                for idx in lanes_of(amap.data.as_value(), L))))
            hit_o, vo = decode(pl[c + lat["DISTRIBUTE"]], "DISTRIBUTE")
            distribute.append((hit_o & ok(vo.out_stream), vo.out_stream, vo.out_dir, local))

        def permute(view, lanes, map_lanes):
            table = Array(lanes)
            bits = min(8, ceil_log2(VL))
            return [Mux(idx < VL, table[idx[:bits]], 0) for idx in map_lanes]

        cross_superlane("PERMUTE", pl, [pm_in, pm_map], permute)
        for c, entry in enumerate(distribute):
            produce(c, *entry)

        # -- TRANSPOSE ---------------------------------------------------------------------------
        self._transpose(m, decode, select, ok, unwritten, addr_range, bad_instr, produce)

        # -- drive the SR columns; collisions ----------------------------------------------------
        collisions = []
        for c in range(S):
            prods = producers[c]
            for a in range(len(prods)):
                for b in range(a + 1, len(prods)):
                    ea, sa, da, _ = prods[a]
                    eb, sb, db, _ = prods[b]
                    collisions.append(ea & eb & (sa == sb) & (da == db))
            for d, port in ((isa.Dir.EAST, self.drive_east), (isa.Dir.WEST, self.drive_west)):
                for s in range(NS):
                    hits = [en & (direction == d) & (stream == s)
                            for en, stream, direction, _ in prods]
                    value = prods[-1][3]
                    for hit, (_, _, _, v) in reversed(list(zip(hits[:-1], prods[:-1]))):
                        value = Mux(hit, v, value)
                    m.d.comb += [port[c][s].en.eq(_any(hits)),
                                 port[c][s].data.eq(value)]

        m.d.comb += self.error.eq(
            Mux(_any(collisions), int(ErrorFlag.STREAM_COLLISION), 0)
            | Mux(_any(unwritten), int(ErrorFlag.STREAM_UNWRITTEN), 0)
            | Mux(_any(addr_range), int(ErrorFlag.ADDR_RANGE), 0)
            | Mux(_any(bad_instr), int(ErrorFlag.BAD_INSTRUCTION), 0))
        return m

    def _transpose(self, m, decode, select, ok, unwritten, addr_range, bad_instr, produce):
        """TRANSPOSE: control in the superlane-0 frame, delayed one register per superlane."""
        p = self._params
        S, L = p.superlanes, p.lanes
        port = self.instr_transpose
        hit, view = decode((port.valid, port.word), "TRANSPOSE")
        sbits = len(view.in_stream)
        ctrl_layout = data.StructLayout({
            "load": 1,          # sample an input row into the block
            "shift": 1,         # shift the block (load and/or drain)
            "vert": 1,          # axis: 1 rows move towards row 0, 0 columns towards column 0
            "drain": 1,         # capture the exiting row/column into the output register
            "in_stream": sbits, "in_dir": 1,
            "out_stream": sbits, "out_dir": 1,
        })
        cnt_bits = ceil_log2(L)

        orient = Signal(name="tr_orient")               # axis of the next TRANSPOSE's load
        load_active = Signal(name="tr_load_active")     # rows 1 .. L-1 of a TRANSPOSE to come
        load_cnt = Signal(cnt_bits, name="tr_load_cnt")
        load_orient = Signal(name="tr_load_orient")
        load_in = Signal(sbits + 1, name="tr_load_in")
        load_out = Signal(sbits + 1, name="tr_load_out")
        drain_active = Signal(name="tr_drain_active")
        drain_cnt = Signal(cnt_bits, name="tr_drain_cnt")
        drain_orient = Signal(name="tr_drain_orient")
        drain_out = Signal(sbits + 1, name="tr_drain_out")

        accept = hit & ~load_active
        bad_instr.append(hit & load_active)
        addr_range.append(accept & ~(ok(view.in_stream) & ok(view.out_stream)))
        cur_orient = Mux(accept, orient, load_orient)
        cur_in = Mux(accept, Cat(view.in_stream, view.in_dir), load_in)
        cur_out = Mux(accept, Cat(view.out_stream, view.out_dir), load_out)
        row = Mux(accept, 0, load_cnt)
        load = accept | load_active
        last_row = load & (row == L - 1)

        with m.If(accept):
            m.d.sync += [load_active.eq(1), load_cnt.eq(1), load_orient.eq(orient),
                         load_in.eq(cur_in), load_out.eq(cur_out), orient.eq(~orient)]
        with m.Elif(load_active):
            m.d.sync += load_cnt.eq(load_cnt + 1)
            with m.If(load_cnt == L - 1):
                m.d.sync += load_active.eq(0)
        with m.If(last_row):
            m.d.sync += [drain_active.eq(1), drain_cnt.eq(0), drain_orient.eq(~cur_orient),
                         drain_out.eq(cur_out)]
        with m.Elif(drain_active):
            m.d.sync += drain_cnt.eq(drain_cnt + 1)
            with m.If(drain_cnt == L - 1):
                m.d.sync += drain_active.eq(0)

        ctrl = Signal(ctrl_layout, name="tr_ctrl_sl0")
        m.d.comb += [
            ctrl.load.eq(load),
            ctrl.shift.eq(load | drain_active),
            ctrl.vert.eq(Mux(load, cur_orient, drain_orient)),
            ctrl.drain.eq(drain_active),
            Cat(ctrl.in_stream, ctrl.in_dir).eq(cur_in),
            Cat(ctrl.out_stream, ctrl.out_dir).eq(drain_out),
        ]

        for c in range(S):
            if c:
                nxt = Signal(ctrl_layout, name=f"tr_ctrl_sl{c}")
                m.d.sync += nxt.eq(ctrl)
                ctrl = nxt
            src = select(c, ctrl.in_stream, ctrl.in_dir, f"transpose_in_sl{c}")
            unwritten.append(ctrl.load & ok(ctrl.in_stream) & ~src.valid)
            x = [src.data[i] for i in range(L)]
            block = [[Signal(8, name=f"tr_blk{c}_{r}_{k}", reset_less=True) for k in range(L)]
                     for r in range(L)]
            with m.If(ctrl.shift):
                for r in range(L):
                    for k in range(L):
                        vert_next = block[r + 1][k] if r + 1 < L else x[k]
                        horiz_next = block[r][k + 1] if k + 1 < L else x[r]
                        m.d.sync += block[r][k].eq(Mux(ctrl.vert, vert_next, horiz_next))
            out = Signal(8 * L, name=f"tr_out{c}", reset_less=True)
            with m.If(ctrl.drain):
                m.d.sync += out.eq(Cat(*(Mux(ctrl.vert, block[0][i], block[i][0])
                                         for i in range(L))))
            en = Signal(name=f"tr_drive_en{c}")
            stream = Signal(sbits, name=f"tr_drive_stream{c}")
            direction = Signal(name=f"tr_drive_dir{c}")
            m.d.sync += [en.eq(ctrl.drain & ok(ctrl.out_stream)), stream.eq(ctrl.out_stream),
                         direction.eq(ctrl.out_dir)]
            produce(c, en, stream, direction, out)
