"""Host bridge: a byte-stream protocol engine that masters the chip's host bus.

The frame format lives in :mod:`openlpu.bridge_proto` (shared with the host driver) and is
described in ``docs/fpga.md``.
"""

from amaranth.hdl import Cat, Const, Module, ResetInserter, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from openlpu import bridge_proto as proto
from openlpu import isa
from openlpu.hostmap import reg_addr

from .common import host_bus_signature

__all__ = ["HostBridge", "crc8_next", "attach_chip"]

# the FSM below sends a response as status, SEQ, then the data words or the NAK reason, then the
# CRC, and parses the request header at the REQ_* offsets of bridge_proto
assert (proto.RESP_SEQ, proto.RESP_DATA, proto.NAK_LENGTH) == (1, 2, 4)
assert proto.HEADER_BYTES == proto.REQ_ADDR + proto.ADDR_BYTES
assert sorted((proto.REQ_CMD, proto.REQ_SEQ, proto.REQ_COUNT)) == list(range(1, proto.REQ_ADDR))


def crc8_next(crc, byte):
    """Combinational CRC-8 update (same polynomial as :func:`openlpu.bridge_proto.crc8`).

    The update is linear in ``crc ^ byte``, so each output bit is an XOR of input bits; the
    matrix comes from :func:`openlpu.bridge_proto.crc8_update` on the basis vectors.
    """
    x = crc ^ byte
    cols = [proto.crc8_update(0, 1 << i) for i in range(8)]
    bits = []
    for j in range(8):
        terms = [x[i] for i in range(8) if cols[i] >> j & 1]
        acc = terms[0]
        for t in terms[1:]:
            acc = acc ^ t
        bits.append(acc)
    return Cat(*bits)


