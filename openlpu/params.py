"""The one parameter object of OpenLPU.

:class:`LpuParams` describes the geometry of a chip: lanes, superlanes, streams, slices,
memory depths. The RTL, the reference model, the assembler, the compiler and the host
driver all take the same object; nothing else states a width, a depth or a slice position.

The floorplan (:attr:`LpuParams.floorplan`) lists the functional slices from west to east.
Slice ``p`` sits between stream-register (SR) column ``p`` (its west side) and SR column
``p + 1`` (its east side); see ``docs/architecture.md``.
"""

from __future__ import annotations

import dataclasses
import json
import zlib
from dataclasses import dataclass
from functools import cached_property

__all__ = ["LpuParams", "SliceInfo", "QueueInfo", "PRESETS", "preset", "ParamsError"]


class ParamsError(ValueError):
    """A parameter set is inconsistent, or a preset name is unknown."""


def _is_pow2(x: int) -> bool:
    return x > 0 and (x & (x - 1)) == 0


def _clog2(x: int) -> int:
    return max(0, (x - 1).bit_length())


@dataclass(frozen=True)
class SliceInfo:
    """One functional slice of the floorplan.

    ``kind`` is ``"mem"``, ``"mxm"``, ``"vxm"`` or ``"sxm"``; ``position`` is its index from
    the west edge (0) and ``name`` a stable identifier such as ``mem_w0`` (MEM slice 0 of the
    west hemisphere, counted from the centre outwards).
    """
    name: str
    kind: str
    position: int
    hemisphere: str          # "west", "east" or "centre"
    index: int               # index among slices of the same kind (0-based, global)


@dataclass(frozen=True)
class QueueInfo:
    """One instruction queue (one ICU instruction memory) and the slice it drives."""
    name: str                # e.g. "mem_w0.read", "mxm_w.weights"
    slice: SliceInfo
    role: str                # "read", "write", "weights", "compute", "result", ...
    index: int               # global queue index; host IMEM address space is ordered by it


