"""Instruction control unit (ICU): one instruction memory and the issue logic of one queue."""

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from openlpu import isa
from openlpu.isa import ErrorFlag

from .common import ERROR_BITS, issue_signature
from .regs import host_target_signature
from .sweep import CONFIG_SLICE_KINDS, config_word

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
    * ``REPEAT count, interval, stride`` re-issues X, the last non-control instruction this
      queue issued in this run (none: ``BAD_INSTRUCTION``, the REPEAT is skipped). With the
      REPEAT considered in cycle ``r``, copy ``k`` (1..count) issues at ``r - 1 + k*interval``
      with X's ``isa.REPEAT_FIELD`` field increased by ``k*stride`` (stride sign-extended, sum
      modulo the field width); the next word is considered at ``r + count*interval``.
    * ``SYNC`` parks the queue; it is released by :attr:`notify_in` (a NOTIFY of any queue) in
      the SYNC's own cycle or later, and considers its next word in the cycle after that.
    * ``NOTIFY`` raises :attr:`notify` in its cycle (the chip ORs every queue's into
      :attr:`notify_in`, combinationally).
    * ``CONFIG mask``: for queues of slices in ``rtl.sweep.CONFIG_SLICE_KINDS`` it is presented
      on :attr:`issue` like an instruction (the slice's :class:`~openlpu.rtl.sweep.InstructionSweep`
      applies it), and ``CONFIG`` with every bit set is presented in the START cycle so every run
      starts with all superlanes enabled. Other queues treat it as a one-cycle no-op.
    * A word that does not decode (unknown opcode, bits set above its last field, a field below
      its minimum) or whose instruction is not allowed in this queue's role raises
      ``BAD_INSTRUCTION`` and is skipped (one cycle, nothing issued).
    * When the program counter reaches ``imem_words`` without a HALT, ``IMEM_OVERRUN`` is raised
      in the cycle the next word would issue and the queue stops.

    Pipelined (``params.icu_issue_reg``): the decode starts from a register, not from the
    memory's read port, and the issue port is a register. A fetch stage (:meth:`_fetch`)
    reads the memory ahead into a 3-word register queue; word 0 heads it two cycles after
    :attr:`start`, so the issue logic's cycle 0 is ``h + 2`` (the rules above hold with that
    frame: ``start`` acts in ``h + 1``). :attr:`issue`, :attr:`done` and :attr:`error` are
    registered, so the slices and the register block see cycle ``x`` of the run in
    ``h + 3 + x`` (``isa.start_delay`` = 2 more than without the registers); :attr:`notify` and
    :attr:`notify_in` stay combinational in the issue logic's frame, which is the same for every
    queue. A REPEAT's copies are computed with one adder from registers (same values).

    Parameters
    ----------
    params : :class:`openlpu.params.LpuParams`
        Uses ``imem_words`` and ``icu_issue_reg``.
    queue_info : :class:`openlpu.params.QueueInfo`
        The queue; its ``role`` selects the allowed instructions (``openlpu.isa.allowed``).

    Members
    -------
    start : ``In(1)``
        Start pulse (from the register block).
    issue : ``Out(issue_signature())``
        The instruction issued this cycle.
    notify : ``Out(1)``
        A NOTIFY is issued this cycle.
    notify_in : ``In(1)``
        Some queue issues a NOTIFY this cycle (releases a parked SYNC).
    done : ``Out(1)``
        The queue is idle or halts in this cycle (a parked queue is not done).
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
        self._forward_config = queue_info.slice.kind in CONFIG_SLICE_KINDS
        self._addr_bits = ceil_log2(params.imem_words)
        self._imem = Memory(shape=unsigned(isa.INSTR_BITS), depth=params.imem_words,
                            init=[])
        self._imem_wr = self._imem.write_port()
        self._imem_rd = self._imem.read_port()
        super().__init__({
            "start": In(1),
            "issue": Out(issue_signature()),
            "notify": Out(1),
            "notify_in": In(1),
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
                     if isa.available(i, self._queue.role, self._params))

    def elaborate(self, platform):
        m = Module()
        p = self._params
        n = p.imem_words
        m.submodules.imem = self._imem
        wr, rd = self._imem_wr, self._imem_rd

        active = Signal()                 # the queue is running
        pc = Signal(range(n + 1))         # address of the word on rd.data
        wait = Signal(isa.NOP_MAX.bit_length())   # idle cycles left of a NOP
        parked = Signal()                 # waiting for a NOTIFY after a SYNC
        pipe = p.icu_issue_reg
        if pipe:
            # fetch stage: a 3-word queue of registers in front of the decode (rtl docstring)
            if isa.start_delay(p) - int(p.host_start_reg) != 2:  # pragma: no cover - the 2 below
                raise RuntimeError(f"isa.start_delay {isa.start_delay(p)} does not match the "
                                   f"pipelined ICU (2)")
            start = Signal(name="start_d")    # the issue logic's START: one cycle after start
            m.d.sync += start.eq(self.start)
            fifo = [Signal(isa.INSTR_BITS, name=f"fetch_q{i}", reset_less=True) for i in range(3)]
            f_count = Signal(range(4))        # words in the queue
            f_infl = Signal()                 # a read issued last cycle: its word is on rd.data
            f_pc = Signal(range(n + 1))       # next address to fetch
            word = fifo[0]
        else:
            start = self.start
            word = rd.data

        # -- decode through the ISA table's layouts -----------------------------------------
        nop = data.View(isa.layout("NOP"), word)
        rep = data.View(isa.layout("REPEAT"), word)
        ok_any = Signal()
        is_ctl = {}                       # control mnemonic -> decoded-and-valid signal
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
            if idef.mnemonic in isa.CONTROL_MNEMONICS:
                is_ctl[idef.mnemonic] = ok_sig
        missing = set(isa.CONTROL_MNEMONICS) - set(is_ctl) - isa.unavailable(p)
        if missing:  # pragma: no cover - the ISA table allows control instructions everywhere
            raise ValueError(f"queue {self._queue.name}: control instruction(s) "
                             f"{', '.join(sorted(missing))} not allowed in role {self._queue.role}")
        is_control = _any(list(is_ctl.values()))
        m.d.comb += ok_any.eq(_any(oks))

        # -- REPEAT state (params.icu_repeat) ---------------------------------------------------
        has_repeat = "REPEAT" in is_ctl
        go = Signal()                     # the word on rd.data is considered this cycle
        overrun = Signal()
        advance = Signal()
        halting = Signal()
        good = Signal()                   # a valid instruction is taken this cycle
        rep_active = Signal()             # copies of a REPEAT are being issued (0 without REPEAT)
        rep_fire = Signal()               # a copy issues this cycle
        m.d.comb += [
            go.eq(active & (wait == 0) & ~rep_active & ~parked),
            overrun.eq(pc == n),
            halting.eq(go & (overrun | is_ctl["HALT"])),
            advance.eq(go & ~overrun & ~is_ctl["HALT"]),
            good.eq(advance & ok_any),
        ]
        normal = good & ~is_control
        bad_repeat = Signal()
        eff_word = Signal(isa.INSTR_BITS)
        if has_repeat:
            self._repeat_engine(m, word, rep, is_ctl["REPEAT"], good, normal, start,
                                rep_active, rep_fire, bad_repeat, eff_word)

        # -- SYNC / NOTIFY ------------------------------------------------------------------------
        m.d.comb += self.notify.eq(good & is_ctl["NOTIFY"])
        with m.If(good & is_ctl["SYNC"] & ~self.notify_in):
            m.d.sync += parked.eq(1)
        with m.Elif(self.notify_in):
            m.d.sync += parked.eq(0)

        # -- issue ----------------------------------------------------------------------------
        fwd_config = self._forward_config
        config_issue = (good & is_ctl["CONFIG"]) if fwd_config else 0
        start_config = start if fwd_config else 0
        if pipe:   # issue, done and errors are registered: the slices see them one cycle later
            issue_valid = Signal(name="issue_valid_next")
            issue_word = Signal(isa.INSTR_BITS, name="issue_word_next")
            done, error = Signal(name="done_next"), Signal(ERROR_BITS, name="error_next")
            done_r = Signal(name="done_r")
            m.d.sync += [self.issue.valid.eq(issue_valid), self.issue.word.eq(issue_word),
                         done_r.eq(done), self.error.eq(error)]
            m.d.comb += self.done.eq(done_r & ~start)
            run_valid = Mux(self.start, 0, normal | rep_fire | config_issue)  # restart: cut
        else:
            issue_valid, issue_word = self.issue.valid, self.issue.word
            done, error = self.done, self.error
            run_valid = normal | rep_fire | config_issue
        m.d.comb += [
            issue_valid.eq(Mux(start, start_config, run_valid)),
            issue_word.eq(Mux(start, config_word(-1) if fwd_config else 0,
                              Mux(rep_fire, eff_word, word) if has_repeat else word)),
            done.eq((~active & ~start if pipe else ~active) | halting),
            error.eq(Mux(go & overrun, int(ErrorFlag.IMEM_OVERRUN), 0)
                     | Mux((advance & ~ok_any) | bad_repeat,
                           int(ErrorFlag.BAD_INSTRUCTION), 0)),
        ]

        if pipe:
            with m.If(self.start):        # a START while running stops the old run at once
                m.d.sync += active.eq(0)
        with m.If(start):
            m.d.sync += [active.eq(1), pc.eq(0), wait.eq(0), parked.eq(0)]
        with m.Elif(halting):
            m.d.sync += active.eq(0)
        with m.Elif(advance):
            m.d.sync += pc.eq(pc + 1)
            with m.If(is_ctl["NOP"]):
                m.d.sync += wait.eq(nop.count - 1)
        with m.Elif(wait != 0):
            m.d.sync += wait.eq(wait - 1)

        # -- instruction memory ports: prefetch pc + 1, or the host ----------------------------
        if pipe:
            self._fetch(m, rd, fifo, f_count, f_infl, f_pc, active | start, advance)
        else:
            next_addr = pc + 1
            if n & (n - 1):               # not a power of two: keep the address in range
                next_addr = Mux(pc + 1 < n, pc + 1, 0)
            m.d.comb += [
                rd.en.eq(self.start | advance | self.host.r_en),
                rd.addr.eq(Mux(self.start, 0, Mux(advance, next_addr, self.host.addr))),
            ]
        m.d.comb += [
            wr.en.eq(self.host.w_en),
            wr.addr.eq(self.host.addr),
            wr.data.eq(self.host.w_data),
        ]
        host_r_pending = Signal()
        m.d.sync += host_r_pending.eq(self.host.r_en & ~self.start)
        m.d.comb += self.host.r_data.eq(Mux(host_r_pending, rd.data, 0))
        return m

    def _fetch(self, m, rd, fifo, count, infl, fpc, running, pop):
        """Pipelined fetch: read the instruction memory ahead into the register queue ``fifo``.

        START (cycle ``h``) reads word 0 and empties the queue; from then on a word is read
        whenever the queue, counting the read in flight, has room and ``fpc < imem_words``.
        A word read in cycle ``c`` is on ``rd.data`` in ``c + 1`` and enters the queue at the
        end of ``c + 1``, so word 0 heads it in ``h + 2`` (the issue logic's cycle 0), and
        with three entries the decode never waits for a word while it takes one per cycle.
        ``pop``: the issue logic takes the head this cycle.
        """
        n = self._params.imem_words
        fetch = Signal(name="fetch")
        push = Signal(name="fetch_push")
        m.d.comb += [
            fetch.eq(running & ~self.start & (count + infl < len(fifo)) & (fpc < n)),
            push.eq(infl & ~self.start),
            rd.en.eq(self.start | fetch | self.host.r_en),
            rd.addr.eq(Mux(self.start, 0, Mux(fetch, fpc, self.host.addr))),
        ]
        w_at = Mux(pop, count - 1, count)           # where a pushed word goes
        for i, q in enumerate(fifo):
            nxt = fifo[i + 1] if i + 1 < len(fifo) else q
            with m.If(push & (w_at == i)):
                m.d.sync += q.eq(rd.data)
            with m.Elif(pop):
                m.d.sync += q.eq(nxt)
        with m.If(self.start):
            m.d.sync += [count.eq(0), infl.eq(1), fpc.eq(1)]
        with m.Else():
            m.d.sync += [count.eq(count + push - pop), infl.eq(fetch)]
            with m.If(fetch):
                m.d.sync += fpc.eq(fpc + 1)

    def _repeat_engine(self, m, word, rep, is_repeat, good, normal, start,
                       rep_active, rep_fire, bad_repeat, eff_word):
        """REPEAT's copy engine: drives ``rep_active``, ``rep_fire``, ``bad_repeat`` and the
        copy ``eff_word`` (see the class docstring for the timing)."""
        pipe = self._params.icu_issue_reg
        last = Signal(isa.INSTR_BITS)     # the last non-control instruction issued (REPEAT's X)
        has_last = Signal()
        rep_word = Signal(isa.INSTR_BITS)   # the next copy
        rep_left = Signal.like(rep.count)   # copies left (the next one included)
        rep_ph = Signal.like(rep.interval)  # cycles until the next copy (0: this cycle)
        rep_interval = Signal.like(rep.interval)
        rep_stride = Signal(signed(len(rep.stride)))
        rep_start = Signal()
        m.d.comb += [
            rep_start.eq(good & is_repeat & has_last),
            bad_repeat.eq(good & is_repeat & ~has_last),
        ]

        # the copy engine: in REPEAT's own cycle it runs on the REPEAT's fields
        eff_ph = Mux(rep_active, rep_ph, rep.interval - 1)
        eff_left = Mux(rep_active, rep_left, rep.count)
        eff_stride = Mux(rep_active, rep_stride, rep.stride.as_signed())
        m.d.comb += eff_word.eq(Mux(rep_active, rep_word, self._bump(m, last, rep.stride.as_signed())))
        rep_on = rep_active | rep_start
        if pipe:   # same values, shorter paths: no subtraction before the compare, one adder
            m.d.comb += rep_fire.eq(rep_on & Mux(rep_active, rep_ph == 0, rep.interval == 1))
            fire_word = Mux(rep_active, self._bump(m, rep_word, rep_stride),
                            self._bump(m, last, rep.stride.as_signed() << 1))
        else:
            m.d.comb += rep_fire.eq(rep_on & (eff_ph == 0))

        with m.If(rep_on):
            with m.If(rep_fire):
                m.d.sync += [
                    rep_active.eq(eff_left != 1),
                    rep_left.eq(eff_left - 1),
                    rep_ph.eq(Mux(rep_active, rep_interval, rep.interval) - 1),
                    rep_word.eq(fire_word if pipe else self._bump(m, eff_word, eff_stride)),
                ]
            with m.Else():
                m.d.sync += [
                    rep_active.eq(1),
                    rep_left.eq(eff_left),
                    rep_ph.eq(eff_ph - 1),
                    rep_word.eq(eff_word),
                ]
            with m.If(rep_start):
                m.d.sync += [rep_interval.eq(rep.interval), rep_stride.eq(rep.stride.as_signed())]
        with m.If(normal):
            m.d.sync += [last.eq(word), has_last.eq(1)]
        with m.If(start):
            m.d.sync += [rep_active.eq(0), has_last.eq(0)]

    def _bump(self, m, word, stride):
        """``word`` with its REPEAT field (``isa.REPEAT_FIELD``) increased by ``stride``."""
        out = Signal(isa.INSTR_BITS)
        m.d.comb += out.eq(word)
        opcode = word[:isa.OPCODE_BITS]
        for idef in self.allowed_instructions:
            fld = isa.REPEAT_FIELD.get(idef.mnemonic)
            if fld is None:
                continue
            pos = isa.OPCODE_BITS
            for f in idef.fields:
                if f.name == fld:
                    break
                pos += f.bits
            with m.If(opcode == idef.opcode):
                m.d.comb += out[pos:pos + f.bits].eq(word[pos:pos + f.bits] + stride)
        return out


def _any(signals):
    acc = signals[0]
    for s in signals[1:]:
        acc = acc | s
    return acc
