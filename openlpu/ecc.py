"""The SECDED code of the MEM slices (``LpuParams.mem_ecc``), defined once.

A :class:`Secded` code protects ``k`` data bits with ``r`` Hamming check bits (``2**r >= k + r +
1``) and one overall parity bit: single-bit errors are corrected, double-bit errors detected.
The RTL generator (``rtl/ecc.py``, ``rtl/mem.py``) builds its XOR trees from the masks and
positions here, and the reference model (``verification/model``) encodes and decodes with the
same tables, so the two cannot disagree on a single bit.

Codeword layout (bit 0 first): data bits ``0 .. k-1``, Hamming check bits ``k .. k+r-1`` (check
``j`` at codeword bit ``k + j``), the overall parity bit ``k + r = n - 1``. The data stays in the
low bits of the stored word.

Hamming positions: data bit ``i`` has position :attr:`Secded.data_pos` ``[i]`` (the ``i``-th
integer >= 3 that is not a power of two), check bit ``j`` position ``2**j``, the parity bit
position 0. Check ``j`` is the XOR of the data bits whose position has bit ``j`` set, so the
syndrome (recomputed checks XOR stored checks) of a single-bit error is its position.

Decoding (:meth:`Secded.decode`): ``parity`` is the XOR of all ``n`` bits, ``s`` the syndrome.

* ``s == 0`` and ``parity == 0``: no error (:attr:`Status.OK`);
* ``parity == 1`` and ``s`` a position of the code (0, a power of two below ``2**r`` or a data
  position): one bit flipped, corrected (:attr:`Status.CORRECTED`; a data bit is flipped back,
  an error in a check or parity bit leaves the data as stored);
* otherwise (``parity == 0`` with ``s != 0``: an even number of flips, every double error;
  or ``parity == 1`` with ``s`` outside the shortened code): :attr:`Status.UNCORRECTABLE`, the
  data bits are returned as stored.

The protected unit of a chip (:func:`code_for`): with ``mem_gather`` every lane has its own
byte-wide memory, so every byte is a codeword, Hamming(13,8) (5 check bits per byte, +62.5 %
bits); without it a tile is one ``lanes``-byte memory that the host writes one 32-bit host word
(``host_word_lanes`` lanes) at a time, so every host word is a codeword: (39,32), 7 check bits
per 4 bytes (+21.9 %), or (22,16) for 2-lane tiles, and no write ever needs a read-modify-write.
"""

from __future__ import annotations

import enum
from functools import lru_cache

import numpy as np

__all__ = ["Status", "Secded", "code", "code_for", "host_word_codewords", "tile_codewords", "host_word_code_bits",
           "inject_word", "InjectError"]


class Status(enum.IntEnum):
    """Outcome of decoding one codeword."""
    OK = 0
    CORRECTED = 1
    UNCORRECTABLE = 2


class InjectError(ValueError):
    """A fault-injection request names bits that the chip's MEM host word does not have."""


def _check_bits(k: int) -> int:
    r = 1
    while (1 << r) < k + r + 1:
        r += 1
    return r