class HostBridge(wiring.Component):
    """Protocol engine between a byte stream (e.g. a UART) and the host bus.

    A request is received one byte per cycle at most, its CRC is checked, and only then is it
    executed on the host bus: a ``WRITE`` issues one write every 2 cycles from its frame
    buffer; a ``READ`` issues one read at a time and waits ``HOST_READ_LATENCY`` cycles for
    ``r_valid``; a ``WAIT`` reads ``STATUS`` until ``DONE`` is set or its cycle limit passes;
    a ``RESET`` raises :attr:`chip_reset` for one cycle (:func:`attach_chip` makes it the
    chip's synchronous reset) and is answered ``ACK`` the cycle after.
    The response (status, the request's ``SEQ``, data or reason, CRC) is then sent on ``o``.
    A frame that stops arriving for ``timeout`` cycles is dropped and answered with
    ``NAK TIMEOUT``. Bytes outside a frame that are not ``SOF`` are ignored.

    Retries: the bridge keeps the ``SEQ`` and ``CRC`` byte of the last request it executed
    (17 flip-flops). A ``WRITE`` with both equal is the host's retry of a request whose answer
    was lost: it is answered ``ACK`` again without touching the bus, so a write is applied
    once however often it is retried. ``READ`` and ``WAIT`` are executed again.

    Parameters
    ----------
    timeout : int
        Inter-byte timeout in clock cycles (choose a few byte times of the link).
    max_words : int
        Words per frame (the frame buffer depth); :data:`openlpu.bridge_proto.MAX_WORDS`.
    bus_reg : bool
        Register the bus outputs (``addr``, ``w_data``, ``w_en``, ``r_en``): the chip sees an
        access one cycle after the state that issues it, so the frame buffer's block RAM
        output and the address adder do not reach the chip's host decode in the same cycle.
        The protocol is unchanged (the bridge waits for ``r_valid``, which then comes
        ``HOST_READ_LATENCY + 1`` cycles after the issuing state). Default ``False``;
        ``synth.platforms.BoardTop`` switches it on for chips with ``host_start_reg``.

    Members
    -------
    i : ``In(stream.Signature(8))``
        Request bytes.
    o : ``Out(stream.Signature(8))``
        Response bytes.
    bus : ``Out(host_bus_signature())``
        The host bus (connect to the chip's ``host``).
    busy : ``Out(1)``
        High while a request is being received, executed or answered.
    chip_reset : ``Out(1)``
        High for the one cycle in which a ``RESET`` request is executed.
    """

    def __init__(self, *, timeout: int = 100_000, max_words: int = proto.MAX_WORDS,
                 bus_reg: bool = False):
        if not isinstance(timeout, int) or timeout < 16:
            raise ValueError(f"timeout must be an integer >= 16 cycles, not {timeout!r}")
        if not isinstance(max_words, int) or not 1 <= max_words <= proto.MAX_WORDS:
            raise ValueError(f"max_words must be in [1, {proto.MAX_WORDS}], not {max_words!r}")
        if not isinstance(bus_reg, bool):
            raise ValueError(f"bus_reg must be True or False, not {bus_reg!r}")
        self._timeout = timeout
        self._max_words = max_words
        self._bus_reg = bus_reg
        super().__init__({
            "i":    In(stream.Signature(8)),
            "o":    Out(stream.Signature(8)),
            "bus":  Out(host_bus_signature()),
            "busy": Out(1),
            "chip_reset": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        nmax = self._max_words
        lat = isa.HOST_READ_LATENCY

        m.submodules.buf = buf = Memory(shape=32, depth=nmax, init=[])
        wr = buf.write_port()
        rd = buf.read_port()

        # -- request state ---------------------------------------------------------------
        rx_crc = Signal(8)
        hdr_idx = Signal(range(proto.HEADER_BYTES))
        cmd = Signal(8)
        seq = Signal(8)                         # the request's sequence number
        count = Signal(8)                       # words - 1
        addr = Signal(isa.HOST_ADDR_BITS)
        word = Signal(32)                       # payload word being assembled
        byte_idx = Signal(2)
        pay_words = Signal(9)                   # payload words received so far
        pay_total = Signal(9)                   # payload words expected (COUNT + 1 <= 256)
        timer = Signal(range(self._timeout + 1))

        # -- execution / response state --------------------------------------------------
        k = Signal(range(nmax + 1))             # word index
        nwords = Signal(range(nmax + 1))        # words to execute / send
        wait_limit = Signal(32)
        wait_cycles = Signal(32)
        guard = Signal(range(4 * lat + 8))
        resp_status = Signal(8)
        resp_reason = Signal(8)
        resp_words = Signal(range(nmax + 1))
        tx_crc = Signal(8)
        tx_word = Signal(32)
        tx_byte = Signal(2)
        # the last executed request (retry detection): its SEQ and CRC
        last_seq = Signal(8)
        last_crc = Signal(8)
        last_valid = Signal()

        is_write = cmd == proto.Cmd.WRITE
        is_read = cmd == proto.Cmd.READ
        is_wait = cmd == proto.Cmd.WAIT
        is_reset = cmd == proto.Cmd.RESET
        cmd_ok = is_write | is_read | is_wait | is_reset
        count_ok = (count < nmax) & (~(is_wait | is_reset) | (count == 0))

        in_byte = self.i.payload
        got = self.i.valid & self.i.ready

        m.d.comb += [wr.data.eq(0), wr.en.eq(0), rd.addr.eq(k)]

        # the host bus outputs: the FSM below drives these in the issuing state (bus_reg:
        # through a register)
        bus_addr = Signal(isa.HOST_ADDR_BITS)
        bus_w_data = Signal(32)
        bus_w_en = Signal()
        bus_r_en = Signal()
        out = m.d.sync if self._bus_reg else m.d.comb
        out += [self.bus.addr.eq(bus_addr), self.bus.w_data.eq(bus_w_data),
                self.bus.w_en.eq(bus_w_en), self.bus.r_en.eq(bus_r_en)]

        def nak(reason):
            return [resp_status.eq(proto.Resp.NAK), resp_reason.eq(reason), resp_words.eq(0),
                    tx_crc.eq(0)]

        def ack(words):
            return [resp_status.eq(proto.Resp.ACK), resp_words.eq(words), tx_crc.eq(0),
                    k.eq(0)]

        def rx_timer(state_m):
            # inter-byte timeout inside a frame
            with state_m.If(got):
                m.d.sync += timer.eq(0)
            with state_m.Elif(timer == self._timeout):
                m.d.sync += nak(proto.NakReason.TIMEOUT)
                m.next = "TX_STATUS"
            with state_m.Else():
                m.d.sync += timer.eq(timer + 1)

        with m.FSM() as fsm:
            with m.State("IDLE"):
                m.d.comb += self.i.ready.eq(1)
                m.d.sync += [timer.eq(0), hdr_idx.eq(0)]
                with m.If(got & (in_byte == proto.SOF)):
                    m.d.sync += rx_crc.eq(crc8_next(Const(0, 8), in_byte))
                    m.next = "HEADER"

            with m.State("HEADER"):
                m.d.comb += self.i.ready.eq(1)
                rx_timer(m)
                with m.If(got):
                    m.d.sync += [rx_crc.eq(crc8_next(rx_crc, in_byte)), hdr_idx.eq(hdr_idx + 1)]
                    with m.Switch(hdr_idx):            # byte offset - 1 (after SOF)
                        with m.Case(proto.REQ_CMD - 1):
                            m.d.sync += cmd.eq(in_byte)
                        with m.Case(proto.REQ_SEQ - 1):
                            m.d.sync += seq.eq(in_byte)
                        with m.Case(proto.REQ_COUNT - 1):
                            m.d.sync += count.eq(in_byte)
                        for b in range(proto.ADDR_BYTES):
                            with m.Case(proto.REQ_ADDR - 1 + b):
                                m.d.sync += addr.word_select(b, 8).eq(in_byte)
                    with m.If(hdr_idx == proto.HEADER_BYTES - 2):
                        # the payload length follows from CMD and COUNT; a COUNT too large
                        # for the buffer still consumes its bytes (NAK BAD_COUNT afterwards)
                        m.d.sync += [pay_words.eq(0), byte_idx.eq(0)]
                        with m.If(is_write):
                            m.d.sync += pay_total.eq(count + 1)
                        with m.Elif(is_wait):
                            m.d.sync += pay_total.eq(1)
                        with m.Else():
                            m.d.sync += pay_total.eq(0)
                        m.next = "PAYLOAD"

            with m.State("PAYLOAD"):
                with m.If(pay_words == pay_total):
                    m.next = "CRC"
                with m.Else():
                    m.d.comb += self.i.ready.eq(1)
                    rx_timer(m)
                    with m.If(got):
                        m.d.sync += [rx_crc.eq(crc8_next(rx_crc, in_byte)),
                                     word.eq(Cat(word[8:], in_byte)), byte_idx.eq(byte_idx + 1)]
                        with m.If(byte_idx == 3):
                            m.d.sync += pay_words.eq(pay_words + 1)
                            with m.If(pay_words < nmax):
                                m.d.comb += [wr.addr.eq(pay_words),
                                             wr.data.eq(Cat(word[8:], in_byte)), wr.en.eq(1)]

            with m.State("CRC"):
                m.d.comb += self.i.ready.eq(1)
                rx_timer(m)
                with m.If(got):
                    m.d.sync += [k.eq(0), nwords.eq(count + 1), wait_cycles.eq(0),
                                 wait_limit.eq(word), guard.eq(0)]
                    with m.If(in_byte != rx_crc):
                        m.d.sync += nak(proto.NakReason.BAD_CRC)
                        m.next = "TX_STATUS"
                    with m.Elif(~cmd_ok):
                        m.d.sync += nak(proto.NakReason.BAD_CMD)
                        m.next = "TX_STATUS"
                    with m.Elif(~count_ok):
                        m.d.sync += nak(proto.NakReason.BAD_COUNT)
                        m.next = "TX_STATUS"
                    with m.Elif(is_write & last_valid & (seq == last_seq) & (in_byte == last_crc)):
                        m.d.sync += ack(0)              # a retry: answer again, do not write
                        m.next = "TX_STATUS"
                    with m.Else():
                        m.d.sync += [last_seq.eq(seq), last_crc.eq(in_byte), last_valid.eq(1)]
                        with m.If(is_write):
                            m.next = "WR_FETCH"
                        with m.Elif(is_read):
                            m.next = "RD_ISSUE"
                        with m.Elif(is_reset):
                            m.next = "CHIP_RESET"
                        with m.Else():
                            m.next = "WAIT_ISSUE"

            # -- RESET: the chip's reset for one cycle, then ACK ---------------------------
            with m.State("CHIP_RESET"):
                m.d.comb += self.chip_reset.eq(1)
                m.d.sync += ack(0)
                m.next = "TX_STATUS"

            # -- WRITE: one bus write every 2 cycles from the frame buffer ----------------
            with m.State("WR_FETCH"):
                with m.If(k == nwords):
                    m.d.sync += ack(0)
                    m.next = "TX_STATUS"
                with m.Else():
                    m.next = "WR_ISSUE"
            with m.State("WR_ISSUE"):
                m.d.comb += [bus_addr.eq(addr + k), bus_w_data.eq(rd.data), bus_w_en.eq(1)]
                m.d.sync += k.eq(k + 1)
                m.next = "WR_FETCH"

            # -- READ: one bus read at a time into the frame buffer -----------------------
            with m.State("RD_ISSUE"):
                with m.If(k == nwords):
                    m.d.sync += ack(nwords)
                    m.next = "TX_STATUS"
                with m.Else():
                    m.d.comb += [bus_addr.eq(addr + k), bus_r_en.eq(1)]
                    m.d.sync += guard.eq(0)
                    m.next = "RD_WAIT"
            with m.State("RD_WAIT"):
                m.d.sync += guard.eq(guard + 1)
                with m.If(self.bus.r_valid):
                    m.d.comb += [wr.addr.eq(k), wr.data.eq(self.bus.r_data), wr.en.eq(1)]
                    m.d.sync += k.eq(k + 1)
                    m.next = "RD_ISSUE"
                with m.Elif(guard == 4 * lat + 7):
                    m.d.sync += nak(proto.NakReason.BUS)
                    m.next = "TX_STATUS"

            # -- WAIT: poll STATUS until DONE or the cycle limit --------------------------
            with m.State("WAIT_ISSUE"):
                m.d.comb += [bus_addr.eq(reg_addr(isa.HostReg.STATUS)), bus_r_en.eq(1)]
                m.d.sync += [guard.eq(0), wait_cycles.eq(wait_cycles + 1)]
                m.next = "WAIT_DATA"
            with m.State("WAIT_DATA"):
                m.d.sync += [guard.eq(guard + 1), wait_cycles.eq(wait_cycles + 1)]
                with m.If(self.bus.r_valid):
                    with m.If(self.bus.r_data & isa.Status.DONE):
                        m.d.comb += [wr.addr.eq(0), wr.data.eq(self.bus.r_data), wr.en.eq(1)]
                        m.d.sync += ack(1)
                        m.next = "TX_STATUS"
                    with m.Elif(wait_cycles >= wait_limit):
                        m.d.sync += nak(proto.NakReason.RUN_TIMEOUT)
                        m.next = "TX_STATUS"
                    with m.Else():
                        m.next = "WAIT_ISSUE"
                with m.Elif(guard == 4 * lat + 7):
                    m.d.sync += nak(proto.NakReason.BUS)
                    m.next = "TX_STATUS"

            # -- response -------------------------------------------------------------------
            with m.State("TX_STATUS"):
                m.d.comb += [self.o.valid.eq(1), self.o.payload.eq(resp_status)]
                with m.If(self.o.ready):
                    m.d.sync += [tx_crc.eq(crc8_next(tx_crc, resp_status)), k.eq(0)]
                    m.next = "TX_SEQ"
            with m.State("TX_SEQ"):              # RESP_SEQ: the request's sequence number
                m.d.comb += [self.o.valid.eq(1), self.o.payload.eq(seq)]
                with m.If(self.o.ready):
                    m.d.sync += tx_crc.eq(crc8_next(tx_crc, seq))
                    with m.If(resp_status == proto.Resp.NAK):
                        m.next = "TX_REASON"
                    with m.Else():
                        m.next = "TX_FETCH"
            with m.State("TX_REASON"):
                m.d.comb += [self.o.valid.eq(1), self.o.payload.eq(resp_reason)]
                with m.If(self.o.ready):
                    m.d.sync += tx_crc.eq(crc8_next(tx_crc, resp_reason))
                    m.next = "TX_CRC"
            with m.State("TX_FETCH"):            # rd.addr = k; data valid next cycle
                with m.If(k == resp_words):
                    m.next = "TX_CRC"
                with m.Else():
                    m.next = "TX_LOAD"
            with m.State("TX_LOAD"):
                m.d.sync += [tx_word.eq(rd.data), tx_byte.eq(0)]
                m.next = "TX_DATA"
            with m.State("TX_DATA"):
                m.d.comb += [self.o.valid.eq(1), self.o.payload.eq(tx_word[:8])]
                with m.If(self.o.ready):
                    m.d.sync += [tx_crc.eq(crc8_next(tx_crc, tx_word[:8])),
                                 tx_word.eq(tx_word >> 8), tx_byte.eq(tx_byte + 1)]
                    with m.If(tx_byte == 3):
                        m.d.sync += k.eq(k + 1)
                        m.next = "TX_FETCH"
            with m.State("TX_CRC"):
                m.d.comb += [self.o.valid.eq(1), self.o.payload.eq(tx_crc)]
                with m.If(self.o.ready):
                    m.next = "IDLE"

        m.d.comb += self.busy.eq(~fsm.ongoing("IDLE"))
        return m


def attach_chip(m, bridge: HostBridge, chip, name: str = "chip") -> None:
    """Add ``chip`` to module ``m`` as submodule ``name`` behind ``bridge``: the bridge masters
    the chip's host bus, and its :attr:`~HostBridge.chip_reset` is added to the reset of the
    chip's ``sync`` domain (the registers of the chip, not its memories' contents, nor the
    bridge: a ``RESET`` request stops a run and the bridge still answers it)."""
    m.submodules[name] = ResetInserter({"sync": bridge.chip_reset})(chip)
    wiring.connect(m, bridge.bus, chip.host)
