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
    InstrDef("LWW", 21, ("weights",), (Field("row", 9), _STREAM, _DIR,
                                       Field("count", 6, "uint", min_value=1)),
             "Wide weight load: load the vectors on streams `stream` .. `stream`+`count`-1 "
             "(flowing `dir`) into rows `row` .. `row`+`count`-1 of the shadow weight buffer in "
             "one cycle, row `row`+i from stream `stream`+i, each row as an LW of it would "
             "(same timing, same order against LWT and IW). `count` is 1 .. "
             "`isa.wide_load_max_rows` (the chip's streams, at most VL); `row`+`count` <= VL "
             "and `stream`+`count` <= streams, otherwise ADDR_RANGE and nothing is written.",
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
                "LW": "row", "LWT": "col", "LWW": "row", "ABC": "acc", "ACC": "acc"}
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
# The host bus is word-addressed (32-bit address, 32-bit data). Bits [31:28] select a region;
# the 28 bits below address within it (a model-scale chip's MEM needs 22 of them, see
# LpuParams.host_mem_field_bits).
HOST_REGION_SHIFT = 28
HOST_ADDR_BITS = 32
HOST_READ_LATENCY = 2        # r_data is valid (with r_valid) exactly 2 cycles after r_en


class HostRegion(enum.IntEnum):
    REGS = 0
    MEM = 1                  # MEM vector words, 4 lanes per host word (see LpuParams.host_mem_field_bits)
    IMEM = 2                 # instruction memories: [27:16] queue index, [15:0] word


class HostReg(enum.IntEnum):
    ID = 0                   # reads CHIP_ID
    CONFIG_ID = 1            # reads LpuParams.config_id of the built preset
    CTRL = 2                 # write: Ctrl bits
    STATUS = 3               # read: Status bits
    CYCLES = 4               # cycles counted while running (last run)
    ERRORS = 5               # sticky ErrorFlag bits
    ERROR_CYCLE = 6          # cycle of the first error of the run
    # -- MEM ECC (LpuParams.mem_ecc; read as 0 and ignore writes without it) ---------------
    ECC_INJECT = 16          # read/write: bits to flip in the next host MEM write (below)
    ECC_CORRECTED = 17       # read: codewords read with a corrected single-bit error
    ECC_UNCORRECTABLE = 18   # read: codewords read with an uncorrectable (double) error


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
    MEM_UNCORRECTABLE = 128  # a MEM read (instruction or host) met a double-bit ECC error


CHIP_ID = 0x4C505530         # "LPU0"
# IMEM host addresses: queue index above this bit, word below it (queues up to 65,536 words).
IMEM_QUEUE_SHIFT = 16


# =============================================================================================
# Field meanings and the static instruction check
#
# What each field of each instruction means (which fields are MEM addresses, stream indices,
# the first stream of a multi-byte operand, lane types, ...), the legal range the chip gives it,
# and the one check that the assembler (firmware/asm.py), the package check
# (firmware/package.py) and the compiler (firmware/schedule.py) share. The conditions are those
# under which the RTL (rtl/mem.py, mxm.py, vxm.py, sxm.py, icu.py) and the reference model
# raise ADDR_RANGE or BAD_INSTRUCTION: a word :func:`check_instruction` / :func:`check_queue`
# accepts raises neither for a reason of its fields, and one it rejects raises one of them.
# =============================================================================================

__all__ += ["FIELD_MEANINGS", "field_meaning", "field_limit", "VxmOperands", "VXM_OPERANDS",
            "wide_load_max_rows", "wide_load_feed_rows",
            "ISSUE_SPACING", "check_instruction", "check_queue", "queue_issues"]

