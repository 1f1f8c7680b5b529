"""SECDED encoder and decoder of the MEM slices (``LpuParams.mem_ecc``), from ``openlpu.ecc``.

Both are combinational: the encoder sits between a memory's write-data multiplexer and its
write port, the decoder after the synchronous read port, so READ keeps its latency of one
cycle. The XOR trees come from the masks and positions of :class:`openlpu.ecc.Secded`; the
reference model decodes with the same object.
"""

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["SecdedEncoder", "SecdedDecoder"]


def _xor_of(value, mask):
    bits = [value[i] for i in range(len(value)) if mask >> i & 1]
    acc = bits[0]
    for b in bits[1:]:
        acc = acc ^ b
    return acc


class SecdedEncoder(wiring.Component):
    """``codeword = data | checks << k | parity << (n - 1)`` of :class:`openlpu.ecc.Secded`
    ``code`` (combinational).

    Members: ``data : In(k)``, ``codeword : Out(n)``.
    """

    def __init__(self, code):
        self._code = code
        super().__init__({"data": In(code.k), "codeword": Out(code.n)})

    def elaborate(self, platform):
        m = Module()
        c = self._code
        checks = [_xor_of(self.data, msk) for msk in c.check_masks]
        body = Cat(self.data, *checks)
        m.d.comb += self.codeword.eq(Cat(body, body.xor()))
        return m


class SecdedDecoder(wiring.Component):
    """Checks and corrects one stored word of :class:`openlpu.ecc.Secded` ``code``
    (combinational; the rules of :meth:`openlpu.ecc.Secded.decode`).

    Members: ``codeword : In(n)``; ``data : Out(k)`` (corrected for a single error, as stored
    otherwise); ``corrected : Out(1)`` (one bit was flipped, data or check); ``uncorrectable :
    Out(1)`` (a double error, or a syndrome outside the shortened code).
    """

    def __init__(self, code):
        self._code = code
        super().__init__({"codeword": In(code.n), "data": Out(code.k), "corrected": Out(1),
                          "uncorrectable": Out(1)})

    def elaborate(self, platform):
        m = Module()
        c = self._code
        data = self.codeword[:c.k]
        stored = self.codeword[c.k:c.k + c.r]
        # named signals: every comparison below uses them (and the simulator evaluates them once)
        syndrome = Signal(c.r)
        parity = Signal()
        m.d.comb += [syndrome.eq(Cat(*(_xor_of(data, msk) for msk in c.check_masks)) ^ stored),
                     parity.eq(self.codeword.xor())]
        valid = 0
        for s in sorted(c.valid_syndromes):
            valid = valid | (syndrome == s)
        flips = Cat(*(parity & (syndrome == q) for q in c.data_pos))
        m.d.comb += [
            self.data.eq(data ^ flips),
            self.corrected.eq(parity & valid),
            self.uncorrectable.eq(Cat(parity & ~valid, ~parity & syndrome.any()).any()),
        ]
        return m
