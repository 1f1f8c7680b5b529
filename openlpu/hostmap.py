"""Host address map: the one place that packs and unpacks host bus addresses.

Used by the RTL's host decoder, the reference model, the host driver and the testbenches.
See ``docs/architecture.md`` (Host interface).
"""

from __future__ import annotations

from . import isa
from .params import LpuParams

__all__ = ["reg_addr", "mem_addr", "imem_addr", "split", "AddressError", "pack_lanes",
           "unpack_lanes", "mem_fault_writes"]


class AddressError(ValueError):
    """A host address or one of its fields is out of range."""


def _region(region: int, sub: int) -> int:
    return (int(region) << isa.HOST_REGION_SHIFT) | sub


def reg_addr(reg: isa.HostReg) -> int:
    return _region(isa.HostRegion.REGS, int(reg))


def mem_addr(params: LpuParams, slice_index: int, bank: int, word: int, superlane: int,
             group: int) -> int:
    """Host word address of 4 lanes (``4*group .. 4*group+3``) of a MEM vector word tile."""
    limits = {"slice": 2 * params.mem_slices, "bank": params.mem_banks, "word": params.mem_words,
              "superlane": params.superlanes, "group": params.host_lane_groups}
    values = {"slice": slice_index, "bank": bank, "word": word, "superlane": superlane,
              "group": group}
    sub, pos = 0, 0
    for name, bits in params.host_mem_field_bits.items():
        v = values[name]
        if not 0 <= v < limits[name]:
            raise AddressError(f"MEM {name} {v} out of range [0, {limits[name]})")
        sub |= v << pos
        pos += bits
    if pos > isa.HOST_REGION_SHIFT:
        raise AddressError(f"MEM host address needs {pos} bits, more than {isa.HOST_REGION_SHIFT}")
    return _region(isa.HostRegion.MEM, sub)


def imem_addr(params: LpuParams, queue_index: int, word: int) -> int:
    if not 0 <= queue_index < len(params.queues):
        raise AddressError(f"queue index {queue_index} out of range [0, {len(params.queues)})")
    if not 0 <= word < params.imem_words:
        raise AddressError(f"instruction word {word} out of range [0, {params.imem_words})")
    return _region(isa.HostRegion.IMEM, (queue_index << isa.IMEM_QUEUE_SHIFT) | word)


def split(params: LpuParams, addr: int) -> tuple[isa.HostRegion, dict]:
    """Decode a host address into its region and fields (inverse of the helpers above)."""
    if not 0 <= addr < (1 << isa.HOST_ADDR_BITS):
        raise AddressError(f"host address 0x{addr:x} wider than {isa.HOST_ADDR_BITS} bits")
    region = addr >> isa.HOST_REGION_SHIFT
    sub = addr & ((1 << isa.HOST_REGION_SHIFT) - 1)
    try:
        region = isa.HostRegion(region)
    except ValueError:
        raise AddressError(f"host address 0x{addr:x}: no region {region}") from None
    if region == isa.HostRegion.REGS:
        return region, {"reg": sub}
    if region == isa.HostRegion.IMEM:
        return region, {"queue": sub >> isa.IMEM_QUEUE_SHIFT,
                        "word": sub & ((1 << isa.IMEM_QUEUE_SHIFT) - 1)}
    fields, pos = {}, 0
    for name, bits in params.host_mem_field_bits.items():
        fields[name] = (sub >> pos) & ((1 << bits) - 1)
        pos += bits
    fields["rest"] = sub >> pos
    return region, fields


def pack_lanes(values) -> int:
    """Up to four lane bytes (lane 4g+i in byte i) to one host word."""
    w = 0
    for i, v in enumerate(values):
        w |= (int(v) & 0xFF) << (8 * i)
    return w


def unpack_lanes(word: int, lanes: int = 4) -> list[int]:
    """The ``lanes`` (``params.host_word_lanes``) lane bytes of a host word, byte 0 first."""
    return [(word >> (8 * i)) & 0xFF for i in range(lanes)]


def mem_fault_writes(params: LpuParams, slice_index: int, bank: int, word: int, superlane: int,
                     group: int, value: int, bits) -> list[tuple[int, int]]:
    """The host writes that store ``value`` in one MEM host word with the stored ``bits`` (one
    or two, numbered as in ``openlpu.ecc.host_word_code_bits``) flipped: ``ECC_INJECT``, then
    the MEM write that takes it (``mem_ecc`` chips; see docs/architecture.md, *MEM ECC*).

    Every argument is checked (:class:`AddressError`, ``openlpu.ecc.InjectError``) before a
    pair is returned, so nothing reaches the device for a bad request."""
    from . import ecc
    addr = mem_addr(params, slice_index, bank, word, superlane, group)
    if not 0 <= value < (1 << 32):
        raise AddressError(f"MEM host word value {value!r} is not a 32-bit value")
    return [(reg_addr(isa.HostReg.ECC_INJECT), ecc.inject_word(params, *bits)), (addr, value)]