#: Meaning of a field -> what it is and its legal range (``docs/isa.md``, *Field meanings*).
FIELD_MEANINGS = {
    "count": "a count: the field's own range",
    "stride": "REPEAT's step of the repeated instruction's address field (`REPEAT_FIELD`); "
              "every copy's field, modulo its width, must be in that field's range",
    "superlane_mask": "superlane enable mask: bit c enables superlane c (higher bits ignored)",
    "dir": "stream direction: 0 east (E), 1 west (W)",
    "flag": "0 or 1",
    "mem_addr": "MEM word address, bank = MSB: 0 .. mem_banks * mem_words - 1",
    "stream": "byte-stream index: 0 .. streams - 1",
    "stream_group": "int32 stream group (streams 4g .. 4g+3): 0 .. streams / 4 - 1",
    "weight_row": "MXM shadow weight row: 0 .. VL - 1",
    "weight_col": "MXM shadow weight column: 0 .. VL - 1",
    "acc_row": "MXM accumulator row: 0 .. mxm_acc_words - 1",
    "wide_load_rows": "LWW's rows per cycle: 1 .. min(streams, VL) (`isa.wide_load_max_rows`), "
                      "with row + count <= VL and stream + count <= streams",
    "vxm_a_stream": "first byte stream of operand a (dtype width) and of the result (its own "
                    "width): a_stream + width <= streams; any first stream, no alignment",
    "vxm_b_stream": "b_mode 0/1: first byte stream of operand b (dtype width, 1 for VSEL), "
                    "b_stream + width <= streams; b_mode 3: the immediate's low 5 bits; "
                    "unused by instructions without operand b and in b_mode 2",
    "vxm_b_mode": "operand b: 0 input-side streams, 1 output-side streams (chaining), "
                  "2 the constant register, 3 the immediate {b_dir, b_stream}",
    "vxm_dtype": "lane type: 0 int8, 1 int16, 2 int32 (1, 2 or 4 byte streams); 3 is not a "
                 "type; VREQ, VEXP, VRECIP, VRSQRT take int32 only",
    "vxm_imm": "per instruction: VCMP's comparison code 0..5, VCAST's target lane type in "
               "imm[1:0] (0..2), a shift or mode for others (any value)",
    "lane_shift": "SHIFT distance in lanes (any value: lanes shifted in from outside the "
                  "vector read zero)",
}

# field name -> meaning; _FIELD_MEANING_BY_INSTR overrides it for one instruction
_FIELD_MEANING_BY_NAME = {
    "count": "count", "interval": "count", "stride": "stride", "mask": "superlane_mask",
    "addr": "mem_addr", "stream": "stream", "map_stream": "stream", "in_stream": "stream",
    "out_stream": "stream", "dir": "dir", "map_dir": "dir", "in_dir": "dir", "out_dir": "dir",
    "row": "weight_row", "col": "weight_col", "acc": "acc_row", "accumulate": "flag",
    "group": "stream_group", "a_stream": "vxm_a_stream", "a_dir": "dir", "a_chain": "flag",
    "b_stream": "vxm_b_stream", "b_dir": "dir", "b_mode": "vxm_b_mode", "dtype": "vxm_dtype",
    "imm": "vxm_imm", "amount": "lane_shift",
}
_FIELD_MEANING_BY_INSTR: dict = {("LWW", "count"): "wide_load_rows"}


def field_meaning(idef: InstrDef, name: str) -> str | None:
    """Meaning (a key of :data:`FIELD_MEANINGS`) of field ``name`` of ``idef``."""
    return _FIELD_MEANING_BY_INSTR.get((idef.mnemonic, name), _FIELD_MEANING_BY_NAME.get(name))


_LIMITS = {   # meaning -> (the chip's bound, what the error says; {n}: the bound)
    "mem_addr": (lambda p: p.mem_addr_words,
                 "a MEM address (bank and word) is 0..{m} (mem_banks x mem_words = {n})"),
    "stream": (lambda p: p.streams, "a byte stream is 0..{m} (streams = {n})"),
    "stream_group": (lambda p: p.stream_groups, "an int32 stream group is 0..{m} "
                                                "(streams / 4 = {n})"),
    "weight_row": (lambda p: p.vl, "a weight row is 0..{m} (VL = {n})"),
    "weight_col": (lambda p: p.vl, "a weight column is 0..{m} (VL = {n})"),
    "acc_row": (lambda p: p.mxm_acc_words, "an accumulator row is 0..{m} "
                                           "(mxm_acc_words = {n})"),
    "wide_load_rows": (lambda p: wide_load_max_rows(p) + 1,
                       "LWW loads 1..{m} rows per cycle (min(streams, VL) = {m})"),
}


