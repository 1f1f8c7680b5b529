"""Helpers shared by the VXM kernels (attention, softmax, RMSNorm): argument checks, VXM
instruction fields, and loading int32 constants into VXM ALU constant registers.

A VXM ALU's 32-bit constant register is filled by four ``VLC`` shift-in instructions
(``imm[0] = 1``, int8 operand): each shifts the register left by 8 bits and inserts one byte.
The four bytes (most significant first) are stored as four constant MEM words (the byte in every
lane) and READ, one per cycle, onto a byte stream that flows into the VXM.
"""

from __future__ import annotations

import numpy as np

from openlpu import isa
from openlpu.isa import Dir

from .schedule import CompileError

__all__ = ["load_const", "CONST_WORDS", "vxm_fields", "check_vxm_kernel", "assign_alus",
           "q31_normalise"]

CONST_WORDS = 4          # MEM words (and VLC cycles) per int32 constant


def q31_normalise(q: float, what: str, max_shift: int = 62) -> tuple:
    """``(mult, shift)`` with ``mult / 2**shift`` = ``q`` (> 0) and ``mult`` in [2**30, 2**31)
    where ``shift`` allows it (``shift`` <= ``max_shift``). Raises ValueError when ``q`` is not a
    positive finite number or does not fit an int32 multiplier."""
    if not (isinstance(q, float) and np.isfinite(q) and q > 0):
        raise ValueError(f"{what} must be a positive finite number, not {q!r}")
    shift = 0
    while q * (1 << (shift + 1)) < (1 << 31) and shift < max_shift:
        shift += 1
    mult = int(round(q * (1 << shift)))
    if mult >= (1 << 31) and shift == 0:
        raise ValueError(f"{what} {q!r} is too large for an int32 multiplier")
    mult = min(mult, (1 << 31) - 1)
    if mult < 1:
        raise ValueError(f"{what} {q!r} is too small for an int32 multiplier")
    return mult, shift


def vxm_fields(**f) -> dict:
    """All fields of a VXM instruction: ``f`` over the defaults (operand ``a`` on stream 0
    flowing east, not chained; ``b`` from a stream; result east; int32)."""
    base = dict(a_stream=0, a_dir=Dir.EAST, a_chain=0, b_stream=0, b_dir=0,
                b_mode=isa.VXM_B_STREAM, out_dir=Dir.EAST, dtype=2, imm=0)
    base.update(f)
    return base


def check_vxm_kernel(params, where: str, kind: str, dims: dict) -> None:
    """Raise :class:`CompileError` unless every value of ``dims`` (name -> value) is a positive
    integer and the preset has the 4-ALU VXM and the 8 streams per direction the VXM kernels
    use. ``where`` names the kernel and shape in the messages, ``kind`` the kernel alone."""
    p = params
    for name, v in dims.items():
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise CompileError(f"{kind} {name} must be a positive integer, not {v!r}")
    if p.vxm_alus < 4:
        raise CompileError(f"{where}: needs a VXM with 4 ALUs; preset {p.name!r} has "
                           f"{p.vxm_alus}")
    if p.streams < 8:
        raise CompileError(f"{where}: needs 8 streams per direction, preset has {p.streams}")


def assign_alus(params, where: str, needs: dict) -> dict:
    """Place a kernel's logical VXM ALUs on ALUs of ``params`` that implement what they issue.

    ``needs`` maps each logical ALU (any key, e.g. 0..3 for A..D) to the mnemonics it issues
    that need a function unit (``isa.VXM_UNIT_OF``); the result maps it to an ALU index. The
    identity (logical ``i`` on ``alu{i}``, keys in order) is kept whenever it fits, so a chip
    with full ALUs gets the same program; otherwise the most demanding logical ALUs are placed
    first, each on the plainest ALU that has its units (``isa.vxm_alus_with``). Raises
    :class:`CompileError` naming the units and the options when no placement exists.
    """
    p = params
    keys = list(needs)
    ok = {k: [int(r[3:]) for r in isa.VXM_ALU_ROLES[:p.vxm_alus]
              if all(r in isa.vxm_alus_with(p, mn) for mn in needs[k])] for k in keys}
    if all(i in ok[k] for i, k in enumerate(keys)):
        return {k: i for i, k in enumerate(keys)}
    out, used = {}, set()
    for k in sorted(keys, key=lambda k: len(ok[k])):       # fewest candidates first
        free = [i for i in ok[k] if i not in used]
        if not free:
            units = sorted({isa.VXM_UNIT_OF[mn] for kk in keys for mn in needs[kk]})
            counts = ", ".join(f"{isa.VXM_UNITS[u][0]}={isa.vxm_unit_alus(p, u)}" for u in units)
            demand = ", ".join("+".join(sorted(set(needs[kk]))) for kk in keys if needs[kk])
            raise CompileError(f"{where}: needs separate VXM ALUs for {demand}; preset "
                               f"{p.name!r} has {counts}")
        out[k] = free[-1]               # the plainest: units are counted from alu0
        used.add(free[-1])
    return out


def load_const(sched, params, image: list, alu: int, value: int, t: int, *, src, addr: int,
               stream: int) -> int:
    """Shift the int32 ``value`` into the constant register of VXM ALU ``alu``.

    Words ``addr .. addr+3`` of MEM slice ``src`` (a :class:`SliceInfo`; the address includes
    the bank bit) receive the bytes MSB first (appended to ``image`` as ``(slice, addr, bytes)``);
    their READs are placed so that the VXM samples word ``k`` on ``stream`` at cycle ``t + k``,
    where ``VLC`` (shift-in) issues on ``vxm.alu{alu}``. Returns ``t + 4``, the first cycle at
    which an instruction of that ALU sees the complete constant.
    """
    from .chipstate import lead
    p = params
    vx = p.slice("vxm")
    lat = lead(p, "READ", src, vx, "VLC")
    d = Dir.WEST if src.position > vx.position else Dir.EAST
    drive = getattr(sched, "drive", None)       # a ChipState also claims the stream slots
    value = int(value)
    if not -(1 << 31) <= value < (1 << 32):
        raise ValueError(f"constant {value} does not fit 32 bits")
    for k in range(CONST_WORDS):
        byte = (value >> (8 * (3 - k))) & 0xFF
        image.append((src.index, addr + k, bytes([byte]) * p.vl))
        sched.place(f"{src.name}.read", t + k - lat, "READ", addr=addr + k, stream=stream, dir=d)
        if drive:
            drive(d, stream, src, t + k - lat + lead(p, "READ", src, src), vx)
        sched.place(f"vxm.alu{alu}", t + k, "VLC", a_stream=stream, a_dir=d, a_chain=0,
                    b_stream=0, b_dir=0, b_mode=isa.VXM_B_STREAM, out_dir=Dir.EAST, dtype=0,
                    imm=1)
    return t + CONST_WORDS
