"""Host-side images: the bus writes that load a package and its inputs, and output decoding.

These functions turn a :class:`~openlpu.firmware.package.Package` and numpy tensors into
``(address, word)`` pairs for the host bus, and read words back into tensors. A tensor's
placement, dense or striped over several MEM slices and banks, comes from
:meth:`TensorDesc.plane_words <openlpu.firmware.package.TensorDesc.plane_words>` alone. They are used by
:class:`~openlpu.host.device.Device` and by the cocotb testbenches, so every backend and
testbench moves exactly the same words.
"""

from __future__ import annotations

import functools

import numpy as np

from openlpu import hostmap
from openlpu.firmware.package import DTYPES, Package, PackageError, TensorDesc

__all__ = ["load_writes", "const_writes", "const_words", "input_writes", "input_words",
           "output_reads", "output_addrs", "assemble_outputs", "check_inputs", "InputError"]


class InputError(ValueError):
    """Input tensors missing, extra, of the wrong shape, or out of range for their dtype."""


@functools.lru_cache(maxsize=64)
def _lane_offsets(params) -> tuple[int, ...]:
    """The superlane / lane-group part of the host addresses of one MEM vector word, in lane
    order (``hostmap.mem_addr``'s fields are disjoint bit ranges, so an address is the OR of
    the word's base and these)."""
    base = hostmap.mem_addr(params, 0, 0, 0, 0, 0)
    return tuple(hostmap.mem_addr(params, 0, 0, 0, s, g) ^ base
                 for s in range(params.superlanes) for g in range(params.host_lane_groups))


def _pack_words(params, data: np.ndarray) -> np.ndarray:
    """``hostmap.pack_lanes`` of every host word of vector words ``data`` ((n, VL) bytes, lane
    order): (n * superlanes * host_lane_groups,) uint32, lane byte i of a word in bits 8i..8i+7."""
    hwl = params.host_word_lanes
    lanes = np.asarray(data, dtype=np.uint8).reshape(-1, hwl)
    if hwl != 4:                                         # pad every word to 4 bytes
        lanes = np.concatenate([lanes, np.zeros((lanes.shape[0], 4 - hwl), np.uint8)], axis=1)
    return np.ascontiguousarray(lanes).view("<u4").reshape(-1).astype(np.uint32, copy=False)


def _vector_block_words(params, sl, bank, words, data: np.ndarray):
    """The host writes of many vector words of one slice and bank: ``words`` (n,) and their
    bytes ``data`` (n, VL), in that order; ``(addresses, words)``, two uint32 arrays of
    ``n * superlanes * host_lane_groups`` (the words' host words in lane order)."""
    words = np.asarray(words, dtype=np.int64).reshape(-1)
    if not words.size:
        return np.zeros(0, np.uint32), np.zeros(0, np.uint32)
    for w in (int(words.min()), int(words.max())):       # the range checks of mem_addr
        hostmap.mem_addr(params, sl, bank, w, 0, 0)
    base = hostmap.mem_addr(params, sl, bank, 0, 0, 0)
    step = (hostmap.mem_addr(params, 0, 0, 1, 0, 0) ^ hostmap.mem_addr(params, 0, 0, 0, 0, 0)
            if params.mem_words > 1 else 0)
    addrs = (base | (words[:, None] * step)) | np.array(_lane_offsets(params), dtype=np.int64)
    return addrs.reshape(-1).astype(np.uint32), _pack_words(params, data)


def _vector_block_writes(params, sl, bank, words, data: np.ndarray):
    """:func:`_vector_block_words` as ``(address, word)`` pairs."""
    a, w = _vector_block_words(params, sl, bank, words, data)
    return list(zip(a.tolist(), w.tolist()))


def _concat(parts):
    if not parts:
        return np.zeros(0, np.uint32), np.zeros(0, np.uint32)
    return (np.concatenate([a for a, _ in parts]), np.concatenate([w for _, w in parts]))


def load_writes(pkg: Package) -> list[tuple[int, int]]:
    """Instruction images of every queue and the constant MEM image."""
    p = pkg.params
    out = []
    for qname, words in pkg.queues.items():
        q = p.queue(qname)
        out += [(hostmap.imem_addr(p, q.index, i), int(w)) for i, w in enumerate(words)]
    return out + const_writes(pkg)


def const_writes(pkg: Package) -> list[tuple[int, int]]:
    """The constant MEM image alone (the tail of :func:`load_writes`)."""
    a, w = const_words(pkg)
    return list(zip(a.tolist(), w.tolist()))


def const_words(pkg: Package) -> tuple[np.ndarray, np.ndarray]:
    """:func:`const_writes` as two uint32 arrays ``(addresses, words)`` (for
    ``Backend.write_words``)."""
    p = pkg.params
    parts = []
    for sl, addr, data in pkg.mem_image:
        parts.append(_vector_block_words(p, sl, p.mem_bank_of(addr), [addr % p.mem_words],
                                         np.frombuffer(bytes(data), dtype=np.uint8)))
    return _concat(parts)


def _stored(desc: TensorDesc, x: np.ndarray, vl: int) -> np.ndarray:
    """The stored matrix, zero-padded to whole VL tiles: shape (R, tiles*VL) of int64."""
    s = x.T if desc.transposed else x
    r, c = s.shape
    out = np.zeros((r, desc.tiles(vl) * vl), dtype=np.int64)
    out[:, :c] = s
    return out


