"""Host bus decoder and register block.

The register block terminates the chip's host bus (``docs/architecture.md``, Host interface):

* it decodes the region (``openlpu.isa.HostRegion``) of every access;
* it implements the registers of ``openlpu.isa.HostReg`` (ID, CONFIG_ID, CTRL, STATUS, CYCLES,
  ERRORS, ERROR_CYCLE, and with ``params.mem_ecc`` ECC_INJECT, ECC_CORRECTED,
  ECC_UNCORRECTABLE; without it those read as 0);
* it forwards MEM and IMEM accesses, with the region-relative address, to the chip (which fans
  them out to the targets) while the chip is not running; an access while running is ignored and
  sets ``ErrorFlag.HOST_WHILE_RUNNING``;
* it returns read data with ``r_valid`` exactly ``HOST_READ_LATENCY`` (2) cycles after ``r_en``,
  for every region.

Run control: a write of ``Ctrl.START`` to CTRL in host cycle ``h`` raises :attr:`start` in cycle
``h`` (combinationally; ``h + 1`` with ``host_start_reg``, below), clears CYCLES, ERRORS,
ERROR_CYCLE and DONE, and sets RUNNING from ``h + 1`` (cycle 0 of the run). RUNNING drops at
the end of the first cycle in which ``all_halted`` is high, which sets DONE. CYCLES counts the
cycles with RUNNING = 1, so after a run it holds ``max(cycle of each HALT) + 1``.

With ``params.icu_issue_reg`` and/or ``params.host_start_reg`` cycle 0 of the run is
``h + 1 + isa.start_delay``: the pipelined ICUs register the fetched and the issued word (2
cycles), and ``host_start_reg`` registers :attr:`start` itself, so the ICUs and the
stream-register clear see START in ``h + 1`` (1 cycle). RUNNING still rises at ``h + 1`` (host
MEM/IMEM access is refused from then on), but CYCLES does not count the ``start_delay`` cycles
before cycle 0, so CYCLES and ERROR_CYCLE have the same values as without the registers. The
error flags are registered too: they reach ERRORS one cycle after they are raised (with the cycle
count of the cycle they were raised in).

START while a run is going: the write restarts the count and clears ERRORS at once; the chip's
units drop the old run when they see START (``h``, or ``h + 1`` with ``host_start_reg``). Flags
that the slices and ICUs raise before cycle 0 of the new run belong to the old run and are
dropped (those of cycle ``h`` always, those of the ``start_delay`` cycles after it with the
registers), and ``all_halted`` cannot end the run before its cycle 0 (an ICU that has not seen
START yet still reports done). HOST_WHILE_RUNNING is recorded from ``h + 1`` on.
"""

from amaranth.hdl import C, Cat, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from openlpu import ecc, isa
from openlpu.isa import ErrorFlag, HostReg, HostRegion

from .common import ERROR_BITS, host_bus_signature

__all__ = ["HOST_SUB_BITS", "host_target_signature", "HostRegisters", "ecc_event_bits"]

#: Width of the region-relative part of a host address.
HOST_SUB_BITS = isa.HOST_REGION_SHIFT

if isa.HOST_READ_LATENCY != 2:  # pragma: no cover - the read pipeline below has two stages
    raise ImportError(f"the register block implements a host read latency of 2, "
                      f"not {isa.HOST_READ_LATENCY}")


def ecc_event_bits(params) -> int:
    """Width of the chip's per-cycle ECC event counts (``mem_ecc``): every codeword of every
    MEM tile of the chip at most once."""
    return (2 * params.mem_slices * params.superlanes * ecc.tile_codewords(params)).bit_length()


def host_target_signature(addr_bits: int) -> wiring.Signature:
    """A host access port of a memory target (MEM tile set, instruction memory).

    Seen from the register block (the target takes it as ``In``). ``w_en``/``r_en`` are
    one-cycle strobes with ``addr`` (target-relative) and ``w_data``; ``r_data`` is the read
    word in the cycle after ``r_en`` and must be 0 in every other cycle (the chip ORs the
    targets' read data together).
    """
    if addr_bits < 0:
        raise ValueError(f"addr_bits must be >= 0, not {addr_bits!r}")
    return wiring.Signature({
        "w_en":   Out(1),
        "r_en":   Out(1),
        "addr":   Out(addr_bits),
        "w_data": Out(32),
        "r_data": In(32),
    })


