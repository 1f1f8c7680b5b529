"""The OpenLPU chip top: fabric, slices, instruction control units and the register block."""

from amaranth.back import verilog
from amaranth.hdl import Const, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from openlpu import isa

from .common import ERROR_BITS, host_bus_signature
from .fabric import StreamFabric
from .icu import InstructionControlUnit
from .mem import MemSlice, mem_host_addr_bits
from .regs import HostRegisters
from .shared import library, place, zero_init_memories

__all__ = ["LpuChip", "generate_verilog", "convert_chip", "keep_modules_apart",
           "NO_INLINE_MIN_VL", "mem_tile_memories"]


class LpuChip(wiring.Component):
    """An OpenLPU chip built from one parameter set.

    One slice per entry of ``params.floorplan`` (MEM -> :class:`~openlpu.rtl.mem.MemSlice`,
    MXM -> :class:`~openlpu.rtl.mxm.MxmSlice`; the VXM position has no slice yet, so streams
    pass straight through it), the stream-register fabric, one
    :class:`~openlpu.rtl.icu.InstructionControlUnit` per ``params.queues`` entry wired to its
    slice's ``instr_<role>`` port, and the host register block. Every ICU's ``notify`` output is
    ORed (combinationally, in the same cycle) into one wire that goes to every ICU's
    ``notify_in`` (SYNC / NOTIFY).

    Parameters
    ----------
    params : :class:`openlpu.params.LpuParams`
        Chip geometry.

    Members
    -------
    host : ``In(host_bus_signature())``
        Host bus (see ``docs/architecture.md``, Host interface).
    running : ``Out(1)``
        STATUS.RUNNING.
    done : ``Out(1)``
        STATUS.DONE.

    Attributes
    ----------
    slices : dict
        Slice components by floorplan name (``None`` for positions without a slice).
    icus : tuple
        The ICUs, in ``params.queues`` order.
    """

    def __init__(self, params):
        self._params = params
        self._fabric = StreamFabric(params)
        self._regs = HostRegisters(params)
        self._slices = {}
        for s in params.floorplan:
            if s.kind == "mem":
                self._slices[s.name] = MemSlice(params, s)
            elif s.kind == "mxm":
                from .mxm import MxmSlice
                self._slices[s.name] = MxmSlice(params, s)
            elif s.kind == "vxm":
                if params.vxm_alus:
                    from .vxm import VxmSlice
                    self._slices[s.name] = VxmSlice(params, s)
                else:
                    self._slices[s.name] = None     # no VXM: streams pass straight through
            elif s.kind == "sxm":
                from .sxm import SxmSlice
                self._slices[s.name] = SxmSlice(params, s)
            else:
                raise ValueError(f"slice {s.name}: no RTL for slice kind {s.kind!r}")
        self._icus = tuple(InstructionControlUnit(params, q) for q in params.queues)
        for q in params.queues:
            sl = self._slices[q.slice.name]
            if sl is None or f"instr_{q.role}" not in sl.signature.members:
                raise ValueError(f"queue {q.name}: slice {q.slice.name} has no instr_{q.role} port")
        super().__init__({
            "host":    In(host_bus_signature()),
            "running": Out(1),
            "done":    Out(1),
        })

    @property
    def params(self):
        return self._params

    @property
    def slices(self) -> dict:
        return dict(self._slices)

    @property
    def icus(self) -> tuple:
        return self._icus

    @property
    def fabric(self) -> StreamFabric:
        return self._fabric

    @property
    def regs(self) -> HostRegisters:
        return self._regs

    def elaborate(self, platform):
        m = Module()
        p = self._params
        fabric, regs = self._fabric, self._regs
        m.submodules.fabric = fabric
        m.submodules.regs = regs
        wiring.connect(m, wiring.flipped(self.host), regs.host)
        m.d.comb += [
            self.running.eq(regs.running),
            self.done.eq(regs.done),
            fabric.clear.eq(regs.start),
        ]

        errors = []
        ext_r_data = []

        # -- slices on the fabric --------------------------------------------------------------
        for s in p.floorplan:
            sl = self._slices[s.name]
            if sl is None:
                continue
            # every slice of a kind is the same circuit: its logic depends on the parameters only
            # (not on its floorplan position), so the Verilog holds one module per kind
            place(m, s.name, sl, (p.to_json(),), kind=f"{s.kind}_slice")
            pos = s.position
            m.d.comb += [
                sl.sr_east_in.eq(fabric.east[pos]),
                sl.sr_west_in.eq(fabric.west[pos + 1]),
                fabric.drive_east[pos].eq(sl.drive_east),
                fabric.drive_west[pos].eq(sl.drive_west),
            ]
            if s.kind == "vxm":           # chaining: the VXM also reads its output-side columns
                m.d.comb += [
                    sl.sr_east_out.eq(fabric.east[pos + 1]),
                    sl.sr_west_out.eq(fabric.west[pos]),
                ]
            errors.append(sl.error)

        # -- host access to MEM: fields group, superlane, word, bank, slice (LSB first) ----------
        sub = regs.sub_addr
        fb = p.host_mem_field_bits
        low = mem_host_addr_bits(p)
        mem_slice_idx = sub[low:low + fb["slice"]]
        mem_rest = sub[low + fb["slice"]:]
        ecc_corr, ecc_unc = [], []
        for s in p.mem_slice_list:
            sl = self._slices[s.name]
            sel = (mem_slice_idx == s.index) & (mem_rest == 0)
            m.d.comb += [
                sl.host.w_en.eq(regs.mem_w_en & sel),
                sl.host.r_en.eq(regs.mem_r_en & sel),
                sl.host.addr.eq(sub[:low]),
                sl.host.w_data.eq(regs.w_data),
            ]
            ext_r_data.append(sl.host.r_data)
            if p.mem_ecc:
                m.d.comb += sl.ecc_flip.eq(regs.ecc_flip)
                ecc_corr.append(sl.ecc_corrected)
                ecc_unc.append(sl.ecc_uncorrectable)
        if p.mem_ecc:                     # codewords with an ECC event this cycle, chip-wide
            m.d.comb += [regs.ecc_corrected_in.eq(sum(ecc_corr)),
                         regs.ecc_uncorrectable_in.eq(sum(ecc_unc))]

        # -- ICUs and host access to IMEM: queue index above isa.IMEM_QUEUE_SHIFT, word below it ---
        imem_queue = sub[isa.IMEM_QUEUE_SHIFT:]
        imem_word = sub[:isa.IMEM_QUEUE_SHIFT]
        halted = []
        notifies = [icu.notify for icu in self._icus]
        notify = Signal()                 # NOTIFY issued by any queue this cycle (to every ICU)
        m.d.comb += notify.eq(_reduce_or(notifies, 1))
        for q, icu in zip(p.queues, self._icus):
            # an ICU's logic depends on the parameters and its queue's role (which instructions
            # the queue accepts), not on which slice of the kind it drives
            place(m, f"icu_{q.slice.name}_{q.role}", icu, (p.to_json(), q.slice.kind, q.role),
                  kind=f"icu_{q.slice.kind}_{q.role}")
            sl = self._slices[q.slice.name]
            wiring.connect(m, icu.issue, getattr(sl, f"instr_{q.role}"))
            sel = (imem_queue == q.index) & (imem_word < p.imem_words)
            m.d.comb += [
                icu.start.eq(regs.start),
                icu.notify_in.eq(notify),
                icu.host.w_en.eq(regs.imem_w_en & sel),
                icu.host.r_en.eq(regs.imem_r_en & sel),
                icu.host.addr.eq(imem_word),
                icu.host.w_data.eq(regs.w_data),
            ]
            ext_r_data.append(icu.host.r_data)
            errors.append(icu.error)
            halted.append(icu.done)

        m.d.comb += [
            regs.all_halted.eq(_reduce_and(halted)),
            regs.error_in.eq(_reduce_or(errors, ERROR_BITS)),
            regs.ext_r_data.eq(_reduce_or(ext_r_data, 32)),
        ]
        return m


