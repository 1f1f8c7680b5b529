"""The VXM slice: four vector ALUs per lane in the centre of the floorplan.

See :mod:`openlpu.isa` (``VXM_INSTRUCTIONS``, ``VXM_B_*``) for the instruction set and
:mod:`openlpu.vxm_ops` for the bit-exact lane semantics this datapath implements.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from openlpu import isa, vxm_ops
from openlpu.isa import Dir, ErrorFlag
from openlpu.params import LpuParams, SliceInfo

from .common import (ERROR_BITS, drive_slot, issue_signature, stream_column, stream_drive,
                     stream_slot)
from .shared import place

__all__ = ["VxmSlice", "VxmSuperlane", "VxmLane", "FX_WIDTHS", "CTL_LAYOUT"]

# Instruction classes (openlpu.isa.VXM_CLASS, in table order).
def _class(*classes):
    return tuple(mn for mn, c in isa.VXM_CLASS.items() if c in classes)


_BINARY = _class("binary")
_UNARY = _class("unary")
_FX = _class("fx")
_SIMPLE = _BINARY + _UNARY + _class("compare", "select", "cast", "requantize")
_USES_B = _BINARY + _class("compare", "select", "requantize")
_INT32_ONLY = isa.VXM_INT32_ONLY
_NO_RESULT = _class("const")

# Widths of the unsigned Newton-Raphson intermediates (Q30). Measured exhaustively over every
# normalised mantissa with the vxm_ops algorithms (recip: m in [2**30, 2**31), rsqrt: m in
# [2**28, 2**30)); tests/rtl/test_vxm.py re-checks them on a dense sample.
FX_WIDTHS = {
    "recip_m": 31, "recip_y": 32, "recip_e": 31,
    "rsqrt_m": 30, "rsqrt_y": 31, "rsqrt_yy": 32, "rsqrt_t": 32,
}


#: Latencies of the datapath (``d_func``): simple operations, function pipelines. VxmSlice
#: checks them against the ISA table.
D_SIMPLE, D_FX = 2, 4

#: Decoded control of one VXM instruction, shifted north with it (one register per superlane
#: and pipeline stage).
CTL_LAYOUT = data.StructLayout({
    "word":   isa.INSTR_BITS,
    "ok":     1,      # a VXM instruction with valid types: samples its operands
    "drive":  1,      # ... and drives a result
    "a_ok":   1,      # operand a in range
    "b_used": 1,      # operand b read from streams
    "b_ok":   1,      # ... and in range
})


def _depth(units):
    """Pipeline depth after issue of an ALU with these units (its last control stage)."""
    return D_FX if "fx" in units else D_SIMPLE


def _vxm_layout():
    return isa.layout(isa.VXM_INSTRUCTIONS[0].mnemonic)


def _opcode(mnemonic):
    return isa.BY_MNEMONIC[mnemonic].opcode


def _any(values):
    values = list(values)
    return Cat(*values).any() if values else Const(0)


def _is_op(view, *mnemonics):
    return _any(view.opcode == _opcode(x) for x in mnemonics)


def _out_width(view):
    """Bytes of the result: ``VCAST``'s target type, 1 for ``VREQ``, else the ``dtype``."""
    return Mux(_is_op(view, "VCAST"), _width_of(view.imm[:2]),
               Mux(_is_op(view, "VREQ"), vxm_ops.DTYPE_BYTES[0], _width_of(view.dtype)))


def _width_of(dtype):
    """Bytes of a ``dtype`` field value (``vxm_ops.DTYPE_BYTES``; 0 for an invalid one)."""
    out = Const(0, 3)
    for d, nb in vxm_ops.DTYPE_BYTES.items():
        out = Mux(dtype == d, nb, out)
    return out


def _b_width(view):
    """Bytes of operand ``b`` read from streams: 1 for ``VSEL`` (a one-byte condition), else the
    ``dtype`` width."""
    return Mux(view.opcode == _opcode("VSEL"), 1, _width_of(view.dtype))


def _sext(raw, dtype):
    """Sign-extend the low ``DTYPE_BYTES[dtype]`` bytes of ``raw`` to ``signed(32)``."""
    out = raw[:32].as_signed()
    for d, nb in vxm_ops.DTYPE_BYTES.items():
        if nb < 4:
            out = Mux(dtype == d, raw[:8 * nb].as_signed(), out)
    return out


def _zext(raw, dtype):
    """The low ``DTYPE_BYTES[dtype]`` bytes of ``raw``, zero-extended."""
    out = raw[:32]
    for d, nb in vxm_ops.DTYPE_BYTES.items():
        if nb < 4:
            out = Mux(dtype == d, raw[:8 * nb], out)
    return out


def _clamp(x, bits):
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return Mux(x < lo, Const(lo, signed(bits)), Mux(x > hi, Const(hi, signed(bits)), x))


def _saturate(x, dtype):
    """``vxm_ops.saturate(x, dtype)`` for a signed value ``x`` of any width."""
    out = _clamp(x, 32)
    for d, nb in vxm_ops.DTYPE_BYTES.items():
        if nb < 4:
            out = Mux(dtype == d, _clamp(x, 8 * nb), out)
    return out