class HostRegisters(wiring.Component):
    """Host bus decoder and register block.

    Parameters
    ----------
    params : :class:`openlpu.params.LpuParams`
        Chip geometry (for ``CONFIG_ID``).

    Members
    -------
    host : ``In(host_bus_signature())``
        The chip's host bus.
    start : ``Out(1)``
        One-cycle START pulse to the ICUs and the stream-register clear: in the cycle CTRL.START
        is written (combinationally), or the cycle after with ``params.host_start_reg``.
    running : ``Out(1)``
        STATUS.RUNNING.
    done : ``Out(1)``
        STATUS.DONE.
    all_halted : ``In(1)``
        Every instruction queue has halted (or halts in this cycle).
    error_in : ``In(ERROR_BITS)``
        ``ErrorFlag`` bits raised by the slices and ICUs in this cycle.
    mem_w_en, mem_r_en, imem_w_en, imem_r_en : ``Out(1)``
        Host access to the MEM / IMEM region in this cycle (only while not running).
    sub_addr : ``Out(HOST_SUB_BITS)``
        Region-relative host address.
    w_data : ``Out(32)``
        Host write data.
    ext_r_data : ``In(32)``
        MEM / IMEM read data, one cycle after ``mem_r_en`` / ``imem_r_en`` (0 otherwise).
    ecc_flip : ``Out(ecc.host_word_code_bits(params))`` (``mem_ecc`` only)
        Stored bits of a MEM host word that the host write of this cycle flips: decoded from
        ECC_INJECT (``isa.ecc_inject_bits``); the register clears with the first host MEM write
        (``mem_w_en``) after it was set.
    ecc_corrected_in, ecc_uncorrectable_in : ``In(ecc_event_bits(params))`` (``mem_ecc`` only)
        Codewords the MEM slices read in this cycle with a corrected / uncorrectable error; added
        (saturating) to ECC_CORRECTED / ECC_UNCORRECTABLE along the path of ``error_in``
        (dropped in a START or CLEAR_ERRORS cycle, which clear the counters, and registered
        with the timing-closure registers).
    """

    def __init__(self, params):
        self._params = params
        members = {
            "host":       In(host_bus_signature()),
            "start":      Out(1),
            "running":    Out(1),
            "done":       Out(1),
            "all_halted": In(1),
            "error_in":   In(ERROR_BITS),
            "mem_w_en":   Out(1),
            "mem_r_en":   Out(1),
            "imem_w_en":  Out(1),
            "imem_r_en":  Out(1),
            "sub_addr":   Out(HOST_SUB_BITS),
            "w_data":     Out(32),
            "ext_r_data": In(32),
        }
        if params.mem_ecc:
            members["ecc_flip"] = Out(ecc.host_word_code_bits(params))
            members["ecc_corrected_in"] = In(ecc_event_bits(params))
            members["ecc_uncorrectable_in"] = In(ecc_event_bits(params))
        super().__init__(members)

    @property
    def params(self):
        return self._params

    def elaborate(self, platform):
        m = Module()
        host = self.host

        region = Signal(isa.HOST_ADDR_BITS - isa.HOST_REGION_SHIFT)
        m.d.comb += [
            region.eq(host.addr[isa.HOST_REGION_SHIFT:]),
            self.sub_addr.eq(host.addr[:isa.HOST_REGION_SHIFT]),
            self.w_data.eq(host.w_data),
        ]
        is_regs = region == HostRegion.REGS
        is_mem = region == HostRegion.MEM
        is_imem = region == HostRegion.IMEM
        reg_sel = self.sub_addr

        running = Signal()
        done = Signal()
        cycles = Signal(32)
        errors = Signal(ERROR_BITS)
        error_cycle = Signal(32)
        m.d.comb += [self.running.eq(running), self.done.eq(done)]

        # -- writes ------------------------------------------------------------------------
        ctrl_w = host.w_en & is_regs & (reg_sel == HostReg.CTRL)
        start = ctrl_w & (host.w_data & int(isa.Ctrl.START)).any()      # the host's START cycle
        clear_errors = ctrl_w & (host.w_data & int(isa.Ctrl.CLEAR_ERRORS)).any()

        target = is_mem | is_imem
        host_blocked = running & target & (host.w_en | host.r_en)
        m.d.comb += [
            self.mem_w_en.eq(host.w_en & is_mem & ~running),
            self.mem_r_en.eq(host.r_en & is_mem & ~running),
            self.imem_w_en.eq(host.w_en & is_imem & ~running),
            self.imem_r_en.eq(host.r_en & is_imem & ~running),
        ]

        # -- run control -------------------------------------------------------------------
        delay = isa.start_delay(self._params)
        delayed = [start]   # START, then its copies 1 .. start_delay cycles later
        for i in range(delay):
            d = Signal(name=f"start_d{i + 1}")
            m.d.sync += d.eq(delayed[-1])
            delayed.append(d)
        hold = Cat(*delayed[1:]).any() if delay else 0   # cycles before cycle 0: not counted
        # host_start_reg: the chip sees START one cycle late (start_d1 is that register)
        m.d.comb += self.start.eq(delayed[1] if self._params.host_start_reg else start)
        with m.If(start):
            m.d.sync += [running.eq(1), done.eq(0), cycles.eq(0)]
        with m.Elif(running):
            if delay:
                with m.If(~hold):
                    m.d.sync += cycles.eq(cycles + 1)
                with m.If(self.all_halted & ~hold):
                    m.d.sync += [running.eq(0), done.eq(1)]
            else:
                m.d.sync += cycles.eq(cycles + 1)
                with m.If(self.all_halted):
                    m.d.sync += [running.eq(0), done.eq(1)]

        # -- errors --------------------------------------------------------------------------
        new_errors = Signal(ERROR_BITS)
        err_cycle = cycles
        if delay:
            # pipelined: the flags of cycle c are registered and recorded in c + 1 with the
            # cycle count of c; flags of a START or CLEAR_ERRORS cycle are dropped, and so are
            # the slices' and ICUs' flags before cycle 0 of a run (the old run's, see above)
            err_cycle = Signal(32, name="cycles_r")
            m.d.sync += [
                new_errors.eq(Mux(start | clear_errors, 0, Mux(hold, 0, self.error_in)
                                  | Mux(host_blocked, int(ErrorFlag.HOST_WHILE_RUNNING), 0))),
                err_cycle.eq(cycles),
            ]
        else:
            m.d.comb += new_errors.eq(self.error_in
                                      | Mux(host_blocked, int(ErrorFlag.HOST_WHILE_RUNNING), 0))
        with m.If(start | clear_errors):
            m.d.sync += [errors.eq(0), error_cycle.eq(0)]
        with m.Elif(new_errors.any()):
            m.d.sync += errors.eq(errors | new_errors)
            with m.If(~errors.any()):
                m.d.sync += error_cycle.eq(err_cycle)

        # -- MEM ECC: fault injection and event counters ---------------------------------------
        ecc_regs = {}
        if self._params.mem_ecc:
            ecc_regs = self._ecc(m, start, clear_errors, delay, hold)

        # -- reads: stage 1 (register value or target select), stage 2 (output) ----------------
        reg_value = Signal(32)
        with m.Switch(reg_sel):
            with m.Case(HostReg.ID):
                m.d.comb += reg_value.eq(isa.CHIP_ID)
            with m.Case(HostReg.CONFIG_ID):
                m.d.comb += reg_value.eq(self._params.config_id)
            with m.Case(HostReg.STATUS):
                m.d.comb += reg_value.eq(Mux(running, int(isa.Status.RUNNING), 0)
                                         | Mux(done, int(isa.Status.DONE), 0))
            with m.Case(HostReg.CYCLES):
                m.d.comb += reg_value.eq(cycles)
            with m.Case(HostReg.ERRORS):
                m.d.comb += reg_value.eq(errors)
            with m.Case(HostReg.ERROR_CYCLE):
                m.d.comb += reg_value.eq(error_cycle)
            for reg, value in ecc_regs.items():
                with m.Case(reg):
                    m.d.comb += reg_value.eq(value)

        s1_valid = Signal()
        s1_data = Signal(32)
        s1_ext = Signal()
        m.d.sync += [
            s1_valid.eq(host.r_en),
            s1_data.eq(0),
            s1_ext.eq(0),
        ]
        with m.If(host.r_en & is_regs):
            m.d.sync += s1_data.eq(reg_value)
        with m.If(host.r_en & target & ~running):
            m.d.sync += s1_ext.eq(1)

        m.d.sync += [
            host.r_valid.eq(s1_valid),
            host.r_data.eq(s1_data | (self.ext_r_data & s1_ext.replicate(32))),
        ]
        return m

    def _ecc(self, m, start, clear_errors, delay, hold):
        """ECC_INJECT and the two saturating ECC counters; returns ``{HostReg: value}``."""
        host = self.host
        inject = Signal(isa.ECC_INJECT_SLOTS * isa.ECC_INJECT_SLOT_BITS)
        inject_w = host.w_en & (host.addr[isa.HOST_REGION_SHIFT:] == HostRegion.REGS) \
            & (self.sub_addr == HostReg.ECC_INJECT)
        with m.If(inject_w):
            m.d.sync += inject.eq(host.w_data[:len(inject)])
        with m.Elif(self.mem_w_en):                   # taken by this host MEM write
            m.d.sync += inject.eq(0)
        nbits = len(self.ecc_flip)
        flip = 0
        for slot in range(isa.ECC_INJECT_SLOTS):
            f = inject.word_select(slot, isa.ECC_INJECT_SLOT_BITS)
            index = f[:isa.ECC_INJECT_INDEX_BITS]
            one = (C(1, nbits) << index)[:nbits]      # an index past the host word: nothing
            flip = flip | Mux(f[isa.ECC_INJECT_INDEX_BITS], one, 0)
        m.d.comb += self.ecc_flip.eq(flip)

        out = {HostReg.ECC_INJECT: inject}
        top = (1 << isa.ECC_COUNTER_BITS) - 1
        for reg, inc_in in ((HostReg.ECC_CORRECTED, self.ecc_corrected_in),
                            (HostReg.ECC_UNCORRECTABLE, self.ecc_uncorrectable_in)):
            count = Signal(isa.ECC_COUNTER_BITS, name=reg.name.lower())
            inc = inc_in
            if delay:                                 # registered, like the error flags
                inc = Signal.like(inc_in, name=f"{reg.name.lower()}_in_r")
                m.d.sync += inc.eq(Mux(start | clear_errors | hold, 0, inc_in))
            total = count + inc
            with m.If(start | clear_errors):
                m.d.sync += count.eq(0)
            with m.Else():
                m.d.sync += count.eq(Mux(total > top, top, total))
            out[reg] = count
        return out
