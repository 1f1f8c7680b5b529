"""Instruction control unit (ICU): one instruction memory and the issue logic of one queue."""

from amaranth.hdl import Module, Mux, Signal, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from openlpu import isa
from openlpu.isa import ErrorFlag

from .common import ERROR_BITS, issue_signature
from .regs import host_target_signature

__all__ = ["InstructionControlUnit"]


class InstructionControlUnit(wiring.Component):
    """Instruction memory and issue logic of one instruction queue.

    Timing: when :attr:`start` is high in cycle ``h``, the program counter is set to 0 and word
    0 is read from the (synchronous-read) instruction memory; it is considered for issue in cycle
    ``h + 1``, which is cycle 0 of the run. The word after the current one is always being
    prefetched, so one instruction issues per cycle back to back.

    * ``NOP count`` issues nothing for ``count`` cycles, its own included.
    * ``HALT`` stops the queue: a HALT considered in cycle ``x`` makes :attr:`done` high from
      cycle ``x`` on.
    * Any other instruction is presented on :attr:`issue` (``valid`` and ``word``) in the cycle
      it issues; the slice executes it in superlane 0 in that cycle.
    * A word that does not decode (unknown opcode, bits set above its last field, a field below
      its minimum) or whose instruction is not allowed in this queue's role raises
      ``BAD_INSTRUCTION`` and is skipped (one cycle, nothing issued).
    * When the program counter reaches ``imem_words`` without a HALT, ``IMEM_OVERRUN`` is raised
      in the cycle the next word would issue and the queue stops.

    Parameters
    ----------
    params : :class:`openlpu.params.LpuParams`
        Uses ``imem_words``.
    queue_info : :class:`openlpu.params.QueueInfo`
        The queue; its ``role`` selects the allowed instructions (``openlpu.isa.allowed``).

    Members
    -------
    start : ``In(1)``
        Start pulse (from the register block).
    issue : ``Out(issue_signature())``
        The instruction issued this cycle.
    done : ``Out(1)``
        The queue is idle or halts in this cycle.
    error : ``Out(ERROR_BITS)``
        ``ErrorFlag`` bits raised this cycle.
    host : ``In(host_target_signature(addr_bits))``
        Host access to the instruction memory (word address); use only while not running.
    """

    def __init__(self, params, queue_info):
        if queue_info.role not in {r for roles in isa.QUEUE_ROLES.values() for r in roles}:
            raise ValueError(f"queue {queue_info.name!r} has unknown role {queue_info.role!r}")
        self._params = params
        self._queue = queue_info
        self._addr_bits = ceil_log2(params.imem_words)
        self._imem = Memory(shape=unsigned(isa.INSTR_BITS), depth=params.imem_words, init=[])
        self._imem_wr = self._imem.write_port()
        self._imem_rd = self._imem.read_port()
        super().__init__({
            "start": In(1),
            "issue": Out(issue_signature()),
            "done":  Out(1),
            "error": Out(ERROR_BITS),
            "host":  In(host_target_signature(self._addr_bits)),
        })

    @property
    def params(self):
        return self._params

    @property
    def queue_info(self):
        return self._queue

    @property
    def imem(self) -> Memory:
        """The instruction memory (for simulation back doors)."""
        return self._imem

    @property
    def allowed_instructions(self) -> tuple:
        """Instruction definitions this queue accepts."""
        return tuple(i for _, i in sorted(isa.BY_OPCODE.items())
                     if isa.allowed(i, self._queue.role))

    def elaborate(self, platform):
        m = Module()
        p = self._params
        n = p.imem_words
        m.submodules.imem = self._imem
        wr, rd = self._imem_wr, self._imem_rd

        active = Signal()                 # the queue is running
        pc = Signal(range(n + 1))         # address of the word on rd.data
        wait = Signal(isa.NOP_MAX.bit_length())   # idle cycles left of a NOP
        word = rd.data

        # -- decode through the ISA table's layouts -----------------------------------------
        nop = data.View(isa.layout("NOP"), word)
        ok_any = Signal()
        is_nop = Signal()
        is_halt = Signal()
        oks = []
        for idef in self.allowed_instructions:
            view = data.View(isa.layout(idef.mnemonic), word)
            ok = (view.opcode == idef.opcode) & (view["_pad"] == 0)
            for f in idef.fields:
                if f.min > 0:
                    ok &= view[f.name] >= f.min
            ok_sig = Signal(name=f"ok_{idef.mnemonic.lower()}")
            m.d.comb += ok_sig.eq(ok)
            oks.append(ok_sig)
            if idef.mnemonic == "NOP":
                m.d.comb += is_nop.eq(ok_sig)
            elif idef.mnemonic == "HALT":
                m.d.comb += is_halt.eq(ok_sig)
        m.d.comb += ok_any.eq(_any(oks))   # NOP and HALT are allowed in every queue

        go = Signal()                     # the word on rd.data is considered this cycle
        overrun = Signal()
        advance = Signal()
        halting = Signal()
        m.d.comb += [
            go.eq(active & (wait == 0)),
            overrun.eq(pc == n),
            halting.eq(go & (overrun | is_halt)),
            advance.eq(go & ~overrun & ~is_halt),
            self.issue.valid.eq(advance & ok_any & ~is_nop),
            self.issue.word.eq(word),
            self.done.eq(~active | halting),
            self.error.eq(Mux(go & overrun, int(ErrorFlag.IMEM_OVERRUN), 0)
                          | Mux(advance & ~ok_any, int(ErrorFlag.BAD_INSTRUCTION), 0)),
        ]

        with m.If(self.start):
            m.d.sync += [active.eq(1), pc.eq(0), wait.eq(0)]
        with m.Elif(halting):
            m.d.sync += active.eq(0)
        with m.Elif(advance):
            m.d.sync += pc.eq(pc + 1)
            with m.If(is_nop):
                m.d.sync += wait.eq(nop.count - 1)
        with m.Elif(wait != 0):
            m.d.sync += wait.eq(wait - 1)

        # -- instruction memory ports: prefetch pc + 1, or the host ----------------------------
        next_addr = pc + 1
        if n & (n - 1):                   # not a power of two: keep the address in range
            next_addr = Mux(pc + 1 < n, pc + 1, 0)
        m.d.comb += [
            rd.en.eq(self.start | advance | self.host.r_en),
            rd.addr.eq(Mux(self.start, 0, Mux(advance, next_addr, self.host.addr))),
            wr.en.eq(self.host.w_en),
            wr.addr.eq(self.host.addr),
            wr.data.eq(self.host.w_data),
        ]
        host_r_pending = Signal()
        m.d.sync += host_r_pending.eq(self.host.r_en & ~self.start)
        m.d.comb += self.host.r_data.eq(Mux(host_r_pending, rd.data, 0))
        return m


def _any(signals):
    acc = signals[0]
    for s in signals[1:]:
        acc = acc | s
    return acc