def _round_shift(x, s, width):
    """``vxm_ops.round_shift(x, s)`` for an unsigned shift amount ``s`` (``s <= width``)."""
    half = (Const(1, 1) << s)[1:width + 1]          # 2**(s-1), 0 for s = 0
    return (x + half) >> s


def _clz31(x):
    """Leading zeros (as a 32-bit value) of a non-zero 31-bit unsigned ``x``: 1 .. 31."""
    out = Const(31, 5)
    for i in range(31):              # the highest set bit wins (outermost Mux)
        out = Mux(x[i], 31 - i, out)
    return out


def _to32(v):
    """The low 32 bits of ``v``, sign- or zero-extending narrower values."""
    if len(v) >= 32:
        return v[:32]
    fill = v[-1].replicate(32 - len(v)) if v.shape().signed else Const(0, 32 - len(v))
    return Cat(v, fill)


class VxmSlice(wiring.Component):
    """Vector execution slice (VXM): ``len(isa.VXM_ALU_ROLES)`` ALUs in every lane.

    Each superlane holds, for each ALU ``i`` (queue ``isa.VXM_ALU_ROLES[i]``), ``lanes`` lane
    ALUs and a 32-bit constant register per lane. The decoded instruction of each queue is
    shifted north one superlane per cycle: superlane ``c`` executes an instruction issued at
    ``t`` at ``t + c``. All times below are in the superlane-0 frame (add ``c``).

    Operands (``d_skew = 0``): at issue, operand ``a`` is read from streams
    ``a_stream .. a_stream + w - 1`` (``w = vxm_ops.DTYPE_BYTES[dtype]``, byte ``b`` on stream
    ``a_stream + b``) flowing ``a_dir``, from the input-side column (``a_chain = 0``:
    :attr:`sr_east_in` / :attr:`sr_west_in`) or the output-side column (``a_chain = 1``:
    :attr:`sr_east_out` / :attr:`sr_west_out`, what the VXM drove one cycle earlier). Operand
    ``b`` follows ``b_mode`` (``isa.VXM_B_*``): input-side or output-side streams, the ALU's
    constant register, or the signed 6-bit immediate ``{b_dir, b_stream}``. A stream ``b`` is
    ``w`` bytes wide like ``a``, except for ``VSEL``, whose condition is the single byte stream
    ``b_stream`` whatever the ``dtype`` (``VSEL`` tests the low byte of ``b`` in every
    ``b_mode``: ``d = a`` where it is non-zero, else the constant register). Both are captured
    into registers at the end of the issue cycle.

    Results: the lane values of :mod:`openlpu.vxm_ops` are driven on streams ``a_stream ..``
    (the result's width) flowing ``out_dir`` (:attr:`drive_east` / :attr:`drive_west`) in cycle
    ``t + d_func``: simple operations are computed in cycle ``t + 1`` and registered
    (``d_func = 2``); ``VEXP``, ``VRECIP``, ``VRSQRT`` normalise their operand in the issue cycle
    and run three register stages (``d_func = 4``: exp: ``x*log2(e)`` and the first polynomial
    step / two polynomial steps / rounding shift; reciprocal: estimate and first Newton step /
    second / third and scaling; rsqrt likewise). ``VLC`` loads the constant register (``a``,
    sign-extended to 32 bits) at the end of the issue cycle.

    ALU classes (``params.vxm_fx_alus``, ``params.vxm_mul_alus``; ``openlpu.isa.VXM_UNITS``):
    ALU ``i`` has the function pipelines only if ``i < vxm_fx_alus`` and the 32 x 32 multiplier
    (``VMUL``, ``VMULSHR``, ``VREQ``) only if ``i < vxm_mul_alus`` (``None``: every ALU); the
    other ALUs leave that logic out, and an instruction that needs it raises
    ``BAD_INSTRUCTION`` at issue and does nothing (the chip's ICUs already reject such a word,
    ``openlpu.isa.unavailable_reason``, so only a slice driven directly sees it). The timing of
    every other instruction is the same on every ALU.

    Errors (``openlpu.isa.ErrorFlag``, pulsed on :attr:`error`), as in the reference model:
    ``BAD_INSTRUCTION`` at issue for ``dtype`` 3, an instruction whose unit the ALU lacks, ``VREQ``/``VEXP``/``VRECIP``/``VRSQRT`` with
    ``dtype`` other than int32, ``VCAST`` to ``dtype`` 3 (the instruction then does nothing)
    and ``VCMP`` with an unknown comparison code (operands are sampled, nothing is driven);
    ``ADDR_RANGE`` at issue when an operand's or the result's streams run past ``streams``
    (the operand reads as 0; the result is not driven); ``STREAM_UNWRITTEN`` at ``t + c`` when
    superlane ``c`` samples a stream operand slot with ``valid = 0``; ``STREAM_COLLISION`` at
    the drive cycle when two results (of different ALUs, or of one ALU's simple and function
    pipelines) are driven on the same stream and direction (both still drive; the later ALU
    wins).

    Parameters
    ----------
    params : LpuParams
        Chip geometry (``lanes``, ``superlanes``, ``streams``).
    slice_info : SliceInfo
        The floorplan entry of this slice (``kind`` must be ``"vxm"``).

    Members
    -------
    sr_east_in, sr_west_in : ``In(stream_column(params))``
        Eastward streams of the west SR column, westward streams of the east SR column.
    sr_east_out : ``In(stream_column(params))``
        Eastward streams of the east SR column (where the VXM's eastward results go).
    sr_west_out : ``In(stream_column(params))``
        Westward streams of the west SR column (where the VXM's westward results go).
    drive_east, drive_west : ``Out(stream_drive(params))``
        Results driven into the east / west SR column.
    instr_alu0 .. instr_aluN : ``In(issue_signature())``
        Instructions issued this cycle by the ALU queues (``params.vxm_alus`` of them; all four
        when the preset has no VXM in its floorplan, so the slice can be tested on its own).
    error : ``Out(ERROR_BITS)``
        Error flags raised this cycle.
    """

    def __init__(self, params, slice_info):
        if not isinstance(params, LpuParams):
            raise TypeError(f"params must be an LpuParams, not {params!r}")
        if not isinstance(slice_info, SliceInfo) or slice_info.kind != "vxm":
            raise ValueError(f"slice_info must be a SliceInfo of kind 'vxm', not {slice_info!r}")
        known = set(_SIMPLE + _FX + _NO_RESULT)
        table = {i.mnemonic for i in isa.VXM_INSTRUCTIONS}
        if known != table:
            raise ValueError(f"ISA table and VXM datapath disagree on the VXM instructions: "
                             f"missing {sorted(table - known)}, extra {sorted(known - table)}")
        fields = {i.fields for i in isa.VXM_INSTRUCTIONS}
        if len(fields) != 1:
            raise ValueError("ISA table: the VXM datapath needs one field layout for all VXM "
                             "instructions")
        for i in isa.VXM_INSTRUCTIONS:
            if any(not isa.allowed(i, r) for r in isa.VXM_ALU_ROLES) or i.d_skew != 0:
                raise ValueError(f"ISA table: {i.mnemonic} must be allowed in every ALU queue "
                                 f"and sample its operands at issue (d_skew = 0)")
        self._params = params
        self._slice_info = slice_info
        self._roles = isa.VXM_ALU_ROLES[:params.vxm_alus or len(isa.VXM_ALU_ROLES)]
        if set(isa.VXM_UNIT_OF) != set(_FX + ("VMUL", "VMULSHR", "VREQ")):
            raise ValueError("ISA table: the VXM datapath's units are the function pipelines "
                             "(VEXP, VRECIP, VRSQRT) and the multiplier (VMUL, VMULSHR, VREQ)")
        members = {
            "sr_east_in":  In(stream_column(params)),
            "sr_west_in":  In(stream_column(params)),
            "sr_east_out": In(stream_column(params)),
            "sr_west_out": In(stream_column(params)),
            "drive_east":  Out(stream_drive(params)),
            "drive_west":  Out(stream_drive(params)),
        }
        for role in self._roles:
            members[f"instr_{role}"] = In(issue_signature())
        members["error"] = Out(ERROR_BITS)
        super().__init__(members)

    @property
    def params(self):
        return self._params

    @property
    def slice_info(self):
        return self._slice_info

    def alu_units(self, alu: int) -> frozenset:
        """The function units (``openlpu.isa.VXM_UNITS``) that ALU ``alu`` of this slice has."""
        n_alu = len(self._roles)
        out = set()
        for unit, (option, _) in isa.VXM_UNITS.items():
            n = getattr(self._params, option)
            if alu < (n_alu if n is None else n):
                out.add(unit)
        return frozenset(out)

    @property
    def multipliers(self) -> dict:
        """Multipliers of the datapath: ``{(a_bits, b_bits): count}`` (unsigned widths; the
        ALU multiplier is signed 32 x 32). Constant multiplications are listed as ``const``.
        Only the ALUs with the unit (:meth:`alu_units`) count."""
        w = FX_WIDTHS
        per_unit = {
            "mul": {"alu signed 32x32": 1},
            "fx": {
                "exp 32xconst17": 1, "exp 16x17": 3,
                "recip 31xconst": 1, f"recip {w['recip_m']}x{w['recip_y']}": 3,
                f"recip {w['recip_y']}x{w['recip_e']}": 3,
                "rsqrt 30xconst": 1, f"rsqrt {w['rsqrt_y']}x{w['rsqrt_y']}": 3,
                f"rsqrt {w['rsqrt_m']}x{w['rsqrt_yy']}": 3,
                f"rsqrt {w['rsqrt_y']}x{w['rsqrt_t']}": 3,
            },
        }
        out = {k: 0 for unit in per_unit.values() for k in unit}
        for i in range(len(self._roles)):
            for unit in self.alu_units(i):
                for k, v in per_unit[unit].items():
                    out[k] += v * self._params.vl
        return out

    # -----------------------------------------------------------------------------------------
    def elaborate(self, platform):
        m = Module()
        p = self._params
        S, L, NS = p.superlanes, p.lanes, p.streams
        n_alu = len(self._roles)
        d_simple = {isa.BY_MNEMONIC[x].d_func(p) for x in _SIMPLE}
        d_fx = {isa.BY_MNEMONIC[x].d_func(p) for x in _FX}
        if d_simple != {D_SIMPLE} or d_fx != {D_FX}:
            raise RuntimeError(f"VXM latencies in the ISA table ({d_simple}, {d_fx}) do not match "
                               f"the datapath ({D_SIMPLE} for simple operations, {D_FX} for "
                               f"functions)")
        if (vxm_ops.RECIP_ITERATIONS, vxm_ops.RSQRT_ITERATIONS) != (3, 3):
            raise RuntimeError("the VXM function pipeline runs one Newton-Raphson step per stage: "
                               "it needs RECIP_ITERATIONS = RSQRT_ITERATIONS = 3")
        vxm_layout = _vxm_layout()
        max_code = max(vxm_ops.CMP_CODES)
        ctl_layout = CTL_LAYOUT
        is_op, out_width = _is_op, _out_width

        # -- decode at issue, then one register per superlane and pipeline stage ---------------
        lines = []
        issue_errors = []
        for i, role in enumerate(self._roles):
            port = getattr(self, f"instr_{role}")
            v = data.View(vxm_layout, port.word)
            w = _width_of(v.dtype)
            is_vxm = is_op(v, *(x.mnemonic for x in isa.VXM_INSTRUCTIONS))
            bad_type = ((v.dtype == 3) | (is_op(v, *_INT32_ONLY) & (v.dtype != 2))
                        | (is_op(v, "VCAST") & (v.imm[:2] == 3)))
            bad_code = is_op(v, "VCMP") & (v.imm > max_code)
            lacking = [mn for mn, u in isa.VXM_UNIT_OF.items() if u not in self.alu_units(i)]
            if lacking:             # the ALU leaves the unit out: its instructions are bad here
                bad_type = bad_type | is_op(v, *lacking)
            ok = port.valid & is_vxm & ~bad_type
            has_result = ~is_op(v, *_NO_RESULT) & ~bad_code
            res_ok = v.a_stream + out_width(v) <= NS
            b_used = is_op(v, *_USES_B) & ((v.b_mode == isa.VXM_B_STREAM)
                                            | (v.b_mode == isa.VXM_B_CHAIN))
            ctl0 = Signal(ctl_layout, name=f"alu{i}_ctl_d0")
            m.d.comb += [
                ctl0.word.eq(port.word),
                ctl0.ok.eq(ok),
                ctl0.drive.eq(ok & has_result & res_ok),
                ctl0.a_ok.eq(v.a_stream + w <= NS),
                ctl0.b_used.eq(b_used),
                ctl0.b_ok.eq(v.b_stream + _b_width(v) <= NS),
            ]
            issue_errors.append((
                port.valid & is_vxm & bad_type,
                ok & (~ctl0.a_ok | (b_used & ~ctl0.b_ok) | (has_result & ~res_ok)),
                ok & bad_code,
            ))
            line = [ctl0]
            depth = D_FX if "fx" in self.alu_units(i) else D_SIMPLE
            for k in range(1, S + depth):
                r = Signal(ctl_layout, name=f"alu{i}_ctl_d{k}")
                m.d.sync += r.eq(line[-1])
                line.append(r)
            lines.append(line)

        # -- superlanes: operand selection, lane ALUs and result drive, one component each -------
        units = tuple(self.alu_units(i) for i in range(n_alu))
        key = (L, NS, tuple(tuple(sorted(u)) for u in units))
        unwritten = []
        collide = Const(0)
        for c in range(S):
            sl = VxmSuperlane(p, units)
            place(m, f"sl{c}", sl, key, kind="vxm_superlane")
            for i in range(n_alu):
                port = getattr(sl, f"ctl_alu{i}")
                m.d.comb += [port[k].eq(lines[i][c + k]) for k in range(_depth(units[i]) + 1)]
            m.d.comb += [
                sl.east_in.eq(self.sr_east_in[c]), sl.west_in.eq(self.sr_west_in[c]),
                sl.east_out.eq(self.sr_east_out[c]), sl.west_out.eq(self.sr_west_out[c]),
                self.drive_east[c].eq(sl.drive_east), self.drive_west[c].eq(sl.drive_west),
            ]
            unwritten.append(sl.unwritten)
            if c == 0:
                collide = sl.collide

        # -- errors (superlane 0, except STREAM_UNWRITTEN: superlane c at t + c) -------------------
        bad = _any(e[0] | e[2] for e in issue_errors)
        addr = _any(e[1] for e in issue_errors)
        m.d.comb += self.error.eq(
            Mux(bad, int(ErrorFlag.BAD_INSTRUCTION), 0)
            | Mux(addr, int(ErrorFlag.ADDR_RANGE), 0)
            | Mux(_any(unwritten), int(ErrorFlag.STREAM_UNWRITTEN), 0)
            | Mux(collide, int(ErrorFlag.STREAM_COLLISION), 0))
        return m


