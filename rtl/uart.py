"""UART receiver and transmitter (8 data bits, no parity, 1 stop bit) with byte streams."""

from amaranth.hdl import Module, Signal, Cat
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

__all__ = ["UartRx", "UartTx", "uart_divisor"]


def uart_divisor(clk_freq: float, baud: int) -> int:
    """Clock cycles per bit for ``baud`` at ``clk_freq`` Hz; raises if the error exceeds 2 %."""
    if baud <= 0 or clk_freq <= 0:
        raise ValueError(f"clock {clk_freq!r} Hz and baud rate {baud!r} must be positive")
    div = round(clk_freq / baud)
    if div < 4:
        raise ValueError(f"baud rate {baud} too high for a {clk_freq / 1e6:g} MHz clock")
    err = abs(clk_freq / div - baud) / baud
    if err > 0.02:
        raise ValueError(f"baud rate {baud} is {err:.1%} off at {clk_freq / 1e6:g} MHz")
    return div


def _check_divisor(divisor):
    if not isinstance(divisor, int) or divisor < 4:
        raise ValueError(f"divisor must be an integer >= 4, not {divisor!r}")


class UartRx(wiring.Component):
    """UART receiver, 8N1.

    The line is synchronised by two flip-flops, the start bit's falling edge is sampled again
    half a bit later, and each data bit is sampled in the middle of its bit time. A byte is
    offered on ``o`` one clock after the middle of its stop bit.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit (``clk_freq / baud``), at least 4.

    Members
    -------
    rx : ``In(1)``
        Serial line (idle high).
    o : ``Out(stream.Signature(8))``
        Received bytes. ``o.valid`` stays up until ``o.ready``.
    frame_error : ``Out(1)``
        Pulses for one cycle when a stop bit is low (the byte is dropped).
    overrun : ``Out(1)``
        Pulses for one cycle when a byte arrives while the previous one is still unread (the
        new byte is dropped).
    """

    def __init__(self, divisor: int):
        _check_divisor(divisor)
        self._divisor = divisor
        super().__init__({
            "rx":          In(1, init=1),
            "o":           Out(stream.Signature(8)),
            "frame_error": Out(1),
            "overrun":     Out(1),
        })

    @property
    def divisor(self):
        return self._divisor

    def elaborate(self, platform):
        m = Module()
        div = self._divisor
        rx = Signal(init=1)
        m.submodules.sync_rx = FFSynchronizer(self.rx, rx, init=1)

        timer = Signal(range(div))
        bit = Signal(range(8))
        shreg = Signal(8)

        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)

        with m.FSM():
            with m.State("IDLE"):
                with m.If(~rx):
                    m.d.sync += timer.eq(div // 2 - 1)
                    m.next = "START"
            with m.State("START"):
                m.d.sync += timer.eq(timer - 1)
                with m.If(timer == 0):
                    with m.If(rx):             # glitch, not a start bit
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += [timer.eq(div - 1), bit.eq(0)]
                        m.next = "DATA"
            with m.State("DATA"):
                m.d.sync += timer.eq(timer - 1)
                with m.If(timer == 0):
                    m.d.sync += [timer.eq(div - 1), shreg.eq(Cat(shreg[1:], rx)),
                                 bit.eq(bit + 1)]
                    with m.If(bit == 7):
                        m.next = "STOP"
            with m.State("STOP"):
                m.d.sync += timer.eq(timer - 1)
                with m.If(timer == 0):
                    with m.If(~rx):
                        m.d.comb += self.frame_error.eq(1)
                        m.next = "BREAK"
                    with m.Elif(self.o.valid & ~self.o.ready):
                        m.d.comb += self.overrun.eq(1)
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += [self.o.payload.eq(shreg), self.o.valid.eq(1)]
                        m.next = "IDLE"
            with m.State("BREAK"):                 # wait for the line to return high
                with m.If(rx):
                    m.next = "IDLE"
        return m


class UartTx(wiring.Component):
    """UART transmitter, 8N1.

    A byte accepted on ``i`` (``i.ready`` is high while the transmitter is idle) is sent as a
    start bit, 8 data bits LSB first and a stop bit, each ``divisor`` cycles long.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit (``clk_freq / baud``), at least 4.

    Members
    -------
    i : ``In(stream.Signature(8))``
        Bytes to send.
    tx : ``Out(1)``
        Serial line (idle high).
    """

    def __init__(self, divisor: int):
        _check_divisor(divisor)
        self._divisor = divisor
        super().__init__({
            "i":  In(stream.Signature(8)),
            "tx": Out(1, init=1),
        })

    @property
    def divisor(self):
        return self._divisor

    def elaborate(self, platform):
        m = Module()
        div = self._divisor
        timer = Signal(range(div))
        shreg = Signal(10, init=0x3FF)   # stop bit, 8 data bits, start bit (LSB first out)
        bits = Signal(range(11))

        m.d.comb += self.tx.eq(shreg[0])
        with m.If(bits == 0):
            m.d.comb += self.i.ready.eq(1)
            with m.If(self.i.valid):
                m.d.sync += [shreg.eq(Cat(0, self.i.payload, 1)), bits.eq(10),
                             timer.eq(div - 1)]
        with m.Else():
            m.d.sync += timer.eq(timer - 1)
            with m.If(timer == 0):
                m.d.sync += [shreg.eq(Cat(shreg[1:], 1)), bits.eq(bits - 1),
                             timer.eq(div - 1)]
        return m
