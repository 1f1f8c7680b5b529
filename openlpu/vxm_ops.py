"""Bit-exact lane semantics of every VXM operation (numpy, vectorised).

This module *is* the specification of VXM arithmetic: the reference model calls these
functions, and the RTL implements exactly the same integer algorithms (it imports the constants
below) and is tested against them. All arithmetic is on int64 numpy arrays holding the signed
lane values; results are returned in the same form.

Data types (``dtype`` field): 0 = int8 (1 byte stream), 1 = int16 (2 streams), 2 = int32
(4 streams). Fixed-point functions (``EXP``, ``RECIP``, ``RSQRT``) take and return int32 values in
Q16.16 (value = x / 65536). Rounding is "round half up": ``(x + 2**(s-1)) >> s`` with an arithmetic
shift. See docs/isa.md for the measured error bounds.
"""

from __future__ import annotations

import numpy as np

__all__ = ["DTYPE_BYTES", "DTYPE_NAMES", "wrap", "saturate", "round_shift", "clz32",
           "EXP_LOG2E", "EXP_C1", "EXP_C2", "EXP_C3", "RECIP_K1", "RECIP_K2", "RSQRT_K1",
           "RSQRT_K2", "RECIP_ITERATIONS", "RSQRT_ITERATIONS", "CMP_CODES", "INT32_MAX",
           "binary_op", "unary_op", "cast", "requantize", "fx_exp", "fx_recip", "fx_rsqrt",
           "compare", "select"]

DTYPE_BYTES = {0: 1, 1: 2, 2: 4}
DTYPE_NAMES = {0: "int8", 1: "int16", 2: "int32"}
INT32_MAX = (1 << 31) - 1

# exp: 2**f on [0, 1) as 1 + f*(C1 + f*(C2 + f*C3)), coefficients in Q16 (least squares fit)
EXP_LOG2E = 94548            # round(log2(e) * 2**16)
EXP_C1, EXP_C2, EXP_C3 = 45576, 14873, 5071
# reciprocal: y0 = 48/17 - 32/17 * v on v in [0.5, 1), Q30; then Newton-Raphson
RECIP_K1 = round(48 / 17 * (1 << 30))
RECIP_K2 = round(32 / 17 * (1 << 30))
RECIP_ITERATIONS = 3
# reciprocal square root: y0 = K1 - K2 * v on v in [0.25, 1), Q30; then Newton-Raphson
RSQRT_K1 = round(2.07418258 * (1 << 30))
RSQRT_K2 = round(1.18529368 * (1 << 30))
RSQRT_ITERATIONS = 3

CMP_CODES = {0: "eq", 1: "ne", 2: "lt", 3: "le", 4: "gt", 5: "ge"}


def _bits(dtype: int) -> int:
    return 8 * DTYPE_BYTES[dtype]


def wrap(x, dtype: int):
    """Two's-complement wrap-around to ``dtype``."""
    b = _bits(dtype)
    x = np.asarray(x, dtype=np.int64) & ((1 << b) - 1)
    return np.where(x >= (1 << (b - 1)), x - (1 << b), x)


def saturate(x, dtype: int):
    b = _bits(dtype)
    return np.clip(np.asarray(x, dtype=np.int64), -(1 << (b - 1)), (1 << (b - 1)) - 1)


def round_shift(x, s):
    """Arithmetic right shift by ``s`` (array or scalar, 0..62) rounding half up."""
    x = np.asarray(x, dtype=np.int64)
    s = np.asarray(s, dtype=np.int64)
    half = np.where(s > 0, np.left_shift(np.int64(1), np.maximum(s - 1, 0)), 0)
    return (x + half) >> s


def clz32(x):
    """Leading zeros of 32-bit unsigned values (32 for 0)."""
    x = np.asarray(x, dtype=np.int64) & 0xFFFFFFFF
    n = np.zeros_like(x)
    for sh in (16, 8, 4, 2, 1):
        mask = x < (1 << (32 - sh))
        n = np.where(mask, n + sh, n)
        x = np.where(mask, x << sh, x)
    return np.where(x == 0, 32, n)


# -- integer ALU operations ------------------------------------------------------------------
def binary_op(op: str, a, b, dtype: int, imm: int = 0):
    """``ADD SUB MUL MULSHR MIN MAX AND OR XOR SHL SRA SRL`` on signed lane values."""
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    bits = _bits(dtype)
    mask = (1 << bits) - 1
    if op == "ADD":
        return wrap(a + b, dtype)
    if op == "SUB":
        return wrap(a - b, dtype)
    if op == "MUL":
        return wrap(a * b, dtype)
    if op == "MULSHR":                       # saturate(round(a*b / 2**imm)), imm in 0..63
        return saturate(round_shift(a * b, min(imm, 62)), dtype)
    if op == "MIN":
        return np.minimum(a, b)
    if op == "MAX":
        return np.maximum(a, b)
    if op == "AND":
        return wrap((a & mask) & (b & mask), dtype)
    if op == "OR":
        return wrap((a & mask) | (b & mask), dtype)
    if op == "XOR":
        return wrap((a & mask) ^ (b & mask), dtype)
    sh = b & (bits - 1)                      # shift amounts are taken modulo the lane width
    if op == "SHL":
        return wrap((a & mask) << sh, dtype)
    if op == "SRA":
        return a >> sh
    if op == "SRL":
        return wrap((a & mask) >> sh, dtype)
    raise ValueError(f"unknown binary VXM op {op!r}")