class VxmSuperlane(wiring.Component):
    """One superlane of the VXM: operand selection, the lane ALUs and the result drive.

    The :class:`VxmSlice` decodes each queue's instructions and shifts the decoded control
    north; superlane ``c`` gets, for ALU ``i``, the controls of the instructions issued
    ``c .. c + depth`` cycles ago (``ctl_alu<i>[k]``: issued ``c + k`` cycles ago; ``depth`` is 4
    with the function pipelines, else 2). In the cycle an instruction reaches it (``k = 0``) it
    selects operand ``a`` and a stream operand ``b`` from one of its four stream columns
    (direction and chaining) and the ``w`` byte streams from the first one (a shift); the
    :class:`VxmLane` of every lane captures them at the end of that cycle. It drives the
    lanes' results ``d_func`` cycles after issue (``k = d_func``): every producer (ALU x simple
    / function pipeline) is folded into one image of each output column, later producers win.
    Combinational from its ports to its outputs except inside the lanes. The design depends
    only on ``lanes``, ``streams`` and the ALUs' units, so every superlane of a chip is the
    same circuit (one Verilog module, :func:`openlpu.rtl.shared.place`).

    Members
    -------
    ctl_alu<i> : ``In(ArrayLayout(CTL_LAYOUT, depth + 1))``
        Decoded control of ALU ``i``, by age.
    east_in, west_in, east_out, west_out : ``In(ArrayLayout(stream_slot(params), streams))``
        This superlane's row of the four stream columns the VXM reads (see :class:`VxmSlice`).
    drive_east, drive_west : ``Out(ArrayLayout(drive_slot(params), streams))``
        Results driven this cycle.
    unwritten : ``Out(1)``
        A stream operand sampled this cycle has ``valid = 0`` (``STREAM_UNWRITTEN``).
    collide : ``Out(1)``
        Two producers drive one stream and direction this cycle (``STREAM_COLLISION``).
    """

    def __init__(self, params, units):
        self._params = params
        self._units = tuple(frozenset(u) for u in units)
        NS = params.streams
        members = {}
        for i, u in enumerate(self._units):
            members[f"ctl_alu{i}"] = In(data.ArrayLayout(CTL_LAYOUT, _depth(u) + 1))
        for name in ("east_in", "west_in", "east_out", "west_out"):
            members[name] = In(data.ArrayLayout(stream_slot(params), NS))
        members["drive_east"] = Out(data.ArrayLayout(drive_slot(params), NS))
        members["drive_west"] = Out(data.ArrayLayout(drive_slot(params), NS))
        members["unwritten"] = Out(1)
        members["collide"] = Out(1)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        p = self._params
        L, NS = p.lanes, p.streams
        vxm_layout = _vxm_layout()

        # -- operand slots: 4 byte positions of a and b per ALU ---------------------------------
        slot_layout = stream_slot(p)
        columns = {(Dir.EAST, 0): self.east_in, (Dir.WEST, 0): self.west_in,
                   (Dir.EAST, 1): self.east_out, (Dir.WEST, 1): self.west_out}
        unwritten = []
        producers = []
        for i, units in enumerate(self._units):
            ctls = getattr(self, f"ctl_alu{i}")
            ctl = ctls[0]
            v = data.View(vxm_layout, ctl.word)
            slots = {}
            for name, stream, direction, chain, used, w in (
                    ("a", v.a_stream, v.a_dir, v.a_chain, ctl.ok & ctl.a_ok,
                     _width_of(v.dtype)),
                    ("b", v.b_stream, v.b_dir, v.b_mode == isa.VXM_B_CHAIN,
                     ctl.ok & ctl.b_used & ctl.b_ok, _b_width(v))):
                # the column by direction and side, then the w byte streams by a shift
                col = Signal(data.ArrayLayout(slot_layout, NS), name=f"{name}_col_alu{i}")
                with m.If(used):
                    with m.Switch(Cat(direction, chain)):
                        for (d, ch), column in columns.items():
                            with m.Case(int(d) | (ch << 1)):
                                m.d.comb += col.eq(column)
                sel = [Signal(slot_layout, name=f"{name}_slot_alu{i}_b{k}") for k in range(4)]
                for k in range(4):
                    m.d.comb += sel[k].eq(col.as_value().word_select(stream + k,
                                                                     slot_layout.size))
                slots[name] = sel
                unwritten.append(used & _any((k < w) & ~sel[k].valid for k in range(4)))

            # -- lane ALUs: one component per lane ------------------------------------------------
            res = ([], [])
            for lane in range(L):
                alu = VxmLane(units)
                place(m, f"alu{i}_l{lane}", alu, tuple(sorted(units)), kind="vxm_lane")
                m.d.comb += [
                    alu.ctl.eq(ctls),
                    alu.a_raw.eq(Cat(slots["a"][x].data[lane] for x in range(4))),
                    alu.b_raw.eq(Cat(slots["b"][x].data[lane] for x in range(4))),
                ]
                res[0].append(alu.res_s)
                if "fx" in units:
                    res[1].append(alu.res_f)

            # -- producers (simple / function pipeline): stream masks and byte planes -----------
            for kind, delay, names in (("s", D_SIMPLE, _SIMPLE), ("f", D_FX, _FX)):
                if kind == "f" and "fx" not in units:
                    continue            # no function pipeline, no producer
                ctl = ctls[delay]
                v = data.View(vxm_layout, ctl.word)
                active = ctl.drive & _is_op(v, *names)
                wo = _out_width(v)
                mask = ((Const(1, 5) << wo) - 1)[:4]
                east = Signal(NS, name=f"alu{i}{kind}_east_mask")
                west = Signal(NS, name=f"alu{i}{kind}_west_mask")
                m.d.comb += [
                    east.eq(Mux(active & (v.out_dir == Dir.EAST), mask << v.a_stream, 0)),
                    west.eq(Mux(active & (v.out_dir == Dir.WEST), mask << v.a_stream, 0)),
                ]
                lanes = res[0 if kind == "s" else 1]
                planes = [Cat(lane[8 * k:8 * k + 8] for lane in lanes) for k in range(4)]
                producers.append((east, west, v.a_stream, planes))

        # -- drive: per stream, the last producer whose mask has it (later producers win) -------
        # Stream s of a producer that starts at stream s0 carries its byte plane s - s0; a mux
        # over the 4 planes per stream (not a shift of the whole column image: a variable shift
        # of NS * 8 * lanes bits costs Amaranth's netlist checks the square of that width).
        for d, port in ((Dir.EAST, self.drive_east), (Dir.WEST, self.drive_west)):
            for s in range(NS):
                data_s = Const(0, 8 * L)
                en_s = Const(0)
                for east, west, s0, planes in producers:
                    mask = east if d == Dir.EAST else west
                    plane = Const(0, 8 * L)
                    for k in range(min(4, s + 1)):
                        plane = Mux(s0 == s - k, planes[k], plane)
                    data_s = Mux(mask[s], plane, data_s)
                    en_s = en_s | mask[s]
                m.d.comb += [port[s].en.eq(en_s), port[s].data.eq(data_s)]

        collide = []
        for a in range(len(producers)):
            for b in range(a + 1, len(producers)):
                collide.append((producers[a][0] & producers[b][0]).any()
                               | (producers[a][1] & producers[b][1]).any())
        m.d.comb += [self.unwritten.eq(_any(unwritten)), self.collide.eq(_any(collide))]
        return m


