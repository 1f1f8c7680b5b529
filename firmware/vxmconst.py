"""Loading int32 constants into VXM ALU constant registers.

A VXM ALU's 32-bit constant register is filled by four ``VLC`` shift-in instructions
(``imm[0] = 1``, int8 operand): each shifts the register left by 8 bits and inserts one byte.
The four bytes (most significant first) are stored as four constant MEM words (the byte in every
lane) and READ, one per cycle, onto a byte stream that flows into the VXM.
"""

from __future__ import annotations

from openlpu import isa
from openlpu.isa import Dir

__all__ = ["load_const", "CONST_WORDS"]

CONST_WORDS = 4          # MEM words (and VLC cycles) per int32 constant


def load_const(sched, params, image: list, alu: int, value: int, t: int, *, src, addr: int,
               stream: int) -> int:
    """Shift the int32 ``value`` into the constant register of VXM ALU ``alu``.

    Words ``addr .. addr+3`` of MEM slice ``src`` (a :class:`SliceInfo`; the address includes
    the bank bit) receive the bytes MSB first (appended to ``image`` as ``(slice, addr, bytes)``);
    their READs are placed so that the VXM samples word ``k`` on ``stream`` at cycle ``t + k``,
    where ``VLC`` (shift-in) issues on ``vxm.alu{alu}``. Returns ``t + 4``, the first cycle at
    which an instruction of that ALU sees the complete constant.
    """
    p = params
    vx = p.slice("vxm")
    lat = isa.BY_MNEMONIC["READ"].d_func(p) + abs(src.position - vx.position)
    d = Dir.WEST if src.position > vx.position else Dir.EAST
    value = int(value)
    if not -(1 << 31) <= value < (1 << 32):
        raise ValueError(f"constant {value} does not fit 32 bits")
    for k in range(CONST_WORDS):
        byte = (value >> (8 * (3 - k))) & 0xFF
        image.append((src.index, addr + k, bytes([byte]) * p.vl))
        sched.place(f"{src.name}.read", t + k - lat, "READ", addr=addr + k, stream=stream, dir=d)
        sched.place(f"vxm.alu{alu}", t + k, "VLC", a_stream=stream, a_dir=d, a_chain=0,
                    b_stream=0, b_dir=0, b_mode=isa.VXM_B_STREAM, out_dir=Dir.EAST, dtype=0,
                    imm=1)
    return t + CONST_WORDS