class Secded:
    """Hamming SECDED code of ``k`` data bits (see the module docstring for the layout)."""

    def __init__(self, k: int):
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"SECDED needs a positive number of data bits, not {k!r}")
        self.k = k
        self.r = r = _check_bits(k)
        self.n = k + r + 1
        pos, p = [], 3
        while len(pos) < k:
            if p & (p - 1):
                pos.append(p)
            p += 1
        #: Hamming position of each data bit
        self.data_pos = tuple(pos)
        #: per check bit j: mask of the data bits it covers
        self.check_masks = tuple(sum(1 << i for i, q in enumerate(pos) if q >> j & 1)
                                 for j in range(r))
        #: syndrome -> data bit to flip back (single error in a data bit)
        self.syndrome_data_bit = {q: i for i, q in enumerate(pos)}
        #: syndromes of a single error somewhere in the codeword (0: the parity bit)
        self.valid_syndromes = frozenset([0, *(1 << j for j in range(r)), *pos])

    def __repr__(self):
        return f"Secded(n={self.n}, k={self.k})"

    # -- scalar ---------------------------------------------------------------------------
    def hamming(self, data: int) -> int:
        """The ``r`` Hamming check bits of ``data`` (check ``j`` in bit ``j``)."""
        return sum((bin(data & m).count("1") & 1) << j for j, m in enumerate(self.check_masks))

    def encode(self, data: int) -> int:
        """The ``n``-bit codeword of ``data`` (data low, checks, overall parity on top)."""
        if not 0 <= data < (1 << self.k):
            raise ValueError(f"{self!r}: data {data!r} is not a {self.k}-bit value")
        w = data | (self.hamming(data) << self.k)
        return w | ((bin(w).count("1") & 1) << (self.n - 1))

    def syndrome(self, word: int) -> tuple[int, int]:
        """``(s, parity)`` of a stored ``n``-bit word."""
        data = word & ((1 << self.k) - 1)
        stored = (word >> self.k) & ((1 << self.r) - 1)
        return self.hamming(data) ^ stored, bin(word).count("1") & 1

    def decode(self, word: int) -> tuple[int, Status]:
        """``(data, status)`` of a stored ``n``-bit word: corrected data for a single error, the
        stored data bits otherwise."""
        if not 0 <= word < (1 << self.n):
            raise ValueError(f"{self!r}: word {word!r} is not a {self.n}-bit value")
        s, parity = self.syndrome(word)
        data = word & ((1 << self.k) - 1)
        if not parity:
            return data, (Status.OK if s == 0 else Status.UNCORRECTABLE)
        if s not in self.valid_syndromes:
            return data, Status.UNCORRECTABLE
        if s in self.syndrome_data_bit:
            data ^= 1 << self.syndrome_data_bit[s]
        return data, Status.CORRECTED

    # -- numpy (the model) ------------------------------------------------------------------
    def _parity(self, x: np.ndarray) -> np.ndarray:
        return (np.bitwise_count(x) & 1).astype(np.uint64)

    def encode_np(self, data) -> np.ndarray:
        """Codewords (``uint64``) of an array of data values."""
        d = np.asarray(data, dtype=np.uint64)
        w = d.copy()
        for j, msk in enumerate(self.check_masks):
            w |= self._parity(d & np.uint64(msk)) << np.uint64(self.k + j)
        return w | (self._parity(w) << np.uint64(self.n - 1))

    def decode_np(self, words) -> tuple[np.ndarray, np.ndarray]:
        """``(data, status)`` arrays of an array of stored words (same rules as :meth:`decode`)."""
        w = np.asarray(words, dtype=np.uint64)
        data = w & np.uint64((1 << self.k) - 1)
        s = np.zeros(w.shape, dtype=np.uint64)
        for j, msk in enumerate(self.check_masks):
            s |= (self._parity(data & np.uint64(msk))
                  ^ ((w >> np.uint64(self.k + j)) & np.uint64(1))) << np.uint64(j)
        parity = self._parity(w).astype(bool)
        valid = np.isin(s, np.array(sorted(self.valid_syndromes), dtype=np.uint64))
        status = np.where(parity, np.where(valid, Status.CORRECTED, Status.UNCORRECTABLE),
                          np.where(s == 0, Status.OK, Status.UNCORRECTABLE)).astype(np.uint8)
        flip = np.zeros(w.shape, dtype=np.uint64)
        for q, i in self.syndrome_data_bit.items():
            flip |= np.where(parity & (s == q), np.uint64(1 << i), np.uint64(0))
        return data ^ flip, status


@lru_cache(maxsize=None)
def code(k: int) -> Secded:
    """The SECDED code of ``k`` data bits (one object per width)."""
    return Secded(k)


def code_for(params) -> Secded:
    """The code of a chip's MEM codewords: a byte with ``mem_gather`` (one memory per lane),
    else a host word of ``host_word_lanes`` bytes."""
    return code(8 if params.mem_gather else 8 * params.host_word_lanes)


def host_word_codewords(params) -> int:
    """Codewords that one 32-bit host word of a MEM tile covers (one per lane, or one)."""
    return params.host_word_lanes if params.mem_gather else 1


def tile_codewords(params) -> int:
    """Codewords in one tile's entry (one MEM superlane's share of a vector word)."""
    return params.lanes if params.mem_gather else params.host_lane_groups


def host_word_code_bits(params) -> int:
    """Stored bits behind one host word of a MEM tile: the bits ``ECC_INJECT`` can name.

    Bit ``j * n + b`` is bit ``b`` (codeword layout above) of the host word's codeword ``j``
    (``j`` = lane within the host word with ``mem_gather``, always 0 without)."""
    return host_word_codewords(params) * code_for(params).n


def inject_word(params, *bits: int) -> int:
    """The ``HostReg.ECC_INJECT`` value that flips the given (one or two) stored bits of the
    next host word written to MEM (bit numbering of :func:`host_word_code_bits`).

    Raises :class:`InjectError` on a chip without ``mem_ecc``, for no bit, more than two, a
    repeated bit or a bit beyond the host word's stored bits."""
    from . import isa
    if not getattr(params, "mem_ecc", False):
        raise InjectError(f"preset {params.name!r} has no MEM ECC (mem_ecc=False)")
    if not 1 <= len(bits) <= 2:
        raise InjectError(f"ECC_INJECT flips one or two bits, not {len(bits)}")
    if len(set(bits)) != len(bits):
        raise InjectError(f"ECC_INJECT: bit {bits[0]} named twice")
    limit = host_word_code_bits(params)
    word = 0
    for slot, b in enumerate(bits):
        if not isinstance(b, (int, np.integer)) or not 0 <= b < limit:
            raise InjectError(f"ECC_INJECT: bit {b!r} out of range [0, {limit}) (stored bits "
                              f"of a host word of preset {params.name!r})")
        word |= isa.ecc_inject_field(slot, int(b))
    return word