def wide_load_max_rows(params) -> int:
    """Most weight rows one ``LWW`` installs in a cycle on the chip ``params``: one per byte
    stream of a direction, and no more than the VL rows of the weight buffer."""
    return min(params.streams, params.vl)


def wide_load_feed_rows(params) -> int:
    """Weight rows per cycle that MEM can feed an ``LWW`` of the west MXM, one ``READ`` per MEM
    slice and cycle (every MEM slice of both hemispheres reads westward onto its own stream):
    ``min(wide_load_max_rows, 2 * mem_slices)``. A ``VL x VL`` plane then installs in
    ``ceil(VL / wide_load_feed_rows)`` cycles (``docs/architecture.md``, *Wide weight load*)."""
    return min(wide_load_max_rows(params), 2 * params.mem_slices)


def field_limit(params, meaning: str) -> tuple[int, str] | None:
    """``(limit, what)`` for a meaning whose values must be ``< limit`` on the chip ``params``
    (``None``: only the field's bit range applies)."""
    entry = _LIMITS.get(meaning)
    if entry is None:
        return None
    n = entry[0](params)
    return n, entry[1].format(n=n, m=n - 1)


@dataclass(frozen=True)
class VxmOperands:
    """What a VXM instruction reads and drives (``rtl/vxm.py``, ``verification/model``).

    ``uses_b``: reads operand b (from streams in b_mode 0/1); ``b_bytes``: bytes of a stream b
    (``None``: the dtype's width); ``int32_only``: dtype must be int32; ``result``: width of the
    result, ``"dtype"``, ``"int8"``, ``"imm"`` (the lane type in imm[1:0]) or ``None`` (no
    stream result); ``imm``: ``"cmp"`` (a comparison code), ``"dtype"`` (imm[1:0] a lane type)
    or ``None`` (any value)."""
    uses_b: bool = True
    b_bytes: int | None = None
    int32_only: bool = False
    result: str | None = "dtype"
    imm: str | None = None


_VXM_BINARY = ("VADD", "VSUB", "VMUL", "VMULSHR", "VMIN", "VMAX", "VAND", "VOR", "VXOR", "VSHL",
               "VSRA", "VSRL")
VXM_OPERANDS = {
    **{m: VxmOperands() for m in _VXM_BINARY},
    "VCMP": VxmOperands(imm="cmp"),
    "VSEL": VxmOperands(b_bytes=1),
    "VREQ": VxmOperands(int32_only=True, result="int8"),
    **{m: VxmOperands(uses_b=False) for m in ("VRELU", "VABS", "VNEG")},
    "VCAST": VxmOperands(uses_b=False, result="imm", imm="dtype"),
    **{m: VxmOperands(uses_b=False, int32_only=True) for m in ("VEXP", "VRECIP", "VRSQRT")},
    "VLC": VxmOperands(uses_b=False, result=None),
}

_VXM_MNEMONICS = frozenset(i.mnemonic for i in VXM_INSTRUCTIONS)

#: Fewest cycles between two issues of an instruction in one queue (an earlier one is a
#: BAD_INSTRUCTION and is not executed): a TRANSPOSE reads ``lanes`` rows.
ISSUE_SPACING = {"TRANSPOSE": lambda p: p.lanes}


def _is_int(v) -> bool:
    """An integer (Python or numpy), not a bool and not a float."""
    return (not isinstance(v, (bool, float)) and type(v).__name__ != "bool_"
            and hasattr(type(v), "__index__"))


def _range_error(params, idef, name, v, what, note=""):
    return IsaError(f"{idef.mnemonic}: {name}={v} out of range for preset {params.name!r}: "
                    f"{what}{note}")