def check_inputs(pkg: Package, inputs: dict) -> dict:
    """Validate input tensors against the package; returns them as int64 arrays."""
    want = {t.name: t for t in pkg.inputs}
    missing = set(want) - set(inputs)
    extra = set(inputs) - set(want)
    if missing:
        raise InputError(f"missing input(s): {', '.join(sorted(missing))}")
    if extra:
        raise InputError(f"unknown input(s): {', '.join(sorted(extra))} "
                         f"(package takes {', '.join(want)})")
    out = {}
    for name, desc in want.items():
        x = np.asarray(inputs[name])
        if x.shape != tuple(desc.shape):
            raise InputError(f"input {name}: shape {x.shape} does not match {tuple(desc.shape)}")
        if not np.issubdtype(x.dtype, np.integer):
            raise InputError(f"input {name}: dtype {x.dtype} is not an integer type")
        bits = 8 * DTYPES[desc.dtype]
        lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        if x.size and (x.min() < lo or x.max() > hi):
            raise InputError(f"input {name}: values outside {desc.dtype} range [{lo}, {hi}]")
        out[name] = x.astype(np.int64)
    return out


def input_writes(pkg: Package, inputs: dict) -> list[tuple[int, int]]:
    """Bus writes that place the input tensors in MEM (validated first)."""
    a, w = input_words(pkg, inputs)
    return list(zip(a.tolist(), w.tolist()))


def input_words(pkg: Package, inputs: dict) -> tuple[np.ndarray, np.ndarray]:
    """:func:`input_writes` as two uint32 arrays ``(addresses, words)``, the same writes in
    the same order (for ``Backend.write_words``: no Python object per word)."""
    p = pkg.params
    arrays = check_inputs(pkg, inputs)
    parts = []
    for desc in pkg.inputs:
        s = _stored(desc, arrays[desc.name], p.vl)
        nbytes = DTYPES[desc.dtype]
        u = s.astype(np.int64) & ((1 << (8 * nbytes)) - 1)
        r_count = s.shape[0]
        tiles = desc.tiles(p.vl)
        for b in range(nbytes):
            plane = ((u >> (8 * b)) & 0xFF).astype(np.uint8)
            # stored word w = j*R + r holds row r of column tile j
            words = plane.reshape(r_count, tiles, p.vl).transpose(1, 0, 2).reshape(-1, p.vl)
            stripes = desc.layout[b]
            n = len(stripes)
            for k, (sl, bank, base, stride) in enumerate(stripes):
                ws = np.arange(k, words.shape[0], n)      # the stored words of stripe k
                parts.append(_vector_block_words(p, sl, bank, base + (ws // n) * stride,
                                                 words[ws]))
    return _concat(parts)


def _plane_addrs(params, desc: TensorDesc, plane: int) -> np.ndarray:
    """Host addresses of every stored word of one byte plane of ``desc``: shape (words, host
    words per vector word), stored word ``w = j*R + r`` in row ``w``, lanes in order."""
    bases = np.array([hostmap.mem_addr(params, sl, bank, word, 0, 0)
                      for sl, bank, word in desc.plane_words(plane, params.vl)], dtype=np.int64)
    return bases[:, None] | np.array(_lane_offsets(params), dtype=np.int64)


def output_addrs(pkg: Package) -> np.ndarray:
    """:func:`output_reads` as a uint32 array."""
    p = pkg.params
    parts = [_plane_addrs(p, desc, b).reshape(-1)
             for desc in pkg.outputs for b in range(len(desc.planes))]
    return (np.concatenate(parts) if parts else np.zeros(0, np.int64)).astype(np.uint32)


def output_reads(pkg: Package) -> list[int]:
    """Host addresses to read, in the order :func:`assemble_outputs` expects: every output,
    every byte plane, stored word ``w = j*R + r`` (row ``r`` of column tile ``j``), its host
    words in lane order."""
    return output_addrs(pkg).tolist()


def assemble_outputs(pkg: Package, words) -> dict:
    """Turn the words read at :func:`output_reads` into ``{name: ndarray}``."""
    p = pkg.params
    words = np.asarray(words if isinstance(words, np.ndarray) else list(words), dtype=np.int64)
    per_word = p.superlanes * p.host_lane_groups             # host words per vector word
    want = sum(len(d.planes) * d.words(p.vl) * per_word for d in pkg.outputs)
    if words.size != want:
        raise PackageError(f"expected {want} output words, got {words.size}")
    hwl = p.host_word_lanes
    out, i = {}, 0
    for desc in pkg.outputs:
        r_count, tiles = desc.stored_shape[0], desc.tiles(p.vl)
        store = np.zeros((r_count, tiles * p.vl), dtype=np.int64)
        for b in range(len(desc.planes)):
            n = desc.words(p.vl) * per_word
            w = words[i:i + n].reshape(-1, 1)
            i += n
            # hostmap.unpack_lanes of every host word: lane byte k in bits 8k..8k+7
            lanes = (w >> (8 * np.arange(hwl, dtype=np.int64))) & 0xFF
            # stored word j*R + r -> row r, columns of tile j
            plane = lanes.reshape(tiles, r_count, p.vl).transpose(1, 0, 2).reshape(r_count, -1)
            store |= plane << (8 * b)
        bits = 8 * DTYPES[desc.dtype]
        s = store[:, :desc.stored_shape[1]]
        s = np.where(s >= (1 << (bits - 1)), s - (1 << bits), s)
        s = s.T if desc.transposed else s
        out[desc.name] = s.astype(np.int8 if bits == 8 else np.int32)
    return out