@dataclass(frozen=True)
class LpuParams:
    """Geometry of an OpenLPU chip.

    Parameters
    ----------
    name : str
        Preset name (informational; part of :attr:`config_id`).
    lanes : int
        Lanes per superlane (bytes per stream per superlane). Power of two, >= 2 (2 only for
        the smallest FPGA chip: a host word then carries the superlane's 2 lanes).
    superlanes : int
        Number of superlanes. The vector length is ``lanes * superlanes``.
    streams : int
        Byte-wide streams per direction (east and west). Multiple of 4 (int32 groups).
    mem_slices : int
        MEM slices per hemisphere.
    mem_banks : int
        Banks per MEM slice (2: read one bank while writing the other).
    mem_words : int
        Vector words per bank. Power of two.
    mxm_acc_words : int
        Depth of the MXM int32 accumulator (result rows held at once).
    imem_words : int
        Instruction words per queue.
    mxm_pipeline : int
        Extra register stages in the MXM dot-product path (adds to ABC's latency).
    mxm_act_reg : bool
        Register the MXM's selected stream operands (ABC's activations, LW/LWT's weight bytes)
        before they are used: the multipliers start from a register instead of the stream
        select. Every MXM state change (LW, LWT, IW, the products) moves one cycle later
        together, so their order is unchanged; ABC's latency grows by one (``isa``'s
        ``d_func``). Default ``False``.
    icu_issue_reg : bool
        Pipelined ICUs: each registers the word fetched from its instruction memory before
        decoding it and the word it issues before its slice decodes it. The whole run starts
        :func:`openlpu.isa.start_delay` (2) cycles later after START; the register block counts
        CYCLES from the run's cycle 0, so CYCLES, ERROR_CYCLE, every latency and the compiler's
        schedules are unchanged. Default ``False``.
    host_start_reg : bool
        Register the register block's START pulse: the ICUs and the stream-register clear see
        START one cycle after the CTRL write, so START no longer fans out across the chip
        straight from the host bus decode. :func:`openlpu.isa.start_delay` grows by one; as with
        ``icu_issue_reg``, CYCLES, ERROR_CYCLE, every latency and the compiler's schedules are
        unchanged, and only STATUS.DONE rises one cycle later. Default ``False``.
    mxm_booth : bool
        Form the MXM's products as radix-4 Booth partial products added by the dot product's
        adder tree, instead of as multiplications (the values are the same). For FPGAs whose
        multipliers are built from LUTs (iCE40 HX): about 30 % fewer LUTs per dot product.
        Leave it off where ``*`` maps to DSP blocks. Default ``False``.
    icu_repeat : bool
        Whether the ICUs implement ``REPEAT`` (its copy engine holds two instruction words and
        an adder per address field). ``False`` (a size option for the smallest FPGAs): REPEAT
        is not in the ISA of this chip; the assembler and the program loader reject it, the
        compiler emits every copy as its own word, and a REPEAT word met at run time raises
        ``BAD_INSTRUCTION`` like any instruction its queue does not accept. Default ``True``.
    mem_gather : bool
        Whether every MEM lane has its own address (one byte-wide memory per lane), which
        ``GATHER`` and ``SCATTER`` need. ``False`` (a size option): each MEM tile is one
        ``lanes``-byte-wide memory, half the block RAMs on an iCE40, and GATHER / SCATTER are
        not in the ISA of this chip (rejected like REPEAT above). Default ``True``.
    mem_ecc : bool
        SECDED check bits on every MEM word (``openlpu.ecc``): encoded on every write
        (WRITE, SCATTER, host), checked and corrected on every read (READ, GATHER, host), with
        the same latencies. A codeword is a byte with ``mem_gather`` (Hamming(13,8)), a host
        word of ``host_word_lanes`` bytes without it ((39,32)). Adds the host registers
        ECC_INJECT, ECC_CORRECTED, ECC_UNCORRECTABLE and ``ErrorFlag.MEM_UNCORRECTABLE``
        (``docs/architecture.md``, *MEM ECC*). Default ``False``.
    vxm_alus : int
        ALUs per VXM lane, each with its own instruction queue (0: no VXM, streams pass through).
    vxm_fx_alus : int or None
        How many VXM ALUs, counted from ALU 0 (``alu0 .. alu{n-1}``), carry the fixed-point
        function pipelines (``VEXP``, ``VRECIP``, ``VRSQRT``: 21 of an ALU's 22 multipliers).
        ``None`` (default): every ALU. The other ALUs leave the pipelines out; the function
        instructions are not in their queues' ISA (``openlpu.isa.vxm_alus_with``): the
        assembler, the program loader and the compiler reject them there, and one met at run
        time raises ``BAD_INSTRUCTION``. ``0 .. vxm_alus``.
    vxm_mul_alus : int or None
        Likewise for the ALU's signed 32 x 32 multiplier (``VMUL``, ``VMULSHR``, ``VREQ``),
        counted from ALU 0. ``None`` (default): every ALU.
    sxm : bool
        Whether the floorplan has an SXM in each hemisphere (between the MXM and the MEM slices).
    """
    name: str = "custom"
    lanes: int = 16
    superlanes: int = 2
    streams: int = 8
    mem_slices: int = 2
    mem_banks: int = 2
    mem_words: int = 256
    mxm_acc_words: int = 64
    imem_words: int = 256
    mxm_pipeline: int = 0
    vxm_alus: int = 0
    sxm: bool = False
    mxm_act_reg: bool = False
    icu_issue_reg: bool = False
    host_start_reg: bool = False
    mxm_booth: bool = False
    icu_repeat: bool = True
    mem_gather: bool = True
    mem_ecc: bool = False
    vxm_fx_alus: int | None = None
    vxm_mul_alus: int | None = None

    def __post_init__(self):
        def need(cond, msg):
            if not cond:
                raise ParamsError(f"{self.name}: {msg}")
        for f in ("lanes", "superlanes", "streams", "mem_slices", "mem_banks", "mem_words",
                  "mxm_acc_words", "imem_words"):
            v = getattr(self, f)
            need(isinstance(v, int) and v >= 1, f"{f} must be a positive integer, not {v!r}")
        need(_is_pow2(self.lanes) and self.lanes >= 2, f"lanes must be a power of two >= 2, not {self.lanes}")
        need(self.streams % 4 == 0 and self.streams <= 32, f"streams must be a multiple of 4 up to 32, not {self.streams}")
        need(self.mem_banks == 2, f"mem_banks must be 2, not {self.mem_banks}")
        need(_is_pow2(self.mem_words), f"mem_words must be a power of two, not {self.mem_words}")
        need(self.mem_words * self.mem_banks <= 1 << 16, "MEM address (bank and word) must fit 16 bits")
        need(self.mem_slices * 2 >= 4, "at least 2 MEM slices per hemisphere are needed (4 int32 byte planes)")
        need(self.vl <= 512, f"vector length {self.vl} exceeds 512 (LW row field)")
        need(self.mxm_acc_words <= 1024, "mxm_acc_words must be <= 1024 (ABC/ACC address field)")
        need(isinstance(self.mxm_pipeline, int) and self.mxm_pipeline >= 0, "mxm_pipeline must be >= 0")
        need(isinstance(self.vxm_alus, int) and 0 <= self.vxm_alus <= 4, "vxm_alus must be 0..4")
        for f in ("vxm_fx_alus", "vxm_mul_alus"):
            v = getattr(self, f)
            need(v is None or (isinstance(v, int) and not isinstance(v, bool)
                               and 0 <= v <= self.vxm_alus),
                 f"{f} must be None (every ALU) or 0..vxm_alus ({self.vxm_alus}), not {v!r}")
        for f in ("mxm_act_reg", "icu_issue_reg", "host_start_reg", "mxm_booth", "icu_repeat",
                  "mem_gather", "mem_ecc"):
            need(isinstance(getattr(self, f), bool), f"{f} must be True or False, not {getattr(self, f)!r}")
        # the host address map (openlpu.isa) must reach every MEM word and instruction word
        from . import isa
        mem_bits = sum(self.host_mem_field_bits.values())
        need(mem_bits <= isa.HOST_REGION_SHIFT,
             f"MEM host addresses need {mem_bits} bits, the host map's MEM region has "
             f"{isa.HOST_REGION_SHIFT} (fewer MEM slices, words or lanes)")
        need(self.imem_words <= 1 << isa.IMEM_QUEUE_SHIFT,
             f"imem_words {self.imem_words} exceeds the {1 << isa.IMEM_QUEUE_SHIFT} words a queue "
             f"has in the host map")
        max_queues = 1 << (isa.HOST_REGION_SHIFT - isa.IMEM_QUEUE_SHIFT)
        need(len(self.queues) <= max_queues,
             f"{len(self.queues)} instruction queues, the host map holds {max_queues}")

    # -- derived sizes -------------------------------------------------------------------
    @property
    def vl(self) -> int:
        """Vector length: bytes in one stream vector across all superlanes."""
        return self.lanes * self.superlanes

    @property
    def mem_addr_words(self) -> int:
        """Addressable words per MEM slice (all banks)."""
        return self.mem_words * self.mem_banks

    @property
    def mem_word_bits(self) -> int:
        return _clog2(self.mem_words)

    def mem_bank_of(self, addr: int) -> int:
        """Bank selected by a MEM address (its most significant bit)."""
        return addr >> self.mem_word_bits

    @property
    def stream_groups(self) -> int:
        """Number of 4-stream groups per direction (one int32 vector each)."""
        return self.streams // 4

    @property
    def sr_columns(self) -> int:
        """Stream-register columns: one on each side of every slice."""
        return len(self.floorplan) + 1

    # -- floorplan -----------------------------------------------------------------------
    @cached_property
    def floorplan(self) -> tuple[SliceInfo, ...]:
        """Slices from west to east: MXM | MEM west (outer..inner) | VXM | MEM east (inner..outer)."""
        slices = []

        def add(name, kind, hemi, index):
            slices.append(SliceInfo(name, kind, len(slices), hemi, index))
        add("mxm_w", "mxm", "west", 0)
        if self.sxm:
            add("sxm_w", "sxm", "west", 0)
        n = self.mem_slices
        for i in reversed(range(n)):
            add(f"mem_w{i}", "mem", "west", i)
        add("vxm", "vxm", "centre", 0)
        for i in range(n):
            add(f"mem_e{i}", "mem", "east", n + i)
        if self.sxm:
            add("sxm_e", "sxm", "east", 1)
        return tuple(slices)

    def slice(self, name: str) -> SliceInfo:
        for s in self.floorplan:
            if s.name == name:
                return s
        raise ParamsError(f"{self.name}: no slice named {name!r}; slices are "
                          f"{', '.join(s.name for s in self.floorplan)}")

    @cached_property
    def mem_slice_list(self) -> tuple[SliceInfo, ...]:
        """MEM slices ordered by their global index (west 0..n-1, then east 0..n-1)."""
        return tuple(sorted((s for s in self.floorplan if s.kind == "mem"), key=lambda s: s.index))

    @cached_property
    def queues(self) -> tuple[QueueInfo, ...]:
        """All instruction queues, in host IMEM order."""
        from .isa import QUEUE_ROLES  # roles per slice kind are part of the ISA
        out = []
        for s in self.floorplan:
            roles = QUEUE_ROLES[s.kind]
            if s.kind == "vxm":
                roles = roles[:self.vxm_alus]
            for role in roles:
                out.append(QueueInfo(f"{s.name}.{role}", s, role, len(out)))
        return tuple(out)

    def queue(self, name: str) -> QueueInfo:
        for q in self.queues:
            if q.name == name:
                return q
        raise ParamsError(f"{self.name}: no instruction queue named {name!r}; queues are "
                          f"{', '.join(q.name for q in self.queues)}")

    # -- host address map (32-bit words) -------------------------------------------------
    @property
    def host_word_lanes(self) -> int:
        """Lanes (bytes) carried by one 32-bit host word of a MEM tile: 4, or all the lanes of
        a superlane when it has fewer (the upper bytes then read as 0 and are ignored when
        written)."""
        return min(4, self.lanes)

    @property
    def host_lane_groups(self) -> int:
        """32-bit host words per superlane tile of a vector word (``host_word_lanes`` each)."""
        return self.lanes // self.host_word_lanes

    @property
    def host_mem_field_bits(self) -> dict:
        """Bit widths of the MEM host address fields, LSB first."""
        return {
            "group": _clog2(self.host_lane_groups),
            "superlane": _clog2(self.superlanes),
            "word": self.mem_word_bits,
            "bank": 1,
            "slice": _clog2(2 * self.mem_slices),
        }

    # -- identity ------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """Every field, except the optional switches (``_OPTIONAL_FIELDS``) left at their
        defaults: a preset that does not use them keeps its JSON and :attr:`config_id`."""
        d = dataclasses.asdict(self)
        for f, default in _OPTIONAL_FIELDS.items():
            if d[f] == default:
                del d[f]
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "LpuParams":
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - fields
        if unknown:
            raise ParamsError(f"unknown parameter(s): {', '.join(sorted(unknown))}")
        return cls(**d)

    @classmethod
    def from_json(cls, text: str) -> "LpuParams":
        return cls.from_dict(json.loads(text))

    @property
    def config_id(self) -> int:
        """32-bit identifier of this configuration (CRC-32 of its JSON); readable from the RTL."""
        return zlib.crc32(self.to_json().encode())

    @property
    def tag(self) -> str:
        return f"{self.name}-L{self.lanes}x{self.superlanes}-S{self.streams}"

    def __repr__(self):
        return f"LpuParams(name={self.name!r}, vl={self.vl})"


#: Fields added after the first presets, with their defaults (left out of ``to_dict`` when unset).
_OPTIONAL_FIELDS = {"mxm_act_reg": False, "icu_issue_reg": False, "host_start_reg": False,
                    "mxm_booth": False, "icu_repeat": True, "mem_gather": True,
                    "mem_ecc": False, "vxm_fx_alus": None, "vxm_mul_alus": None}


# Every preset registers START (``host_start_reg``): START then fans out from a register, not
# from the host bus decode, which the FPGA timing wants and which takes that logic out of
# Verilator's input-combinational region (re-evaluated on every eval()). Schedules and CYCLES
# do not change; STATUS.DONE rises one cycle later.
PRESETS: dict[str, LpuParams] = {
    # Fast unit tests in Amaranth's simulator: VL = 8.
    "tiny": LpuParams(name="tiny", lanes=4, superlanes=2, streams=8, mem_slices=2,
                      mem_words=64, mxm_acc_words=16, imem_words=256, host_start_reg=True),
    # The default chip: 2 superlanes x 16 lanes, VL = 32.
    "default": LpuParams(name="default", lanes=16, superlanes=2, streams=8, mem_slices=2,
                         mem_words=256, mxm_acc_words=64, imem_words=512, host_start_reg=True),
    # Four superlanes: exercises the stagger and the MXM reduction over more superlanes.
    "quad": LpuParams(name="quad", lanes=8, superlanes=4, streams=8, mem_slices=2,
                      mem_words=128, mxm_acc_words=32, imem_words=256, host_start_reg=True),
    # Every slice kind (4 VXM ALUs, an SXM per hemisphere) at VL = 8: the whole ISA on the
    # chip, small enough for Verilator in the regression.
    "mini": LpuParams(name="mini", lanes=4, superlanes=2, streams=8, mem_slices=2,
                      mem_words=64, mxm_acc_words=16, imem_words=256, vxm_alus=4, sxm=True,
                      host_start_reg=True),
    # Every slice kind at 4 superlanes x 4 lanes, VL = 16: the second preset for the whole-ISA
    # chip tests, where the stagger, SXM deskew/reskew and LWT span more than two superlanes.
    "mini4": LpuParams(name="mini4", lanes=4, superlanes=4, streams=8, mem_slices=2,
                       mem_words=64, mxm_acc_words=32, imem_words=256, vxm_alus=4, sxm=True,
                       host_start_reg=True),
    # mini with one "large" VXM ALU: only alu0 has the exp / reciprocal / rsqrt pipelines
    # (vxm_fx_alus); the ALU classes in the whole-ISA and kernel tests.
    "mini_lite": LpuParams(name="mini_lite", lanes=4, superlanes=2, streams=8, mem_slices=2,
                           mem_words=64, mxm_acc_words=16, imem_words=256, vxm_alus=4, sxm=True,
                           vxm_fx_alus=1, host_start_reg=True),
    # The model-scale chip: 4 superlanes x 16 lanes (VL 64), 16 byte streams per direction,
    # 8 MEM slices per hemisphere of 2 x 8192 words (16 MiB of MEM in all), 16,384 instruction
    # words per queue, a 128-row MXM accumulator (64-row tiles twice over), every slice kind:
    # 4 VXM ALUs, each with the 32 x 32 multiplier (VMUL, VMULSHR, VREQ: RMSNorm keeps three
    # multiplying ALUs busy besides the rsqrt one), alu0 and alu1 also with the exp / reciprocal
    # / rsqrt pipelines (causal attention runs VEXP on two ALUs): the cheapest set that runs
    # every kernel (docs/architecture.md, Cost). For the Verilator backend: its Verilog has one module per
    # distinct sub-design (openlpu.rtl.shared), too large for the pysim tests.
    "base": LpuParams(name="base", lanes=16, superlanes=4, streams=16, mem_slices=8,
                      mem_words=8192, mxm_acc_words=128, imem_words=16384, vxm_alus=4,
                      sxm=True, vxm_fx_alus=2, host_start_reg=True),
    # FPGA builds (synth/): sized to fit the board's device; see docs/fpga.md.
    # ULX3S-85F (ECP5 LFE5U-85F): VL = 8. VL = 16 needs 256 MULT18X18D (one per int8
    # product), more than the 156 of the device.
    # Registered issue, START, MXM operand and product/sum registers: see docs/fpga.md.
    "ecp5": LpuParams(name="ecp5", lanes=4, superlanes=2, streams=8, mem_slices=2,
                      mem_words=256, mxm_acc_words=32, imem_words=256, mxm_pipeline=2,
                      mxm_act_reg=True, icu_issue_reg=True, host_start_reg=True),
    # iCE40-HX8K (7,680 LCs, 32 EBRs): VL = 2 (2 lanes, 1 superlane, 4 MACs), no REPEAT, no
    # per-lane MEM addressing, Booth products; its memories fill 4-kbit block RAMs (256 x 16).
    # The smallest VL = 4 chip needs 10,701 LCs even with these options (docs/fpga.md).
    "ice40": LpuParams(name="ice40", lanes=2, superlanes=1, streams=4, mem_slices=2,
                       mem_words=128, mxm_acc_words=2, imem_words=256, mxm_booth=True,
                       icu_repeat=False, mem_gather=False, host_start_reg=True),
}


def preset(name: str) -> LpuParams:
    """Return a named preset, or raise :class:`ParamsError` naming the known ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ParamsError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}") from None