class VxmLane(wiring.Component):
    """One lane of one VXM ALU: operand registers, the constant register, the simple
    operations and (with the ``"fx"`` unit) the function pipelines.

    ``ctl[k]`` is the decoded control of the instruction issued ``k`` cycles ago in this
    superlane's frame (``k = 0 .. depth``, ``depth`` 4 with ``"fx"``, else 2); ``a_raw`` and
    ``b_raw`` are the 4 operand bytes selected in the issue cycle. At the end of the issue
    cycle the lane captures ``a``, ``b`` and the constant (and ``VLC`` loads the constant
    register); a simple operation's result register :attr:`res_s` is written at the end of
    cycle ``t + 1`` (driven at ``t + 2``), a function's :attr:`res_f` at the end of ``t + 3``
    (driven at ``t + 4``). ``units`` (``"mul"``, ``"fx"``, ``openlpu.isa.VXM_UNITS``) says
    which function units it has; nothing else varies, so all lanes with the same units are one
    circuit (one Verilog module, :func:`openlpu.rtl.shared.place`).

    Members
    -------
    ctl : ``In(ArrayLayout(CTL_LAYOUT, depth + 1))``
    a_raw, b_raw : ``In(32)``
    res_s : ``Out(32)``
    res_f : ``Out(32)`` (only with ``"fx"``)
    """

    def __init__(self, units):
        self._units = frozenset(units)
        members = {
            "ctl": In(data.ArrayLayout(CTL_LAYOUT, _depth(self._units) + 1)),
            "a_raw": In(32),
            "b_raw": In(32),
            "res_s": Out(32),
        }
        if "fx" in self._units:
            members["res_f"] = Out(32)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        res_s, res_f = self._lane(m, [self.ctl[k] for k in range(len(self.ctl))],
                                  self.a_raw, self.b_raw, _vxm_layout(), self._units)
        m.d.comb += self.res_s.eq(res_s)
        if res_f is not None:
            m.d.comb += self.res_f.eq(res_f)
        return m

    def _lane(self, m, ctls, a_raw, b_raw, vxm_layout, units):
        """The lane's logic in ``m`` (registers in ``m.d.sync``).

        ``ctls[k]`` is the control of the instruction issued ``k`` cycles ago; ``units`` the
        function units this ALU has (``"mul"``, ``"fx"``). Returns the lane's 32-bit result
        registers of the simple and of the function pipeline (``None`` without ``"fx"``).
        """
        has_mul, has_fx = "mul" in units, "fx" in units
        w = FX_WIDTHS
        views = [data.View(vxm_layout, ctl.word) for ctl in ctls]

        def is_op(view, *mnemonics):
            return _any(view.opcode == _opcode(x) for x in mnemonics)

        def reg(shape, name):
            return Signal(shape, name=f"{name}", reset_less=True)

        const = Signal(signed(32), name=f"const")
        a = reg(signed(32), "a")
        b = reg(signed(32), "b")
        k = reg(signed(32), "k")
        if has_fx:
            pos = [reg(1, f"pos{s}") for s in range(3)]
            lz = [reg(5, f"lz{s}") for s in range(3)]
            mm = [reg(w["recip_m"], f"m{s}") for s in range(3)]

        # -- issue cycle: capture operands, VLC, normalise function operands --------------
        c0, v0 = ctls[0], views[0]
        dt0 = v0.dtype
        # (comb signals keep the expression trees small; they only move while c0.ok)
        a_val = Signal(signed(32), name=f"a_val")
        k_val = Signal(signed(32), name=f"k_val")
        if has_fx:
            a1 = Signal(31, name=f"a1")
            n_lz = Signal(5, name=f"lz")
        # VSEL's stream condition is one byte (dtype 0) whatever the dtype
        b_dt0 = Mux(v0.opcode == _opcode("VSEL"), 0, dt0)
        b_stream = Mux(c0.b_ok, _sext(b_raw, b_dt0), 0)
        b_val = Mux(v0.b_mode == isa.VXM_B_CONST, k_val,
                    Mux(v0.b_mode == isa.VXM_B_IMM, Cat(v0.b_stream, v0.b_dir).as_signed(),
                        b_stream))
        positive = a_val > 0
        with m.If(c0.ok):
            m.d.comb += [
                a_val.eq(Mux(c0.a_ok, _sext(a_raw, dt0), 0)),
                k_val.eq(_sext(const.as_unsigned(), dt0)),
            ]
            if has_fx:
                m.d.comb += [a1.eq(Mux(positive, a_val, 1)[:31]), n_lz.eq(_clz31(a1))]
            m.d.sync += [a.eq(a_val), b.eq(b_val), k.eq(k_val)]
            with m.If(is_op(v0, "VLC")):
                with m.If(v0.imm[0]):           # shift-in: const = const << w | a
                    with m.Switch(dt0):
                        with m.Case(0):
                            m.d.sync += const.eq(Cat(a_raw[:8], const[:24]))
                        with m.Case(1):
                            m.d.sync += const.eq(Cat(a_raw[:16], const[:16]))
                        with m.Default():
                            m.d.sync += const.eq(a_raw[:32])
                with m.Else():
                    m.d.sync += const.eq(a_val)
            if has_fx:
                with m.If(is_op(v0, "VRECIP", "VRSQRT")):
                    e_even = Cat(Const(0, 1), (n_lz - 2)[1:5])      # lz - 2 rounded down to even
                    m_recip = (a1 << (n_lz - 1)[:5])[:w["recip_m"]]
                    m_rsqrt = Mux(n_lz == 1, a1 >> 2, (a1 << e_even)[:w["rsqrt_m"]])
                    m.d.sync += [
                        pos[0].eq(positive), lz[0].eq(n_lz),
                        mm[0].eq(Mux(is_op(v0, "VRECIP"), m_recip, m_rsqrt)),
                    ]

        # -- cycle t + 1: simple operations -----------------------------------------------
        c1, v1 = ctls[1], views[1]
        dt1, imm = v1.dtype, v1.imm
        out_s = Signal(32, name=f"res_s", reset_less=True)
        bits = [vxm_ops.DTYPE_BYTES[d] * 8 for d in sorted(vxm_ops.DTYPE_BYTES)]
        sh = b[:5]
        for d in sorted(vxm_ops.DTYPE_BYTES):
            sh = Mux(dt1 == d, b[:(bits[d] - 1).bit_length()], sh)
        with m.If(c1.drive):
            def put(value):
                m.d.sync += out_s.eq(_to32(value))
            with m.Switch(v1.opcode):
                with m.Case(_opcode("VADD")):
                    put(a + b)
                with m.Case(_opcode("VSUB")):
                    put(a - b)
                if has_mul:         # without the multiplier these never drive
                    with m.Case(_opcode("VMUL")):
                        put(a * b)
                    with m.Case(_opcode("VMULSHR"), _opcode("VREQ")):
                        req = v1.opcode == _opcode("VREQ")
                        s = Mux(req, 31 + imm[:5], Mux(imm > 62, 62, imm))[:6]
                        put(_saturate(_round_shift(a * b, s, 64), Mux(req, 0, dt1)))
                with m.Case(_opcode("VMIN")):
                    put(Mux(a < b, a, b))
                with m.Case(_opcode("VMAX")):
                    put(Mux(a > b, a, b))
                with m.Case(_opcode("VAND")):
                    put(a & b)
                with m.Case(_opcode("VOR")):
                    put(a | b)
                with m.Case(_opcode("VXOR")):
                    put(a ^ b)
                with m.Case(_opcode("VSHL")):
                    put(a.as_unsigned() << sh)
                with m.Case(_opcode("VSRA")):
                    put(a >> sh)
                with m.Case(_opcode("VSRL")):
                    put(_zext(a.as_unsigned(), dt1) >> sh)
                with m.Case(_opcode("VRELU")):
                    put(Mux(a < 0, 0, a))
                with m.Case(_opcode("VABS")):
                    put(_saturate(Mux(a < 0, -a, a), dt1))
                with m.Case(_opcode("VNEG")):
                    put(_saturate(-a, dt1))
                with m.Case(_opcode("VCMP")):
                    cond = Const(0)
                    for code, name in vxm_ops.CMP_CODES.items():
                        hit = {"eq": a == b, "ne": a != b, "lt": a < b, "le": a <= b,
                               "gt": a > b, "ge": a >= b}[name]
                        cond = Mux(imm == code, hit, cond)
                    put(Mux(cond, Const(-1, signed(32)), 0))
                with m.Case(_opcode("VSEL")):
                    put(Mux(b[:8] != 0, a, k))          # the low byte, in every b_mode
                with m.Case(_opcode("VCAST")):
                    put(_saturate(a, imm[:2]))

        if not has_fx:
            return out_s, None
        # -- functions: three stages after the issue cycle ----------------------------------
        out_f = Signal(32, name=f"res_f", reset_less=True)
        exp_r = [reg(16, "exp_r0")]
        exp_n = [reg(6, f"exp_n{s}") for s in range(2)]
        exp_p = [reg(18, f"exp_p{s}") for s in range(2)]
        ry = [reg(w["recip_y"], f"recip_y{s}") for s in range(2)]
        sy = [reg(w["rsqrt_y"], f"rsqrt_y{s}") for s in range(2)]

        def recip_step(mv, y):
            e = ((1 << 31) - ((mv * y) >> 31))[:w["recip_e"]]
            return ((y * e) >> 30)[:w["recip_y"]]

        def rsqrt_step(mv, y):
            yy = ((y * y) >> 30)[:w["rsqrt_yy"]]
            t = ((3 << 30) - ((mv * yy) >> 30))[:w["rsqrt_t"]]
            return ((y * t) >> 31)[:w["rsqrt_y"]]

        for stage in (1, 2, 3):
            cs, vs = ctls[stage], views[stage]
            with m.If(cs.drive & is_op(vs, *_FX)):
                if stage < 3:
                    m.d.sync += [pos[stage].eq(pos[stage - 1]), lz[stage].eq(lz[stage - 1]),
                                 mm[stage].eq(mm[stage - 1])]
                mv = mm[stage - 1]
                with m.Switch(vs.opcode):
                    with m.Case(_opcode("VEXP")):
                        if stage == 1:
                            x = Mux(a < 0, a, 0)
                            t = (x * vxm_ops.EXP_LOG2E) >> 16
                            r = t[:16]
                            n = -(t >> 16) + vs.imm[:4]     # output shift imm[3:0]
                            p1 = vxm_ops.EXP_C2 + ((r * vxm_ops.EXP_C3) >> 16)
                            m.d.sync += [exp_r[0].eq(r), exp_n[0].eq(Mux(n >= 32, 32, n)),
                                         exp_p[0].eq(p1)]
                        elif stage == 2:
                            r = exp_r[0]
                            p2 = vxm_ops.EXP_C1 + ((r * exp_p[0]) >> 16)
                            p3 = 65536 + ((r * p2) >> 16)
                            m.d.sync += [exp_n[1].eq(exp_n[0]), exp_p[1].eq(p3)]
                        else:
                            n = exp_n[1]
                            m.d.sync += out_f.eq(Mux(n >= 32, 0, _round_shift(exp_p[1], n, 32)))
                    with m.Case(_opcode("VRECIP")):
                        if stage == 1:
                            y0 = (vxm_ops.RECIP_K1 - ((vxm_ops.RECIP_K2 * mv) >> 31))[:w["recip_y"]]
                            m.d.sync += ry[0].eq(recip_step(mv, y0))
                        elif stage == 2:
                            m.d.sync += ry[1].eq(recip_step(mv, ry[0]))
                        else:
                            y = recip_step(mv, ry[1])
                            n_lz = lz[2]
                            out = Mux(n_lz == 31, y << 1, _round_shift(y, (30 - n_lz)[:5], 32))
                            m.d.sync += out_f.eq(Mux(pos[2] & (out < vxm_ops.INT32_MAX), out,
                                                     vxm_ops.INT32_MAX))
                    with m.Case(_opcode("VRSQRT")):
                        if stage == 1:
                            y0 = (vxm_ops.RSQRT_K1 - ((vxm_ops.RSQRT_K2 * mv) >> 30))[:w["rsqrt_y"]]
                            m.d.sync += sy[0].eq(rsqrt_step(mv, y0))
                        elif stage == 2:
                            m.d.sync += sy[1].eq(rsqrt_step(mv, sy[0]))
                        else:
                            y = rsqrt_step(mv, sy[1])
                            # e = lz - 2 rounded down to even: 21 - e/2 = 22 - floor(lz/2)
                            out = _round_shift(y, (22 - lz[2][1:])[:5], 32)
                            m.d.sync += out_f.eq(Mux(pos[2] & (out < vxm_ops.INT32_MAX), out,
                                                     vxm_ops.INT32_MAX))
        return out_s, out_f