def check_instruction(params, role: str, idef: InstrDef, fields: dict, prev=None, *,
                      repeat_context: bool = True) -> None:
    """Check one instruction for a queue of ``role`` on the chip ``params``.

    Raises :class:`IsaError` naming the instruction, the field, its value and the allowed range
    when the chip would raise ``BAD_INSTRUCTION`` or ``ADDR_RANGE`` for it: an instruction the
    queue or the chip does not take, a field outside its bits, a MEM address, stream, stream
    group, weight row or column or accumulator row past the chip's, an ``LWW`` count above
    :func:`wide_load_max_rows` or whose rows or streams run past the last, a VXM operand or
    result whose byte streams run past the last stream, a VXM lane type that is not one (or not int32
    where only int32 is taken), a VCMP code or VCAST target that does not exist. ``prev`` is
    ``(idef, fields)`` of the last non-control instruction before a ``REPEAT`` in its queue
    (``None``: there is none, which is an error for a REPEAT); every copy's address field
    (modulo its width, as the ICU adds) must be in range. ``repeat_context=False`` checks a
    REPEAT's own fields only (for a caller that does not know the queue's order yet, such as
    ``Schedule.place``; :func:`check_queue` checks the context).
    """
    p = params
    mn = idef.mnemonic
    why = unavailable_reason(idef, role, p)
    if why:
        raise IsaError(why)
    extra = set(fields) - set(idef.field_names)
    if extra:
        raise IsaError(f"{mn}: unknown field(s) {', '.join(sorted(map(str, extra)))}")
    for f in idef.fields:
        if f.name not in fields:
            raise IsaError(f"{mn}: missing field {f.name!r}")
        v = fields[f.name]
        if not _is_int(v):
            raise IsaError(f"{mn}: field {f.name} must be an integer, not {v!r}")
        if not f.min <= v <= f.max:
            raise IsaError(f"{mn}: field {f.name}={v} out of range [{f.min}, {f.max}]")
        entry = _LIMITS.get(field_meaning(idef, f.name))
        if entry is not None and v >= entry[0](p):
            raise _range_error(p, idef, f.name, v, field_limit(p, field_meaning(idef, f.name))[1])
    if mn == "LWW":
        _check_lww(p, idef, fields)
    ops = VXM_OPERANDS.get(mn) if mn in _VXM_MNEMONICS else None
    if ops is not None:
        _check_vxm(p, idef, fields, ops)
    if mn == "REPEAT" and repeat_context:
        _check_repeat(p, fields, prev)


def _check_lww(p, idef, f):
    """LWW's rows ``row .. row + count - 1`` and streams ``stream .. stream + count - 1``."""
    n = f["count"]
    if f["row"] + n > p.vl:
        raise _range_error(p, idef, "row", f["row"],
                           f"{n} rows {f['row']}..{f['row'] + n - 1} run past the last weight "
                           f"row {p.vl - 1} (VL = {p.vl}): row must be 0..{p.vl - n}")
    if f["stream"] + n > p.streams:
        raise _range_error(p, idef, "stream", f["stream"],
                           f"{n} streams {f['stream']}..{f['stream'] + n - 1} run past the last "
                           f"stream {p.streams - 1}: stream must be 0..{p.streams - n}")


def _check_vxm(p, idef, f, ops):
    from . import vxm_ops       # lane types and comparison codes (numpy only)
    mn = idef.mnemonic
    def types():
        return ", ".join(f"{k} {vxm_ops.DTYPE_NAMES[k]}" for k in vxm_ops.DTYPE_BYTES)
    dtype = f["dtype"]
    if dtype not in vxm_ops.DTYPE_BYTES:
        raise IsaError(f"{mn}: dtype={dtype} is not a lane type (allowed: {types()})")
    if ops.int32_only and vxm_ops.DTYPE_BYTES[dtype] != 4:
        raise IsaError(f"{mn}: dtype={dtype} not allowed: {mn} takes int32 only (dtype 2)")
    if ops.imm == "cmp" and f["imm"] not in vxm_ops.CMP_CODES:
        codes = ", ".join(f"{k} {v}" for k, v in vxm_ops.CMP_CODES.items())
        raise IsaError(f"{mn}: imm={f['imm']} is not a comparison code (allowed: {codes})")
    if ops.imm == "dtype" and (f["imm"] & 3) not in vxm_ops.DTYPE_BYTES:
        raise IsaError(f"{mn}: imm={f['imm']}: target lane type imm[1:0]={f['imm'] & 3} is not "
                       f"a lane type (allowed: {types()})")
    w = vxm_ops.DTYPE_BYTES[dtype]

    def fits(name, first, nbytes, what):
        if first + nbytes > p.streams:
            raise _range_error(
                p, idef, name, first,
                f"{what} takes {nbytes} byte stream(s) {first}..{first + nbytes - 1}, past the "
                f"last stream {p.streams - 1}: {name} must be 0..{p.streams - nbytes}")
    fits("a_stream", f["a_stream"], w, f"operand a ({vxm_ops.DTYPE_NAMES[dtype]})")
    if ops.uses_b and f["b_mode"] in (VXM_B_STREAM, VXM_B_CHAIN):
        wb = ops.b_bytes or w
        fits("b_stream", f["b_stream"], wb, "operand b")
    if ops.result is not None:
        out = {"dtype": dtype, "int8": 0, "imm": f["imm"] & 3}[ops.result]
        fits("a_stream", f["a_stream"], vxm_ops.DTYPE_BYTES[out],
             f"the result ({vxm_ops.DTYPE_NAMES[out]})")


