"""The one ISA definition of OpenLPU.

Every instruction is a 32-bit word: ``opcode`` in bits [5:0], then the instruction's fields
packed LSB-first in the order listed in :data:`INSTRUCTIONS`. The RTL decodes words through
:func:`layout` (an Amaranth ``StructLayout`` generated from the same table), the assembler and
the model use :meth:`InstrDef.encode` / :func:`decode`, the compiler and the model take
latencies from :meth:`InstrDef.d_func` / :attr:`InstrDef.d_skew`, and ``docs/isa.md`` documents
each entry (a test checks that every instruction has a section there).

Timing convention (see ``docs/architecture.md``): an instruction *issued* at cycle ``t`` by its
queue executes in superlane ``c`` at cycle ``t + c``. All latencies below are given in the
superlane-0 frame. A stream operand is sampled at ``t + d_skew``; a stream result is driven at
``t + d_func`` into the stream-register column next to the producing slice, and is readable by
the slice at floorplan position ``q`` at ``t + d_func + |q - p|`` (one stream-register hop per
cycle). For instructions without a stream result, ``d_func`` is the cycle of their state update.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Callable, Union

__all__ = [
    "INSTR_BITS", "OPCODE_BITS", "Dir", "Field", "InstrDef", "INSTRUCTIONS", "BY_MNEMONIC",
    "BY_OPCODE", "QUEUE_ROLES", "IsaError", "decode", "layout", "allowed",
    "HOST_READ_LATENCY", "HostRegion", "HostReg", "Ctrl", "Status", "ErrorFlag", "CHIP_ID",
    "NOP_MAX", "start_delay", "drain_cycles",
]

INSTR_BITS = 32
OPCODE_BITS = 6


class IsaError(ValueError):
    """An instruction word or field value is not valid."""


class Dir(enum.IntEnum):
    """Direction a stream flows in."""
    EAST = 0
    WEST = 1


@dataclass(frozen=True)
class Field:
    """An instruction field: ``bits`` wide, ``kind`` says how the assembler writes it."""
    name: str
    bits: int
    kind: str = "uint"       # "uint" | "sint" | "stream" | "dir" | "group" | "flag"
    min_value: int | None = None   # smallest legal value if not the type's (NOP's count: 1)

    @property
    def signed(self) -> bool:
        return self.kind == "sint"

    @property
    def min(self) -> int:
        if self.min_value is not None:
            return self.min_value
        return -(1 << (self.bits - 1)) if self.signed else 0

    @property
    def max(self) -> int:
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1

    @property
    def mask(self) -> int:
        return (1 << self.bits) - 1


Latency = Union[int, Callable[["LpuParams"], int]]  # noqa: F821


@dataclass(frozen=True)
class InstrDef:
    """One instruction: mnemonic, opcode, the queue roles that may hold it, fields, timing."""
    mnemonic: str
    opcode: int
    roles: tuple
    fields: tuple
    summary: str
    d_skew: int | None = None          # stream operand sampled at issue + d_skew
    _d_func: Latency | None = None     # result driven / state updated at issue + d_func

    def d_func(self, params) -> int | None:
        """Functional latency on ``params`` (``None`` for control instructions)."""
        if callable(self._d_func):
            return self._d_func(params)
        return self._d_func

    @property
    def field_names(self) -> tuple:
        return tuple(f.name for f in self.fields)

    def encode(self, **values) -> int:
        """Pack field values into a 32-bit word. Raises :class:`IsaError` on bad values."""
        word = self.opcode
        pos = OPCODE_BITS
        extra = set(values) - set(self.field_names)
        if extra:
            raise IsaError(f"{self.mnemonic}: unknown field(s) {', '.join(sorted(extra))}")
        for f in self.fields:
            if f.name not in values:
                raise IsaError(f"{self.mnemonic}: missing field {f.name!r}")
            v = int(values[f.name])
            if not f.min <= v <= f.max:
                raise IsaError(f"{self.mnemonic}: field {f.name}={v} out of range "
                               f"[{f.min}, {f.max}]")
            word |= (v & f.mask) << pos
            pos += f.bits
        return word

    def fields_of(self, word: int) -> dict:
        out = {}
        pos = OPCODE_BITS
        for f in self.fields:
            v = (word >> pos) & f.mask
            if f.signed and v >> (f.bits - 1):
                v -= 1 << f.bits
            out[f.name] = v
            pos += f.bits
        return out


def _abc_latency(p) -> int:
    # partial sums ripple north through the superlanes (one per cycle), then each superlane's
    # result chunk is deskewed back into the stagger: accumulator write at issue + superlanes,
    # plus the product/sum registers (mxm_pipeline) and the operand register (mxm_act_reg).
    return p.superlanes + p.mxm_pipeline + int(p.mxm_act_reg)


def start_delay(p) -> int:
    """Extra cycles between the START write and cycle 0 of a run.

    ``2 * icu_issue_reg + host_start_reg``: each pipelined ICU registers the fetched and the
    issued instruction word (2 cycles), and ``params.host_start_reg`` registers the START pulse
    itself before it reaches the ICUs and the stream-register clear (1 cycle). The register
    block counts CYCLES from cycle 0, and every slice and ICU effect moves by the same cycles,
    so CYCLES, ERROR_CYCLE and all latencies of this module are unchanged; only STATUS.DONE
    rises ``start_delay`` cycles later after START.
    """
    return 2 * int(p.icu_issue_reg) + int(p.host_start_reg)


def drain_cycles(p) -> int:
    """Upper bound on the cycles after STATUS.DONE in which an instruction issued before the
    last HALT can still act, and so raise an error flag.

    DONE rises with the last HALT; an instruction issued just before it still executes in the
    higher superlanes, drives its result ``d_func`` cycles later (a TRANSPOSE keeps driving for
    another ``lanes`` cycles), and the error flags are registered once more. The host driver
    waits this long after DONE before it reads ERRORS (``host.device.Device.run``).
    """
    longest = max((i.d_func(p) or 0) + (i.d_skew or 0) for i in INSTRUCTIONS)
    return longest + p.lanes + p.superlanes + start_delay(p) + 2


_STREAM = Field("stream", 5, "stream")
_DIR = Field("dir", 1, "dir")

INSTRUCTIONS: tuple[InstrDef, ...] = (
    # -- every queue -----------------------------------------------------------------------
    InstrDef("NOP", 0, ("*",), (Field("count", 16, "uint", min_value=1),),
             "Issue nothing for `count` cycles (the NOP itself included)."),
    InstrDef("HALT", 1, ("*",), (),
             "Stop this queue. The chip is done when every queue has halted."),
    InstrDef("REPEAT", 2, ("*",), (Field("count", 10, "uint", min_value=1),
                                   Field("interval", 6, "uint", min_value=1),
                                   Field("stride", 8, "sint")),
             "Issue the previous instruction `count` more times, every `interval` cycles; copy k "
             "has its address field (`addr`, `row` or `acc`) increased by k*`stride`. Occupies "
             "`count`*`interval` cycles."),
    InstrDef("SYNC", 3, ("*",), (),
             "Park this queue until a NOTIFY is issued (in this cycle or later) by any queue; the "
             "next instruction issues in the cycle after that NOTIFY."),
    InstrDef("NOTIFY", 4, ("*",), (),
             "Release every queue parked on SYNC (including SYNCs issued in this cycle)."),
    InstrDef("CONFIG", 5, ("*",), (Field("mask", 16, "uint"),),
             "Superlane enable mask for this queue's later instructions: superlane c executes "
             "them only if bit c is set (all set after START). Disabled tiles read, write and "
             "drive nothing. Applies to MEM queues (CONFIG_SLICE_KINDS); other queues ignore it."),
    # -- MEM ---------------------------------------------------------------------------------
    InstrDef("READ", 8, ("read",), (Field("addr", 16), _STREAM, _DIR),
             "Read vector word `addr` (bank = address MSB) and drive it onto `stream` flowing `dir`.",
             d_skew=None, _d_func=1),
    InstrDef("WRITE", 9, ("write",), (Field("addr", 16), _STREAM, _DIR),
             "Store the vector on `stream` (flowing `dir`) at word `addr`.",
             d_skew=0, _d_func=0),
    InstrDef("GATHER", 10, ("read",), (Field("addr", 14), Field("map_stream", 5, "stream"),
                                       Field("map_dir", 1, "dir"), _STREAM, _DIR),
             "Lane l reads its byte of word (addr + map[l]) mod mem_words in addr's bank, where "
             "map is the vector on `map_stream`; drives the gathered vector onto `stream`.",
             d_skew=0, _d_func=1),
    InstrDef("SCATTER", 11, ("write",), (Field("addr", 14), Field("map_stream", 5, "stream"),
                                         Field("map_dir", 1, "dir"), _STREAM, _DIR),
             "Lane l stores its byte of the vector on `stream` into word (addr + map[l]) mod "
             "mem_words in addr's bank.",
             d_skew=0, _d_func=0),
    # -- MXM ---------------------------------------------------------------------------------
    InstrDef("LW", 16, ("weights",), (Field("row", 9), _STREAM, _DIR),
             "Load the vector on `stream` into row `row` of the shadow weight buffer "
             "(row n holds the weights of output lane n: element k multiplies activation k).",
             d_skew=0, _d_func=0),
    InstrDef("LWT", 20, ("weights",), (Field("col", 9), _STREAM, _DIR),
             "Load the vector on `stream` into column `col` of the shadow weight buffer (lane n "
             "goes to row n, element `col`): a transposed weight load. Superlane c's lanes are "
             "written at t + c into the superlane holding column `col`, so an IW must issue at "
             "least `superlanes` cycles after the LWT (and an LWT at least `superlanes` cycles "
             "after an IW or an LW touching the same bytes) for the load to be defined.",
             d_skew=0, _d_func=0),
    InstrDef("IW", 17, ("weights",), (),
             "Install the shadow weight buffer into the array (ABCs issued later use it).",
             d_skew=None, _d_func=0),
    InstrDef("ABC", 18, ("compute",), (Field("acc", 10), _STREAM, _DIR, Field("accumulate", 1, "flag")),
             "Multiply the int8 activation vector on `stream` by the installed weights; write the "
             "int32 result vector to accumulator row `acc` (added to it when `accumulate`=1).",
             d_skew=0, _d_func=_abc_latency),
    InstrDef("ACC", 19, ("result",), (Field("acc", 10), Field("group", 3, "group"), _DIR),
             "Read int32 accumulator row `acc` and drive it on streams 4*group..4*group+3 "
             "(byte b of each lane on stream 4*group+b) flowing `dir`.",
             d_skew=None, _d_func=1),
)

# -- VXM: one queue per ALU; lane semantics are defined bit-exactly in openlpu.vxm_ops --------
VXM_ALU_ROLES = ("alu0", "alu1", "alu2", "alu3")
_VXM_FIELDS = (
    Field("a_stream", 5, "stream"), Field("a_dir", 1, "dir"), Field("a_chain", 1, "flag"),
    Field("b_stream", 5, "stream"), Field("b_dir", 1, "dir"), Field("b_mode", 2, "uint"),
    Field("out_dir", 1, "dir"), Field("dtype", 2, "uint"), Field("imm", 8, "uint"),
)
VXM_SIMPLE_LATENCY = 2      # operands sampled at issue, result driven 2 cycles later
VXM_FUNC_LATENCY = 4        # EXP, RECIP, RSQRT


def _vxm(mnemonic, opcode, summary, latency=VXM_SIMPLE_LATENCY):
    return InstrDef(mnemonic, opcode, VXM_ALU_ROLES, _VXM_FIELDS, summary, d_skew=0,
                    _d_func=latency)


VXM_INSTRUCTIONS = (
    _vxm("VADD", 24, "d = a + b (wrap-around)."),
    _vxm("VSUB", 25, "d = a - b (wrap-around)."),
    _vxm("VMUL", 26, "d = a * b (low bits, wrap-around)."),
    _vxm("VMULSHR", 27, "d = saturate(round(a * b / 2**imm)) (multiply-high with rounding shift)."),
    _vxm("VMIN", 28, "d = min(a, b)."),
    _vxm("VMAX", 29, "d = max(a, b)."),
    _vxm("VRELU", 30, "d = max(a, 0) (b ignored)."),
    _vxm("VABS", 31, "d = saturate(|a|)."),
    _vxm("VNEG", 32, "d = saturate(-a)."),
    _vxm("VAND", 33, "d = a & b."),
    _vxm("VOR", 34, "d = a | b."),
    _vxm("VXOR", 35, "d = a ^ b."),
    _vxm("VSHL", 36, "d = a << (b mod lane bits) (wrap-around)."),
    _vxm("VSRA", 37, "d = a >> (b mod lane bits), arithmetic."),
    _vxm("VSRL", 38, "d = a >> (b mod lane bits), logical."),
    _vxm("VCMP", 39, "d = -1 if (a OP b) else 0; OP by imm: 0 eq, 1 ne, 2 lt, 3 le, 4 gt, 5 ge."),
    _vxm("VSEL", 40, "d = a where the low byte of b is non-zero, else the ALU's constant "
                     "register. b is one byte stream whatever the dtype, so an int8 mask (or the "
                     "low plane of a VCMP result) selects lanes of any width."),
    _vxm("VCAST", 41, "d = saturate(a) converted from dtype to dtype imm[1:0] (sign-extending when "
                      "widening); d is imm's width."),
    _vxm("VREQ", 42, "int32 -> int8 requantize: d = saturate8(round(a * b / 2**(31 + imm[4:0])))."),
    _vxm("VEXP", 43, "Q16.16 exp(a) for a <= 0 (a > 0 is clamped to 0), divided by "
                     "2**imm[3:0] with a single rounding (imm = 8: round(256 * exp)); int32 only.",
         VXM_FUNC_LATENCY),
    _vxm("VRECIP", 44, "Q16.16 1/a (a > 0; INT32_MAX for a <= 0 or overflow); int32 only.",
         VXM_FUNC_LATENCY),
    _vxm("VRSQRT", 45, "Q16.16 1/sqrt(a) (a > 0; INT32_MAX for a <= 0); int32 only.",
         VXM_FUNC_LATENCY),
    InstrDef("VLC", 46, VXM_ALU_ROLES, _VXM_FIELDS,
             "Load the ALU's constant register (32 bits per lane) from operand a: imm[0]=0: "
             "const = a (sign-extended); imm[0]=1 (shift-in): const = (const << lane bits) | a, "
             "so four int8 VLCs build any int32 constant from single byte streams.",
             d_skew=0, _d_func=0),
)
INSTRUCTIONS = INSTRUCTIONS + VXM_INSTRUCTIONS

# -- SXM: the switch, one per hemisphere between the MXM and the MEM slices ---------------------
_SXM_IO = (Field("in_stream", 5, "stream"), Field("in_dir", 1, "dir"),
           Field("out_stream", 5, "stream"), Field("out_dir", 1, "dir"))


def _cross_superlane_latency(p) -> int:
    # the input is deskewed (all superlanes' chunks aligned), switched, then reskewed
    return p.superlanes + 1


def _transpose_latency(p) -> int:
    return p.lanes + 1


SXM_INSTRUCTIONS = (
    InstrDef("SHIFT", 48, ("shift",), _SXM_IO + (Field("amount", 10, "sint"),),
             "out[l] = in[l - amount] across the whole vector (amount > 0 moves data north to "
             "higher lanes, < 0 south), zero fill.",
             d_skew=0, _d_func=_cross_superlane_latency),
    InstrDef("PERMUTE", 49, ("permute",), _SXM_IO + (Field("map_stream", 5, "stream"),
                                                     Field("map_dir", 1, "dir")),
             "out[l] = in[map[l]] for any map (lanes >= VL select zero), map from `map_stream`.",
             d_skew=0, _d_func=_cross_superlane_latency),
    InstrDef("DISTRIBUTE", 50, ("permute",), _SXM_IO + (Field("map_stream", 5, "stream"),
                                                        Field("map_dir", 1, "dir")),
             "Within each superlane: out[j] = in[map[j]] (map[j] >= lanes selects zero): "
             "rearrange, replicate, zero-fill.",
             d_skew=0, _d_func=1),
    InstrDef("TRANSPOSE", 51, ("transpose",), _SXM_IO,
             "Take `lanes` vectors from `in_stream` on consecutive cycles (issue .. issue+lanes-1) "
             "and emit the transpose of each superlane's lanes x lanes block: output vector j "
             "(lane i = input vector i's lane j) is driven at issue + d_func + j.",
             d_skew=0, _d_func=_transpose_latency),
)
INSTRUCTIONS = INSTRUCTIONS + SXM_INSTRUCTIONS

# field that REPEAT's stride advances, per instruction (None: no address field)
REPEAT_FIELD = {"READ": "addr", "WRITE": "addr", "GATHER": "addr", "SCATTER": "addr",
                "LW": "row", "LWT": "col", "ABC": "acc", "ACC": "acc"}
CONTROL_MNEMONICS = ("NOP", "HALT", "REPEAT", "SYNC", "NOTIFY", "CONFIG")
# slice kinds whose queues obey CONFIG (superlane enable mask); the others treat it as a no-op
CONFIG_SLICE_KINDS = ("mem",)

# b_mode values of VXM instructions
VXM_B_STREAM = 0            # stream b_stream flowing b_dir, input-side SR column
VXM_B_CHAIN = 1             # stream b_stream flowing b_dir, output-side SR column (chaining)
VXM_B_CONST = 2             # the ALU's constant register
VXM_B_IMM = 3               # signed 6-bit immediate {b_dir, b_stream}

BY_MNEMONIC = {i.mnemonic: i for i in INSTRUCTIONS}
BY_OPCODE = {i.opcode: i for i in INSTRUCTIONS}
NOP_MAX = BY_MNEMONIC["NOP"].fields[0].max

# Instruction queues of each slice kind (one ICU instruction memory each), in host order.
QUEUE_ROLES = {
    "mem": ("read", "write"),
    "mxm": ("weights", "compute", "result"),
    "vxm": VXM_ALU_ROLES,                         # the first LpuParams.vxm_alus of them
    "sxm": ("shift", "permute", "transpose"),
}


def allowed(instr: InstrDef, role: str) -> bool:
    """Whether the ISA table lets a queue of ``role`` issue ``instr`` (any chip)."""
    return "*" in instr.roles or role in instr.roles


#: Size options of ``LpuParams`` (set to ``False``) and the instructions each removes.
SIZE_OPTION_INSTRUCTIONS = {"icu_repeat": ("REPEAT",), "mem_gather": ("GATHER", "SCATTER")}


def _missing_by(params) -> dict:
    """``{mnemonic: option}`` of the instructions the chip ``params`` does not implement."""
    return {mn: opt for opt, mns in SIZE_OPTION_INSTRUCTIONS.items()
            if not getattr(params, opt) for mn in mns}


def unavailable(params) -> frozenset:
    """Mnemonics that the chip described by ``params`` does not implement (size options, and
    VXM instructions whose function unit no ALU carries: :data:`VXM_UNITS`)."""
    return frozenset(_missing_by(params)) | _vxm_missing(params)


def available(instr: InstrDef, role: str, params) -> bool:
    """Whether a queue of ``role`` on the chip ``params`` accepts ``instr``: allowed by the
    table (:func:`allowed`) and implemented by this chip (:func:`unavailable`)."""
    return unavailable_reason(instr, role, params) is None


def unavailable_reason(instr: InstrDef, role: str, params) -> str | None:
    """Why a queue of ``role`` on the chip ``params`` rejects ``instr`` (``None``: it accepts it)."""
    if not allowed(instr, role):
        return f"{instr.mnemonic} is not allowed in a {role} queue"
    option = _missing_by(params).get(instr.mnemonic)
    if option:
        return (f"{instr.mnemonic} is not implemented by preset {params.name!r} "
                f"({option}=False)")
    return _vxm_unit_reason(instr, role, params)


# -- VXM ALU classes: the function units an instruction needs, and which ALUs carry them -------
#: Semantic class of every VXM instruction, i.e. how the datapath reads its operands and forms
#: its result: ``binary`` (d = a op b), ``unary`` (d = op a; b ignored), ``compare``, ``select``,
#: ``cast``, ``requantize`` (int32 -> int8 with operand b), ``fx`` (a fixed-point function of
#: a), ``const`` (VLC: loads the constant register, no result).
VXM_CLASS = {
    **dict.fromkeys(("VADD", "VSUB", "VMUL", "VMULSHR", "VMIN", "VMAX", "VAND", "VOR", "VXOR",
                     "VSHL", "VSRA", "VSRL"), "binary"),
    **dict.fromkeys(("VRELU", "VABS", "VNEG"), "unary"),
    "VCMP": "compare", "VSEL": "select", "VCAST": "cast", "VREQ": "requantize",
    **dict.fromkeys(("VEXP", "VRECIP", "VRSQRT"), "fx"),
    "VLC": "const",
}
#: VXM instructions defined on int32 operands only (another ``dtype`` is a BAD_INSTRUCTION).
VXM_INT32_ONLY = ("VREQ", "VEXP", "VRECIP", "VRSQRT")
#: Function units that not every VXM ALU carries: unit -> (the ``LpuParams`` option counting
#: the ALUs, from ``alu0`` up, that have it (``None``: all); the instructions that need it).
#: An ALU without the unit does not implement those instructions: they are not in its queue's
#: ISA (:func:`unavailable_reason`), and a word of one that reaches the ALU anyway is a
#: ``BAD_INSTRUCTION``. The other instructions run on every ALU with the same latency.
VXM_UNITS = {
    "mul": ("vxm_mul_alus", ("VMUL", "VMULSHR", "VREQ")),     # the signed 32 x 32 multiplier
    "fx": ("vxm_fx_alus", ("VEXP", "VRECIP", "VRSQRT")),      # exp / reciprocal / rsqrt pipelines
}
VXM_UNIT_NAMES = {"mul": "32x32 multiplier", "fx": "exp/reciprocal/rsqrt pipelines"}
#: mnemonic -> the unit it needs (VXM instructions that need one)
VXM_UNIT_OF = {mn: unit for unit, (_, mns) in VXM_UNITS.items() for mn in mns}


def vxm_unit_alus(params, unit: str) -> int:
    """How many VXM ALUs of ``params`` (``alu0`` .. ``alu{n-1}``) carry ``unit``."""
    n = getattr(params, VXM_UNITS[unit][0])
    return params.vxm_alus if n is None else n


def vxm_alu_units(params, alu: int) -> frozenset:
    """The units (:data:`VXM_UNITS`) of VXM ALU ``alu`` of ``params``."""
    return frozenset(u for u in VXM_UNITS if alu < vxm_unit_alus(params, u))


def vxm_alus_with(params, mnemonic: str) -> tuple:
    """The VXM ALU queue roles (``"alu0"`` ...) of ``params`` that implement ``mnemonic``."""
    unit = VXM_UNIT_OF.get(mnemonic)
    roles = VXM_ALU_ROLES[:params.vxm_alus]
    if unit is None:
        return roles
    return roles[:vxm_unit_alus(params, unit)]


def _vxm_missing(params) -> frozenset:
    """VXM instructions of a chip with a VXM whose unit no ALU carries."""
    if not params.vxm_alus:
        return frozenset()
    return frozenset(mn for mn, u in VXM_UNIT_OF.items() if vxm_unit_alus(params, u) == 0)


def _vxm_unit_reason(instr: InstrDef, role: str, params) -> str | None:
    unit = VXM_UNIT_OF.get(instr.mnemonic)
    if unit is None or role not in VXM_ALU_ROLES:
        return None
    n = vxm_unit_alus(params, unit)
    if VXM_ALU_ROLES.index(role) < n:
        return None
    option = VXM_UNITS[unit][0]
    having = (f"only {', '.join(f'vxm.{r}' for r in VXM_ALU_ROLES[:n])} "
              f"{'has' if n == 1 else 'have'} it" if n else "no ALU has it")
    return (f"{instr.mnemonic} needs the VXM {VXM_UNIT_NAMES[unit]} ({unit}), which queue "
            f"vxm.{role} lacks on preset {params.name!r} ({option}={n}: {having})")


def decode(word: int) -> tuple[InstrDef, dict]:
    """Split a word into its instruction definition and field values."""
    if not 0 <= word < (1 << INSTR_BITS):
        raise IsaError(f"instruction word {word!r} is not a {INSTR_BITS}-bit value")
    op = word & ((1 << OPCODE_BITS) - 1)
    try:
        idef = BY_OPCODE[op]
    except KeyError:
        raise IsaError(f"unknown opcode {op} in word 0x{word:08x}") from None
    used = OPCODE_BITS + sum(f.bits for f in idef.fields)
    if word >> used:
        raise IsaError(f"{idef.mnemonic}: word 0x{word:08x} has bits set above bit {used - 1}")
    vals = idef.fields_of(word)
    for f in idef.fields:
        if vals[f.name] < f.min:
            raise IsaError(f"{idef.mnemonic}: field {f.name}={vals[f.name]} below {f.min}")
    return idef, vals


def layout(mnemonic: str):
    """Amaranth ``StructLayout`` of one instruction's word (opcode + fields, LSB first)."""
    from amaranth.lib import data
    idef = BY_MNEMONIC[mnemonic]
    members = {"opcode": OPCODE_BITS}
    for f in idef.fields:
        members[f.name] = f.bits
    members["_pad"] = INSTR_BITS - sum(members.values())
    return data.StructLayout(members)


