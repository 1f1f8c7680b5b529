"""MEM ECC of the reference model (``LpuParams.mem_ecc``): check bits, decoding, injection.

:class:`MemEcc` keeps the check bits of every MEM codeword next to the model's data array
(``LpuModel.mem`` stays the stored data bits, so ``mem[slice, addr, lane]`` is still the byte
as stored, possibly with an injected flip), encodes on every store, decodes every read with
the code of :func:`openlpu.ecc.code_for` (the tables the RTL is generated from) and implements
the host registers ECC_INJECT, ECC_CORRECTED and ECC_UNCORRECTABLE. Codeword ``q`` of a vector
word is lane ``q`` with ``mem_gather``, lanes ``q * host_word_lanes ..`` (little endian)
without it.
"""

from __future__ import annotations

import numpy as np

from openlpu import ecc, isa

__all__ = ["MemEcc"]

_TOP = (1 << isa.ECC_COUNTER_BITS) - 1


class MemEcc:
    """Check bits and ECC registers of the model's MEM slices (``mem``: the data array)."""

    def __init__(self, params, mem: np.ndarray):
        self.params = p = params
        self.code = ecc.code_for(p)
        self.mem = mem
        self.per = 1 if p.mem_gather else p.host_word_lanes      # lanes per codeword
        n_mem, words, vl = mem.shape
        self.check = np.zeros((n_mem, words, vl // self.per), dtype=np.uint8)  # all-zero: 0's code
        self.inject = 0
        self.corrected = 0
        self.uncorrectable = 0

    def clear_counters(self):
        self.corrected = 0
        self.uncorrectable = 0

    # -- codewords -----------------------------------------------------------------------
    def _data(self, sl, rows, cws):
        """Stored data bits of codewords ``cws`` of words ``rows`` (arrays of equal length)."""
        rows, cws = np.asarray(rows), np.asarray(cws)
        d = np.zeros(rows.shape, dtype=np.uint64)
        for b in range(self.per):
            d |= self.mem[sl, rows, cws * self.per + b].astype(np.uint64) << np.uint64(8 * b)
        return d

    def store(self, sl, rows, cws):
        """Encode codewords ``cws`` of words ``rows`` after their data was written."""
        c = self.code
        words = c.encode_np(self._data(sl, rows, cws))
        self.check[sl, np.asarray(rows), np.asarray(cws)] = \
            (words >> np.uint64(c.k)).astype(np.uint8)

    def load(self, sl, rows, cws):
        """``(data, status)`` of codewords ``cws`` of words ``rows``: corrected data values
        (``k`` bits each) and :class:`openlpu.ecc.Status` codes."""
        c = self.code
        words = self._data(sl, rows, cws) | (
            self.check[sl, np.asarray(rows), np.asarray(cws)].astype(np.uint64)
            << np.uint64(c.k))
        return c.decode_np(words)

    def lanes_of(self, data) -> np.ndarray:
        """The lane bytes of decoded codeword values, codeword 0 first."""
        d = np.asarray(data, dtype=np.uint64)
        return np.stack([(d >> np.uint64(8 * b)) & np.uint64(0xFF) for b in range(self.per)],
                        axis=-1).reshape(-1).astype(np.uint8)

    def count(self, status) -> None:
        """Add the codewords of ``status`` with an event to the (saturating) counters."""
        status = np.asarray(status)
        self.corrected = min(_TOP, self.corrected + int((status == ecc.Status.CORRECTED).sum()))
        self.uncorrectable = min(_TOP, self.uncorrectable
                                 + int((status == ecc.Status.UNCORRECTABLE).sum()))

    # -- the host ------------------------------------------------------------------------
    def host_write(self, sl, row, base, n):
        """A host word (lanes ``base .. base+n-1`` of word ``row``) was written: encode it and
        flip the stored bits ECC_INJECT names (if any)."""
        c = self.code
        cws = np.arange(base // self.per, (base + n + self.per - 1) // self.per)
        self.store(sl, np.full(len(cws), row), cws)
        for bit in isa.ecc_inject_bits(self.inject):
            if bit >= ecc.host_word_code_bits(self.params):
                continue                                  # past the host word: nothing
            j, b = divmod(bit, c.n)
            q = cws[j]
            if b < c.k:
                lane = q * self.per + b // 8
                self.mem[sl, row, lane] ^= np.uint8(1 << (b % 8))
            else:
                self.check[sl, row, q] ^= np.uint8(1 << (b - c.k))

    def host_read(self, sl, row, base, n):
        """``(lane bytes, any uncorrectable)`` of a host read of lanes ``base .. base+n-1``."""
        cws = np.arange(base // self.per, (base + n + self.per - 1) // self.per)
        data, status = self.load(sl, np.full(len(cws), row), cws)
        self.count(status)
        return self.lanes_of(data), bool((status == ecc.Status.UNCORRECTABLE).any())

    # -- instructions --------------------------------------------------------------------
    def vector_read(self, sl, rows, lm):
        """A READ / GATHER: lane ``l`` reads word ``rows[l]``, lanes ``lm`` enabled. Returns the
        corrected vector and the lowest superlane with an uncorrectable codeword (``None``)."""
        p = self.params
        cws = np.arange(p.vl // self.per)
        rows = np.asarray(rows)[cws * self.per]            # one row per codeword
        data, status = self.load(sl, rows, cws)
        enabled = np.asarray(lm)[cws * self.per]
        self.count(status[enabled])
        bad = np.nonzero(enabled & (status == ecc.Status.UNCORRECTABLE))[0]
        first = int(bad[0] * self.per // p.lanes) if len(bad) else None
        return self.lanes_of(data), first

    def vector_store(self, sl, rows, lanes):
        """Lanes ``lanes`` of words ``rows`` (arrays) were written by WRITE / SCATTER."""
        cws = np.asarray(lanes) // self.per
        self.store(sl, np.asarray(rows), cws)