def _check_repeat(p, f, prev):
    if prev is None:
        raise IsaError("REPEAT: no instruction before it to repeat (a REPEAT repeats the last "
                       "non-control instruction of its queue)")
    pidef, pf = prev
    name = REPEAT_FIELD.get(pidef.mnemonic)
    if name is None:
        return
    fld = next(x for x in pidef.fields if x.name == name)
    lim = field_limit(p, field_meaning(pidef, name))
    limit = min(lim[0], fld.max + 1) if lim else fld.max + 1
    if pidef.mnemonic == "LWW":             # every copy's rows row .. row + count - 1
        limit = min(limit, p.vl - pf["count"] + 1)
        lim = (limit, f"LWW's {pf['count']} rows must end by row {p.vl - 1}: row is "
                      f"0..{limit - 1} (VL = {p.vl})")
    base, stride = pf[name], f["stride"]
    for k in range(1, f["count"] + 1):
        v = (base + k * stride) & fld.mask
        if v >= limit:
            what = lim[1] if lim else f"{name} is 0..{fld.max}"
            raise IsaError(
                f"REPEAT: copy {k} of {pidef.mnemonic} has {name}={v} ({base} + {k} x {stride}, "
                f"modulo 2**{fld.bits}), out of range for preset {p.name!r}: {what}")


def queue_issues(words, check=None, *, past_halt: bool = False):
    """The issues of a queue image in order: ``(word index, InstrDef, fields, cycle)`` for every
    instruction that issues (REPEAT copies included, with the repeated instruction's fields;
    NOP, HALT and REPEAT themselves are not issues), in the ICU's timing: a word issues one
    cycle after the previous one, ``NOP n`` takes ``n`` cycles, ``REPEAT count, interval``
    issues ``count`` copies ``interval`` cycles apart after the instruction it repeats.

    ``cycle`` counts from the queue's start (cycle 0 of the run) or, after a ``SYNC``, from the
    release of that SYNC (which depends on another queue's NOTIFY): the SYNC itself comes as
    ``(word index, InstrDef, fields, None)`` and cycles start again at 0 after it.
    Stops after the first HALT (``past_halt``: walks on to the last word, as if the queue went
    on). ``check(i, idef, fields, prev)`` is called for every word before it is walked
    (``prev``: the last non-control instruction and its fields, which a REPEAT repeats).
    Raises :class:`IsaError` for a word that is not an instruction, with attribute ``index``.
    """
    prev = None
    t = 0
    for i, w in enumerate(words):
        try:
            if not _is_int(w):
                raise IsaError(f"instruction word must be an integer, not {w!r}")
            idef, f = decode(int(w))
            if check is not None:
                check(i, idef, f, prev)
        except IsaError as e:
            e.index = i
            raise
        mn = idef.mnemonic
        if mn == "REPEAT":
            for k in range(1, f["count"] + 1):
                yield i, prev[0], prev[1], t - 1 + k * f["interval"]
            t += f["count"] * f["interval"]
        elif mn == "NOP":
            t += f["count"]
        elif mn == "SYNC":
            yield i, idef, f, None      # parked until a NOTIFY: later cycles are relative
            t = 0
        else:
            if mn not in CONTROL_MNEMONICS:
                prev = (idef, f)
            if mn != "HALT":
                yield i, idef, f, t
            t += 1
            if mn == "HALT" and not past_halt:
                return