def _reduce_or(values, width):
    acc = Const(0, width) if not values else values[0]
    for v in values[1:]:
        acc = acc | v
    return acc


def _reduce_and(values):
    acc = values[0]
    for v in values[1:]:
        acc = acc & v
    return acc


#: Smallest vector length (lanes x superlanes) whose Verilog marks its library modules
#: ``no_inline_module`` (:func:`keep_modules_apart`).
NO_INLINE_MIN_VL = 64


def keep_modules_apart(params) -> bool:
    """Whether the chip's Verilog marks its library modules ``no_inline_module`` for Verilator
    (:func:`openlpu.rtl.shared.mark_no_inline`); the one place this is decided.

    Yes from VL :data:`NO_INLINE_MIN_VL` (``base``): flattened, Verilator copies every
    instance's logic into one C++ model (95 MB of C++ for ``base``, over an hour of compiling
    on two cores, extrapolated); such Verilog also shares one SR column module
    (:class:`~openlpu.rtl.fabric.StreamFabric`), and the Verilator backend compiles it at a
    lower C++ optimisation level (``host/backends/verilator_sim.py``). No below it: a
    flattened model builds in a minute or two there and simulates faster (``default`` kept
    apart ran at 0.64 to 0.93 times the flattened speed, interleaved runs; see *Cost* in
    ``docs/architecture.md``). Either way the Verilog is the same circuit.
    """
    return params.vl >= NO_INLINE_MIN_VL