def unary_op(op: str, a, dtype: int):
    """``RELU ABS NEG`` (ABS and NEG saturate: abs(-128) = 127 for int8)."""
    a = np.asarray(a, dtype=np.int64)
    if op == "RELU":
        return np.maximum(a, 0)
    if op == "ABS":
        return saturate(np.abs(a), dtype)
    if op == "NEG":
        return saturate(-a, dtype)
    raise ValueError(f"unknown unary VXM op {op!r}")


def compare(code: int, a, b):
    """-1 (all ones) where the comparison holds, else 0."""
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    name = CMP_CODES.get(code)
    res = {"eq": a == b, "ne": a != b, "lt": a < b, "le": a <= b, "gt": a > b,
           "ge": a >= b}.get(name)
    if res is None:
        raise ValueError(f"unknown comparison code {code}")
    return np.where(res, -1, 0).astype(np.int64)


def select(mask, a, c):
    """``a`` where the low byte of ``mask`` is non-zero, else ``c`` (``VSEL``).

    Only bits [7:0] of each mask lane count: ``VSEL`` reads its condition from one byte stream
    whatever the data type, so an int8 mask (or the low plane of a ``VCMP`` result) selects lanes
    of any width, and a wider mask value whose low byte is 0 (e.g. 256) selects ``c``.
    """
    low = np.asarray(mask, dtype=np.int64) & 0xFF
    return np.where(low != 0, np.asarray(a, dtype=np.int64), np.asarray(c, dtype=np.int64))


def cast(a, to_dtype: int):
    """Saturating conversion to ``to_dtype`` (sign extension when widening)."""
    return saturate(a, to_dtype)


def requantize(a, multiplier, shift: int):
    """int32 -> int8: ``saturate(round(a * multiplier / 2**(31 + shift)))``, shift in 0..31."""
    prod = np.asarray(a, dtype=np.int64) * np.asarray(multiplier, dtype=np.int64)
    return saturate(round_shift(prod, 31 + (shift & 31)), 0)


# -- fixed-point functions (Q16.16 in, Q16.16 out) -------------------------------------------
def fx_exp(a, out_shift: int = 0):
    """exp(x) for x = a / 2**16, clamped to x <= 0 (softmax inputs after max subtraction).

    The Q16.16 result is divided by ``2**out_shift`` (0..15, ``VEXP``'s ``imm[3:0]``) in the
    same rounding shift that scales ``2**frac`` by ``2**int``, so ``out_shift = 8`` gives
    ``round(exp(x) * 256)`` with a single rounding.
    """
    x = np.minimum(np.asarray(a, dtype=np.int64), 0)
    t = (x * EXP_LOG2E) >> 16                # x * log2(e), Q16, <= 0
    q = t >> 16                              # integer part (floor), <= 0
    r = t & 0xFFFF                           # fraction in [0, 1), Q16
    p = EXP_C2 + ((r * EXP_C3) >> 16)
    p = EXP_C1 + ((r * p) >> 16)
    p = 65536 + ((r * p) >> 16)              # 2**r in [1, 2), Q16
    n = -q + (int(out_shift) & 15)
    out = round_shift(p, np.minimum(n, 62))
    return np.where(n >= 32, 0, out)


def fx_recip(a):
    """1/x for x = a / 2**16 > 0; returns INT32_MAX for a <= 0 or when 1/x overflows."""
    a = np.asarray(a, dtype=np.int64)
    pos = a > 0
    a1 = np.where(pos, a, 1)
    lz = clz32(a1)                           # 1..31
    m = a1 << (lz - 1)                       # [2**30, 2**31): v = m / 2**31 in [0.5, 1)
    y = RECIP_K1 - ((RECIP_K2 * m) >> 31)    # Q30 estimate of 1/v
    for _ in range(RECIP_ITERATIONS):
        e = (1 << 31) - ((m * y) >> 31)      # Q30 of (2 - v*y)
        y = (y * e) >> 30
    # 1/x = y * 2**(lz - 30) in Q16
    sh = lz - 30
    out = np.where(sh > 0, y << np.maximum(sh, 0), round_shift(y, np.maximum(-sh, 0)))
    return np.where(pos, np.minimum(out, INT32_MAX), INT32_MAX)


def fx_rsqrt(a):
    """1/sqrt(x) for x = a / 2**16 > 0; returns INT32_MAX for a <= 0 or on overflow."""
    a = np.asarray(a, dtype=np.int64)
    pos = a > 0
    a1 = np.where(pos, a, 1)
    lz = clz32(a1)                           # 1..31; a's top set bit is 31 - lz
    e = lz - 2                               # shift that puts the top bit at 29 or 28 ...
    e = e - (e & 1)                          # ... made even (may be -2 for bit 30)
    m = np.where(e >= 0, a1 << np.maximum(e, 0), a1 >> np.maximum(-e, 0))  # [2**28, 2**30)
    y = RSQRT_K1 - ((RSQRT_K2 * m) >> 30)    # Q30 estimate of 1/sqrt(v), v = m / 2**30
    for _ in range(RSQRT_ITERATIONS):
        y2 = (y * y) >> 30                   # Q30
        t = (3 << 30) - ((m * y2) >> 30)     # Q30 of 3 - v*y*y
        y = (y * t) >> 31                    # Q30 of y*(3 - v*y*y)/2
    out = round_shift(y, 21 - e // 2)        # 1/sqrt(x) = y * 2**(e/2 - 21) in Q16
    return np.where(pos, np.minimum(out, INT32_MAX), INT32_MAX)