def check_queue(params, queue_name: str, words) -> None:
    """Check a queue's instruction image for the chip ``params``: its length, every word
    (:func:`decode`, :func:`check_instruction`), each REPEAT against the instruction it repeats,
    and the spacing of instructions that must not issue too close (:data:`ISSUE_SPACING`,
    counted in issue cycles by :func:`queue_issues`; a SYNC ends what is known).

    Raises :class:`IsaError` ``"queue Q word i: ..."``; its ``index`` attribute is the word.
    """
    p = params
    try:
        q = p.queue(queue_name)
    except ValueError as e:
        raise IsaError(str(e)) from None
    words = list(words)
    if len(words) > p.imem_words:
        raise IsaError(f"queue {queue_name}: {len(words)} words exceed the instruction memory "
                       f"({p.imem_words} words)")

    def check(i, idef, f, prev):
        check_instruction(p, q.role, idef, f, prev)

    last_issue = {}                # mnemonic -> last issue cycle (ISSUE_SPACING)
    i = 0
    try:
        for i, d, _, at in queue_issues(words, check, past_halt=True):
            if at is None:         # SYNC: what follows is timed from its release
                last_issue.clear()
                continue
            gap = ISSUE_SPACING.get(d.mnemonic)
            if gap is None:
                continue
            need = gap(p)
            before = last_issue.get(d.mnemonic)
            if before is not None and at - before < need:
                raise IsaError(f"{d.mnemonic} issues at cycle {at}, {at - before} cycle(s) "
                               f"after the previous one; it must issue at least {need} "
                               f"cycles later (the chip rejects it as a bad instruction)")
            last_issue[d.mnemonic] = at
    except IsaError as e:
        i = getattr(e, "index", i)
        err = IsaError(f"queue {queue_name} word {i}: {e}")
        err.index = i
        raise err from None


# -- MEM ECC (LpuParams.mem_ecc; the code itself is openlpu.ecc) ---------------------------------
# ECC_INJECT holds two slots of ECC_INJECT_SLOT_BITS bits: slot s is bits [8s+6 : 8s] the index
# of a stored bit of a MEM host word (openlpu.ecc.host_word_code_bits), bit 8s+7 its enable.
# The next host write to the MEM region stores its codeword(s) with the enabled bits flipped,
# and clears the register (whatever the address). An index beyond the host word flips nothing.
# ECC_CORRECTED / ECC_UNCORRECTABLE count codewords (a byte with mem_gather, a host word
# without) read by an enabled READ / GATHER or by the host; both saturate at 2**32 - 1 and are
# cleared with ERRORS (START, CLEAR_ERRORS). ErrorFlag.MEM_UNCORRECTABLE is raised in the cycle
# the bad codeword is read out: t + d_func(READ) + c for superlane c of a READ / GATHER issued
# at t (ERROR_CYCLE as for the other flags), the host read's cycle for a host read.
ECC_INJECT_SLOTS = 2
ECC_INJECT_SLOT_BITS = 8
ECC_INJECT_INDEX_BITS = 7
ECC_COUNTER_BITS = 32


def ecc_inject_field(slot: int, bit: int) -> int:
    """The ECC_INJECT bits that enable flipping stored bit ``bit`` in ``slot`` (0 or 1)."""
    if not 0 <= slot < ECC_INJECT_SLOTS or not 0 <= bit < (1 << ECC_INJECT_INDEX_BITS):
        raise IsaError(f"ECC_INJECT: slot {slot} / bit {bit} out of range")
    return ((1 << ECC_INJECT_INDEX_BITS) | bit) << (ECC_INJECT_SLOT_BITS * slot)


def ecc_inject_bits(value: int) -> tuple:
    """The stored-bit indices an ECC_INJECT value enables (in slot order)."""
    out = []
    for slot in range(ECC_INJECT_SLOTS):
        f = (value >> (ECC_INJECT_SLOT_BITS * slot)) & ((1 << ECC_INJECT_SLOT_BITS) - 1)
        if f >> ECC_INJECT_INDEX_BITS & 1:
            out.append(f & ((1 << ECC_INJECT_INDEX_BITS) - 1))
    return tuple(out)


ECC_INJECT_MASK = (1 << (ECC_INJECT_SLOTS * ECC_INJECT_SLOT_BITS)) - 1   # bits the register keeps