# -- host interface ---------------------------------------------------------------------------
# The host bus is word-addressed (24-bit address, 32-bit data). Bits [23:20] select a region.
HOST_REGION_SHIFT = 20
HOST_ADDR_BITS = 24
HOST_READ_LATENCY = 2        # r_data is valid (with r_valid) exactly 2 cycles after r_en


class HostRegion(enum.IntEnum):
    REGS = 0
    MEM = 1                  # MEM vector words, 4 lanes per host word (see LpuParams.host_mem_field_bits)
    IMEM = 2                 # instruction memories: [19:12] queue index, [11:0] word


class HostReg(enum.IntEnum):
    ID = 0                   # reads CHIP_ID
    CONFIG_ID = 1            # reads LpuParams.config_id of the built preset
    CTRL = 2                 # write: Ctrl bits
    STATUS = 3               # read: Status bits
    CYCLES = 4               # cycles counted while running (last run)
    ERRORS = 5               # sticky ErrorFlag bits
    ERROR_CYCLE = 6          # cycle of the first error of the run


class Ctrl(enum.IntFlag):
    START = 1                # clear cycle counter and errors, start every queue at word 0
    CLEAR_ERRORS = 2


class Status(enum.IntFlag):
    RUNNING = 1
    DONE = 2                 # set when every queue has halted; cleared by START


class ErrorFlag(enum.IntFlag):
    STREAM_COLLISION = 1     # two producers drove the same stream slot in one cycle
    STREAM_UNWRITTEN = 2     # an instruction read a stream slot nothing wrote
    BANK_CONFLICT = 4        # READ and WRITE hit the same bank of a MEM slice in one cycle
    ADDR_RANGE = 8           # MEM / accumulator / weight-row address out of range
    HOST_WHILE_RUNNING = 16  # host wrote MEM or IMEM while the chip was running
    BAD_INSTRUCTION = 32     # undecodable word, or an instruction not allowed in its queue
    IMEM_OVERRUN = 64        # a queue ran past the end of its instruction memory


CHIP_ID = 0x4C505530         # "LPU0"
IMEM_QUEUE_SHIFT = 12