def generate_verilog(params) -> str:
    """Verilog of the whole chip for ``params`` (top module ``lpu_chip``, no source paths).

    Each distinct sub-design (a MEM slice, an SXM, an ICU of one role, a VXM superlane, a VXM
    lane of one ALU class) is converted once and instantiated by name
    (:mod:`openlpu.rtl.shared`): the text grows with the number of distinct modules, not with
    the number of slices and lanes. The modules are named ``lpu_<kind>_<n>``; the chip's own
    top module comes first.
    """
    return convert_chip(params)[0]


def convert_chip(params, *, no_inline: bool | None = None):
    """``(Verilog, library)``: :func:`generate_verilog`'s text and the
    :class:`~openlpu.rtl.shared.ModuleLibrary` it was made with (which modules, how many
    instances of each, the seconds spent converting each). ``no_inline`` overrides
    :func:`keep_modules_apart` (for measurements)."""
    if no_inline is None:
        no_inline = keep_modules_apart(params)
    with library("lpu", no_inline=no_inline) as lib:
        top = verilog.convert(LpuChip(params), name="lpu_chip", emit_src=False)
    return zero_init_memories(top) + lib.verilog(), lib


def mem_tile_memories(params) -> tuple:
    """Where each lane byte of every MEM tile is held in the chip's hierarchy (read-only, for
    simulator back doors such as the Verilator backend's bulk MEM load).

    One ``(slice, superlane, lane, instance, memory, byte, width, depth)`` per lane of every
    superlane of every MEM slice (``params.mem_slice_list`` order): ``instance`` is the name
    :class:`LpuChip` gives the slice's submodule (its floorplan name, a direct child of
    ``lpu_chip``), ``memory`` the tile memory inside it (:func:`openlpu.rtl.mem.
    tile_memory_name`: one per lane with ``mem_gather``, else one vector-wide memory per
    superlane), ``byte`` the lane's byte within an entry of that memory, ``width`` and ``depth``
    the memory's entry width in bits and number of entries (``mem_banks * mem_words``, entry
    ``bank * mem_words + word``). With ``mem_ecc`` the entries hold codewords instead (see
    :attr:`MemSlice.memories`): the byte positions do not apply.
    """
    from .mem import tile_memory_name
    p = params
    depth = p.mem_banks * p.mem_words
    out = []
    for s in p.mem_slice_list:
        for c in range(p.superlanes):
            for i in range(p.lanes):
                if p.mem_gather:
                    out.append((s, c, i, s.name, tile_memory_name(c, i), 0, 8, depth))
                else:
                    out.append((s, c, i, s.name, tile_memory_name(c), i, 8 * p.lanes, depth))
    return tuple(out)
