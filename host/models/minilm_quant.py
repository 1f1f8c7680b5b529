"""Integer quantization of all-MiniLM-L6-v2's encoder for the chip (int8 MXM, VXM ops).

:func:`quantize` turns the published float weights and activation statistics calibrated on a
fixed set of sentences (:func:`calibrate`, ``host/models/calibration.txt``, run through the
ONNX graph on onnxruntime) into plain integer parameters (:class:`MiniLMQuant`, dataclasses of
ints and numpy integer arrays; :meth:`MiniLMQuant.to_dict` gives a JSON-able dict) that the
compiler reads and that ``verification/models/minilm_int.py`` executes as the integer
reference. Every rounding is the chip's: round half up (``vxm_ops.round_shift``,
``vxm_ops.requantize``, ``MULSHR``), saturating to the destination type.

Number formats (``s_*`` are the real values of one integer unit, all symmetric, no zero point):

* layer input / LayerNorm output: int8 ``x8`` (scale ``s_x8``, the matmul operand) and int16
  ``x16`` (scale ``s_x16``, the residual path) from the same int32 value;
* linear: int8 weights with one scale per output channel (``w_scale[c] = max_k |W_eff[k, c]| /
  127``, where ``W_eff[k, c] = W[c, k] * s_in[k]`` absorbs per-input-channel activation scales,
  e.g. the per-head scales of the attention context); int32 bias ``round(b[c] / w_scale[c])`` in
  accumulator units; the int32 accumulator ``x @ weight + bias`` is rescaled by a
  :class:`Rescale` with one multiplier per output channel and one shift;
* Q, K, V: int8 with one scale per head (Q and K per head set the head's
  :class:`~openlpu.firmware.attention.AttentionConsts`; V's per-head scale is the context's and
  is folded into the output projection's weights);
* residual sums: int16 (``res1``, ``res2``, scale calibrated with a margin), the LayerNorm input;
* FFN intermediate: int16 before GELU (``ff1``), int8 with one scale per channel after it
  (:class:`GeluQuant`: ReLU minus a 256-entry correction table read by ``GATHER``).

LayerNorm constants (:class:`LayerNormQuant`) describe the VXM sequence of
``verification/models/minilm_int.layer_norm_int``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, is_dataclass

import numpy as np

from openlpu import vxm_ops as ops
from openlpu.firmware.attention import attention_consts
from openlpu.firmware.vxmconst import q31_normalise

from .minilm import MiniLM, attention_bias, calibration_sentences
from .minilm_onnx import INTERMEDIATES, build_encoder_onnx, run_onnxruntime

__all__ = ["INT8_MAX", "INT16_MAX", "SQ_SHIFT", "V_TOP", "QuantOptions", "Rescale",
           "LinearQuant", "AttentionQuant", "LayerNormQuant", "GeluQuant", "LayerQuant",
           "MiniLMQuant", "GELU_RANGE", "GELU_ENTRIES", "make_rescale", "quantize_linear",
           "quantize_layer_norm", "quantize_gelu", "gelu_table", "calibrate", "quantize",
           "quantize_input", "dequantize_output",
           "round_half_up"]

INT8_MAX = 127
INT16_MAX = 32767
SQ_SHIFT = 10     # LayerNorm: d^2 >> 10, so the sum of 384 squares of int16 deviations fits int32
V_TOP = 29        # LayerNorm: the largest variance + eps is scaled below 2**V_TOP


def round_half_up(x) -> np.ndarray:
    """float -> int64 rounding half up (the chip's rounding), for compile-time constants."""
    return np.floor(np.asarray(x, dtype=np.float64) + 0.5).astype(np.int64)


@dataclass(frozen=True)
class QuantOptions:
    """Calibration choices.

    ``act_percentile``: the range of an int8 activation is this percentile of its absolute
    values over the calibration tokens (100 = the maximum); ``res_margin``: an int16 tensor
    maps ``margin * max |x|`` to 32767 (headroom for sentences beyond the calibration set;
    int16 saturates, never wraps); ``smooth`` (0..1): the
    int8 matmul inputs made by a LayerNorm (and the host's embedding output) have one scale per
    channel, ``amax_c**smooth * amax**(1 - smooth) / 127`` (``amax_c`` the channel's range,
    ``amax`` the tensor's): 0 is one scale per tensor, 1 one per channel's own range. The
    LayerNorm's final ``VREQ`` has a multiplier per channel anyway, and the next linear folds
    the input scales into its weights, so per-channel scales cost nothing on the chip;
    ``gelu_smooth``: the same for the GELU output (FFN 2's input); ``wide``: the matmuls whose
    input is int16 (two MXM passes, :class:`LinearQuant`) instead of int8, any of ``"qkv"``
    (input: the layer input ``x16``), ``"ff1"`` (LayerNorm 1's int16 output), ``"ff2"`` (GELU's
    output in int16, in the FFN intermediate's unit).
    """
    act_percentile: float = 100.0
    res_margin: float = 2.0
    smooth: float = 0.5
    gelu_smooth: float = 0.5
    wide: tuple = ("ff2",)

    def __post_init__(self):
        if not 50.0 <= self.act_percentile <= 100.0:
            raise ValueError(f"act_percentile must be in 50..100, not {self.act_percentile!r}")
        bad = set(self.wide) - {"qkv", "ff1", "ff2"}
        if bad:
            raise ValueError(f"wide names unknown matmuls {sorted(bad)} (qkv, ff1, ff2)")
        for name in ("smooth", "gelu_smooth"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in 0..1, not {getattr(self, name)!r}")
        if not self.res_margin >= 1.0:
            raise ValueError(f"res_margin must be >= 1, not {self.res_margin!r}")


@dataclass(frozen=True)
class Rescale:
    """``y = saturate_dtype(round_half_up(x * mult[c] / 2**shift))`` per channel ``c``.

    On the VXM: ``dtype`` 0 (int8) is ``VREQ`` (``vxm_ops.requantize(x, mult, shift - 31)``,
    so ``31 <= shift <= 62``); dtype 1 (int16) and 2 (int32) are ``MULSHR`` at int32 with
    ``imm = shift`` (0..62), for int16 followed by a saturating cast. ``mult`` (int64, one per
    channel, or one for all) is a constant vector operand, every value in 1..2**31 - 1.
    """
    mult: np.ndarray
    shift: int
    dtype: int


def make_rescale(ratio, dtype: int, what: str) -> Rescale:
    """The :class:`Rescale` multiplying by ``ratio`` (> 0, scalar or per channel): the largest
    common shift that keeps every multiplier below 2**31. Raises ValueError naming ``what``."""
    r = np.atleast_1d(np.asarray(ratio, dtype=np.float64))
    if r.size == 0 or not np.isfinite(r).all() or (r <= 0).any():
        raise ValueError(f"{what}: rescale ratios must be positive and finite")
    if dtype not in (0, 1, 2):
        raise ValueError(f"{what}: dtype must be 0, 1 or 2, not {dtype!r}")
    shift = int(math.floor(math.log2((2 ** 31 - 1) / r.max())))
    while shift > 0 and round_half_up(r.max() * 2.0 ** shift) >= 2 ** 31:
        shift -= 1
    shift = min(shift, 62)
    lo = 31 if dtype == 0 else 0
    if shift < lo:
        raise ValueError(f"{what}: ratio {r.max():.4g} is too large for a "
                         f"{ops.DTYPE_NAMES[dtype]} rescale (needs shift >= {lo})")
    mult = round_half_up(r * 2.0 ** shift)
    if (mult < 1).any():
        raise ValueError(f"{what}: ratios span too wide a range for one shift "
                         f"({r.min():.3g} .. {r.max():.3g})")
    return Rescale(mult, shift, dtype)


@dataclass(frozen=True)
class LinearQuant:
    """``acc = x @ weight + bias`` (int8 x int8 -> int32, MXM; bias added on the VXM), then
    ``y = out(acc)`` (:class:`Rescale`). ``acc_scale[c]``: real value of one accumulator unit of
    output channel ``c``; ``out_scale``: real value of one output unit (scalar or per channel).

    ``in_dtype`` 1: the input is int16, multiplied as its two byte planes in two MXM passes:
    ``hi = x >> 8`` (the high byte, signed) and ``lo = (x & 0xFF) - 128`` (the low byte with
    its top bit flipped, ``VXOR 0x80``, signed), ``x = 256 hi + lo + 128``; then
    ``acc = (hi @ weight << (8 - wide_shift)) + round_shift(lo @ weight + lo_bias, wide_shift)
    + bias`` with ``lo_bias = 128 * colsum(weight)``; ``wide_shift`` (0..8) keeps ``acc`` within
    int32 for every input and a bias below 2**28 (0 for 384 inputs, 2 for 1536), and one
    accumulator unit is ``2**wide_shift`` weight units.
    """
    weight: np.ndarray      # int8 (in, out)
    bias: np.ndarray        # int32 (out,)
    acc_scale: np.ndarray   # float64 (out,)
    out: Rescale
    out_scale: np.ndarray   # float64 (out,)
    in_dtype: int = 0
    wide_shift: int = 0
    lo_bias: np.ndarray | None = None


def quantize_linear(weight, bias, in_scale, out_scale, out_dtype: int, what: str,
                    in_dtype: int = 0) -> LinearQuant:
    """Quantize ``y = x W^T + b`` (``weight`` (out, in) as stored by BERT) for inputs whose unit
    is ``in_scale`` (scalar or per input channel) and outputs in ``out_scale`` units; the input
    is int8 (``in_dtype`` 0) or int16 (1)."""
    if in_dtype not in (0, 1):
        raise ValueError(f"{what}: in_dtype must be 0 (int8) or 1 (int16), not {in_dtype!r}")
    W = np.asarray(weight, dtype=np.float64).T
    n_in, n_out = W.shape
    s_in = np.broadcast_to(np.asarray(in_scale, dtype=np.float64), (n_in,))
    s_out = np.broadcast_to(np.asarray(out_scale, dtype=np.float64), (n_out,)).copy()
    We = W * s_in[:, None]
    amax = np.abs(We).max(axis=0)
    ws = np.where(amax > 0, amax / INT8_MAX, 1.0)
    wq = np.clip(round_half_up(We / ws), -INT8_MAX, INT8_MAX).astype(np.int8)
    wide_shift, lo_bias = 0, None
    if in_dtype == 1:
        # |hi @ w| <= n_in 128 127 and |lo @ w + lo_bias| <= n_in 255 127 (the worst cases)
        while (n_in * 128 * 127 * 2 ** (8 - wide_shift) + n_in * 255 * 127 / 2 ** wide_shift
               + 2 ** 28) >= 2 ** 31:
            wide_shift += 1
        lo_bias = 128 * wq.astype(np.int64).sum(axis=0)
    acc = ws * 2.0 ** wide_shift
    bq = round_half_up(np.asarray(bias, dtype=np.float64) / acc)
    if np.abs(bq).max() >= 2 ** 28:
        raise ValueError(f"{what}: a bias does not fit int32 in accumulator units")
    return LinearQuant(wq, bq.astype(np.int64), acc, make_rescale(acc / s_out, out_dtype, what),
                       s_out, in_dtype, wide_shift, lo_bias)


@dataclass(frozen=True)
class AttentionQuant:
    """Per head ``h``: Q, K, V int8 in units ``q_scale[h]``, ``k_scale[h]``, ``v_scale[h]``;
    ``consts[h] = attention_consts(q_scale[h] k_scale[h] / sqrt(head_dim))`` (the chip's
    attention kernel, ``firmware/attention.py``); the context comes out in ``v_scale[h]``."""
    heads: int
    head_dim: int
    q_scale: np.ndarray
    k_scale: np.ndarray
    v_scale: np.ndarray
    consts: tuple           # AttentionConsts per head


@dataclass(frozen=True)
class LayerNormQuant:
    """Constants of the integer LayerNorm of an int16 input ``r`` (unit ``in_scale``) over
    ``n`` channels (``verification/models/minilm_int.layer_norm_int``):

    1. ``s = sum r``; ``mu = MULSHR(s, mean_mult, mean_shift)`` (= round(s / n));
       ``d = r - mu`` (within +-2**16);
    2. the sum of squares in two ranges: ``ss = sum MULSHR(d, d, sq_shift)`` (never overflows)
       and ``ss_fine = sum MUL(d, d)`` (exact when ``ss < small_ss``); the variance in units of
       ``r^2`` with ``16 + 2 v_shift`` fraction bits, ``v = MULSHR(ss, ms_mult, ms_shift) +
       eps_q``, and with ``16 + 2 v_shift_fine`` bits, ``v_fine = MULSHR(ss_fine,
       ms_mult_fine, ms_shift_fine) + eps_q_fine``;
    3. ``rs = VRSQRT(v)`` (Q16.16 of ``2**-v_shift / sqrt(var + eps)``), ``rs_fine =
       MULSHR(VRSQRT(v_fine), 2**(v_shift_fine - v_shift), 0)`` (the same quantity, more
       precise); ``rs = VSEL(ss < small_ss, rs_fine, rs)``. The fine range keeps rows of small
       variance precise (to fit the worst case of int16 input, a variance of 2**30, ``v`` is
       the variance / 4, and ``d^2 >> sq_shift`` drops small deviations), the coarse one
       serves rows of large variance;
    4. ``t = MULSHR(d, rs, rs_shift)`` = ``(r - mean) / sigma`` with ``frac_bits`` fraction
       bits; ``u = MULSHR(t, gamma_q, gamma_shift) + beta_q`` (``gamma_q = gamma
       2**gamma_shift``, ``beta_q = beta 2**frac_bits``, per channel) = the LayerNorm output
       with ``frac_bits`` fraction bits, int32;
    5. ``y8 = out8(u)`` (int8, unit ``out8_scale[c]``) and ``y16 = out16(u)`` (int16,
       ``out16_scale``).
    """
    n: int
    in_scale: float
    mean_mult: int
    mean_shift: int
    sq_shift: int
    small_ss: int
    v_shift: int
    ms_mult: int
    ms_shift: int
    eps_q: int
    v_shift_fine: int
    ms_mult_fine: int
    ms_shift_fine: int
    eps_q_fine: int
    rs_shift: int
    frac_bits: int
    gamma_q: np.ndarray
    gamma_shift: int
    beta_q: np.ndarray
    out8: Rescale
    out8_scale: np.ndarray  # float64 (n,): one unit per channel
    out16: Rescale
    out16_scale: float


def _variance_format(var_max: float, n: int, sq_shift: int, eps_r: float, what: str):
    """``(v_shift, ms_mult, ms_shift, eps_q)``: the variance ``sum(d^2 >> sq_shift) 2**sq_shift
    / n`` in fixed point with ``16 + 2 v_shift`` fraction bits, its largest value below
    2**V_TOP."""
    v_shift = int(math.floor((V_TOP - 16 - math.log2(var_max + eps_r)) / 2))
    frac = 2.0 ** (16 + 2 * v_shift)
    ms_mult, ms_shift = q31_normalise(2.0 ** sq_shift / n * frac, f"{what}: 2**sq_shift / n")
    return v_shift, ms_mult, ms_shift, int(round_half_up(eps_r * frac))


def quantize_layer_norm(gamma, beta, eps: float, in_scale: float, out8_scale,
                        out16_scale: float, what: str) -> LayerNormQuant:
    """Constants of LayerNorm(gamma, beta, eps) for an int16 input of unit ``in_scale``;
    ``out8_scale`` is one unit per channel (or one for all)."""
    g = np.asarray(gamma, dtype=np.float64).reshape(-1)
    b = np.asarray(beta, dtype=np.float64).reshape(-1)
    n = g.size
    if b.shape != g.shape or n < 2:
        raise ValueError(f"{what}: gamma and beta must be vectors of one length >= 2")
    if not (np.isfinite(g).all() and np.isfinite(b).all()):
        raise ValueError(f"{what}: gamma and beta must be finite")
    for name, v in (("in_scale", in_scale), ("out8_scale", out8_scale),
                    ("out16_scale", out16_scale)):
        if not (np.isfinite(v).all() and (np.asarray(v) > 0).all()):
            raise ValueError(f"{what}: {name} must be positive and finite, not {v!r}")
    mean_mult, mean_shift = q31_normalise(1.0 / n, f"{what}: 1/n")
    # d = r - mu is within +-2**16, so (d^2 >> sq_shift) summed over n fits int32 ...
    dmax = 2 ** 16
    sq_max = int(ops.round_shift(dmax * dmax, SQ_SHIFT))
    if n * sq_max >= 2 ** 31:
        raise ValueError(f"{what}: {n} channels of int16 overflow the int32 sum of squares")
    # ... and below small_ss the exact sum of d^2 fits int32 too
    small_ss = 2 ** (31 - SQ_SHIFT - 1)
    assert 2 ** SQ_SHIFT * (small_ss + n) < 2 ** 31
    eps_r = float(eps) / float(in_scale) ** 2            # eps in units of r^2
    # the variance of int16 values is at most 2**30 (Popoviciu), plus the rounding of mu
    v_shift, ms_mult, ms_shift, eps_q = _variance_format(2.0 ** 30 * (1 + 2.0 ** -10), n,
                                                         SQ_SHIFT, eps_r, what)
    v_shift_f, ms_mult_f, ms_shift_f, eps_q_f = _variance_format(2.0 ** 31 / n, n, 0, eps_r,
                                                                 what)
    for vs, mm, msh, eq in ((v_shift, ms_mult, ms_shift, eps_q),
                            (v_shift_f, ms_mult_f, ms_shift_f, eps_q_f)):
        top = n * sq_max if vs == v_shift else 2 ** 31 - 1
        if int(ops.binary_op("MULSHR", top, mm, 2, msh)) + eq >= 2 ** 31 - 1:
            raise ValueError(f"{what}: eps {eps!r} is too large for in_scale {in_scale!r}")
    # t = d rs / 2**rs_shift = (d / sigma) 2**(16 - v_shift - rs_shift); |d / sigma| <= sqrt(n)
    gmax, bmax = float(np.abs(g).max()), float(np.abs(b).max())
    frac_bits = int(math.floor(math.log2(2.0 ** 30 / (math.sqrt(n) * max(gmax, 1.0) + bmax))))
    frac_bits = min(frac_bits, 16 - v_shift)
    rs_shift = 16 - v_shift - frac_bits
    gamma_shift = min(62, int(math.floor(math.log2((2 ** 31 - 1) / max(gmax, 1e-30)))))
    gamma_q = round_half_up(g * 2.0 ** gamma_shift)
    beta_q = round_half_up(b * 2.0 ** frac_bits)
    unit = 2.0 ** -frac_bits
    return LayerNormQuant(n, float(in_scale), mean_mult, mean_shift, SQ_SHIFT, small_ss,
                          v_shift, ms_mult, ms_shift, eps_q, v_shift_f, ms_mult_f, ms_shift_f,
                          eps_q_f, rs_shift, frac_bits, gamma_q, gamma_shift, beta_q,
                          make_rescale(unit / np.asarray(out8_scale, dtype=np.float64), 0,
                                       f"{what}: int8 output"),
                          np.broadcast_to(np.asarray(out8_scale, dtype=np.float64), (n,)).copy(),
                          make_rescale(unit / out16_scale, 1, f"{what}: int16 output"),
                          float(out16_scale))


GELU_RANGE = 4.0        # the GELU table covers |x| in [0, 4]; beyond, |x| Phi(-|x|) < 1.3e-4
GELU_ENTRIES = 256      # GATHER's map is one byte: 256 table words


@dataclass(frozen=True)
class GeluQuant:
    """GELU of the int16 FFN intermediate ``x`` (unit ``in_scale``) to int8 (unit
    ``out_scale[c]`` per channel), as ``gelu(x) = relu(x) - c(|x|)`` with
    ``c(a) = a Phi(-a)`` (0 <= c <= 0.17, and below 1.3e-4 for ``a`` >= 4):

    1. ``idx = VMIN(MULSHR(VABS(x), idx.mult, idx.shift), 255)`` = round(|x| / step), ``step =
       GELU_RANGE / 255``;
    2. ``cq = table[idx]`` (``GATHER`` with ``idx`` as the map: 256 words, each holding
       ``table[j] = round(c(j step) / c_scale)`` (0..127, ``c_scale = max c / 127``) in every
       lane);
    3. ``g = VSUB(VRELU(x), MULSHR(cq, c_to_x.mult, c_to_x.shift))`` (int32, unit ``in_scale``);
    4. ``y = VREQ(g, out)`` (int8, one multiplier per channel); or, when FFN 2 takes an int16
       input (``QuantOptions.wide``), ``y = cast16(MULSHR(g, out))`` in the input's unit.

    Why this form: the MEM's ``GATHER`` gives any function of a byte in one pass, but GELU's
    inputs span +-25 in the first layers while most values are below 1: an int8 -> int8 table
    on the whole range loses most values to rounding (17 % relative error measured on layer 0).
    ``relu`` carries the unbounded part exactly; the table only holds the small bounded
    correction, indexed with a step of 0.016, so the largest error of ``g`` is about
    0.5 step max|c'| + c_scale / 2 = 0.005. The per-channel output scales follow the
    calibrated per-channel ranges (``QuantOptions.smooth``) and fold into FFN 2's weights.
    """
    in_scale: float
    idx: Rescale
    table: np.ndarray       # int64 (256,), values 0..127
    c_scale: float
    c_to_x: Rescale
    out: Rescale
    out_scale: np.ndarray   # float64 (channels,)


def _phi_neg(a):
    a = np.asarray(a, dtype=np.float64)
    return 0.5 * (1.0 - np.vectorize(math.erf)(a / math.sqrt(2.0)))


def gelu_table():
    """``(table, c_scale)``: the 256 int8 values of ``c(a) = a Phi(-a)`` on ``a = j step``."""
    a = np.arange(GELU_ENTRIES) * (GELU_RANGE / (GELU_ENTRIES - 1))
    c = a * _phi_neg(a)
    c_scale = float(c.max()) / INT8_MAX
    return np.clip(round_half_up(c / c_scale), 0, INT8_MAX), c_scale


def quantize_gelu(in_scale: float, out_scale, what: str, out_dtype: int = 0) -> GeluQuant:
    """:class:`GeluQuant` for an int16 input of unit ``in_scale`` and int8 (``out_dtype`` 0)
    or int16 (1) outputs of units ``out_scale`` (one per channel)."""
    out_scale = np.asarray(out_scale, dtype=np.float64).reshape(-1)
    table, c_scale = gelu_table()
    step = GELU_RANGE / (GELU_ENTRIES - 1)
    return GeluQuant(float(in_scale), make_rescale(in_scale / step, 2, f"{what}: index"),
                     table, c_scale, make_rescale(c_scale / in_scale, 2, f"{what}: table"),
                     make_rescale(in_scale / out_scale, out_dtype, f"{what}: output"),
                     out_scale)


@dataclass(frozen=True)
class LayerQuant:
    """One encoder layer. Inputs ``x8`` (unit ``in8_scale``) and ``x16`` (``in16_scale``).

    ``q k v`` (int8 per head) -> attention -> ``o`` (to int32 in ``ln1.in_scale`` units) +
    ``res1_x(x16)`` -> int16 -> ``ln1`` -> ``ff1`` (int16) -> ``gelu`` (int8) -> ``ff2`` (int32
    in ``ln2.in_scale`` units) + ``res2_x(ln1 int16 output)`` -> int16 -> ``ln2`` (the next
    layer's ``x8`` and ``x16``).
    """
    in8_scale: np.ndarray   # float64 (hidden,): one unit per channel
    in16_scale: float
    q: LinearQuant
    k: LinearQuant
    v: LinearQuant
    attn: AttentionQuant
    o: LinearQuant
    res1_x: Rescale
    ln1: LayerNormQuant
    ff1: LinearQuant
    gelu: GeluQuant
    ff2: LinearQuant
    res2_x: Rescale
    ln2: LayerNormQuant


@dataclass(frozen=True)
class MiniLMQuant:
    """The quantized encoder: ``layers`` in order; the host quantizes the embedding output to
    ``x8`` / ``x16`` (:func:`quantize_input`) and dequantizes the last layer's int16 output
    (:func:`dequantize_output`)."""
    hidden: int
    heads: int
    intermediate: int
    eps: float
    options: QuantOptions
    layers: tuple = field(default_factory=tuple)

    @property
    def in8_scale(self) -> float:
        return self.layers[0].in8_scale

    @property
    def in16_scale(self) -> float:
        return self.layers[0].in16_scale

    @property
    def out_scale(self) -> float:
        return self.layers[-1].ln2.out16_scale

    def to_dict(self) -> dict:
        """Plain nested dict / list / int / float (JSON-able) of every parameter."""
        return _plain(self)


def _plain(v):
    if is_dataclass(v):
        return {f.name: _plain(getattr(v, f.name)) for f in fields(v)}
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, (tuple, list)):
        return [_plain(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    return v


# -- calibration -------------------------------------------------------------------------------
def calibrate(model: MiniLM, sentences=None) -> dict:
    """Activation statistics: ``{"embed": X, "layers": [{name: X}]}`` where each ``X`` is a
    float32 ``(tokens, width)`` array of the tensor's values on the real (unpadded) tokens of
    ``sentences`` (default: :func:`calibration_sentences`), names as in
    ``minilm_onnx.INTERMEDIATES``. Runs the ONNX graph on onnxruntime."""
    sentences = calibration_sentences() if sentences is None else list(sentences)
    ids, mask = model.tokenize(sentences)
    h = model.embed(ids)
    res = run_onnxruntime(build_encoder_onnx(model, intermediates=True), h,
                          attention_bias(mask), outputs=None)
    keep = mask.astype(bool)
    return {"embed": h[keep],
            "layers": [{n: res[f"l{i}.{n}"][keep] for n in INTERMEDIATES}
                       for i in range(model.config.layers)]}


def _amax(x, pct: float) -> float:
    a = np.abs(np.asarray(x, dtype=np.float64))
    v = float(a.max() if pct >= 100.0 else np.percentile(a, pct))
    return v if v > 0 else 1.0


def _head_amax(x, heads: int, pct: float) -> np.ndarray:
    x = np.asarray(x)
    return np.array([_amax(c, pct) for c in np.split(x, heads, axis=1)])


def quantize(model: MiniLM, stats: dict | None = None,
             options: QuantOptions | None = None) -> MiniLMQuant:
    """The integer parameters of the whole encoder (``stats`` from :func:`calibrate`)."""
    opt = QuantOptions() if options is None else options
    stats = calibrate(model) if stats is None else stats
    c = model.config
    if len(stats.get("layers", ())) != c.layers:
        raise ValueError(f"calibration statistics cover {len(stats.get('layers', ()))} layers, "
                         f"the model has {c.layers}")
    pct, hd = opt.act_percentile, c.head_dim

    def s8(x, p=pct):
        return _amax(x, p) / INT8_MAX

    def s8c(x, alpha=opt.smooth):         # per-channel int8 scales (LayerNorm, GELU outputs)
        amax = _amax(x, pct)                # (a channel that is ~0 everywhere keeps 1/1000)
        amax_c = np.maximum([_amax(col, pct) for col in np.asarray(x).T], amax * 1e-3)
        return amax_c ** alpha * amax ** (1.0 - alpha) / INT8_MAX

    def s16(x):
        return _amax(x, 100.0) * opt.res_margin / INT16_MAX

    in8, in16 = s8c(stats["embed"]), s16(stats["embed"])
    layers = []
    for i in range(c.layers):
        W, st, p = model.layer(i), stats["layers"][i], f"layer {i}"
        qs = _head_amax(st["q"], c.heads, pct) / INT8_MAX
        ks = _head_amax(st["k"], c.heads, pct) / INT8_MAX
        vs = _head_amax(st["v"], c.heads, pct) / INT8_MAX

        def lin(name, s_in, s_out, dtype, what, in_dtype=0):
            return quantize_linear(W[name + ".weight"], W[name + ".bias"], s_in, s_out, dtype,
                                   f"{p} {what}", in_dtype)

        wq = "qkv" in opt.wide
        s_x = in16 if wq else in8
        q = lin("attention.self.query", s_x, np.repeat(qs, hd), 0, "query", int(wq))
        k = lin("attention.self.key", s_x, np.repeat(ks, hd), 0, "key", int(wq))
        v = lin("attention.self.value", s_x, np.repeat(vs, hd), 0, "value", int(wq))
        consts = tuple(attention_consts(float(qs[h] * ks[h] / math.sqrt(hd)))
                       for h in range(c.heads))
        attn = AttentionQuant(c.heads, hd, qs, ks, vs, consts)
        r1 = s16(st["res1"])
        o = lin("attention.output.dense", np.repeat(vs, hd), r1, 2, "attention output")
        res1_x = make_rescale(in16 / r1, 2, f"{p} residual 1")
        a8, a16 = s8c(st["ln1"]), s16(st["ln1"])
        ln1 = quantize_layer_norm(W["attention.output.LayerNorm.weight"],
                                  W["attention.output.LayerNorm.bias"], c.eps, r1, a8, a16,
                                  f"{p} LayerNorm 1")
        f1 = s16(st["ff1"])
        w1 = "ff1" in opt.wide
        ff1 = lin("intermediate.dense", a16 if w1 else a8, f1, 1, "FFN 1", int(w1))
        w2 = "ff2" in opt.wide
        gs = np.full(c.intermediate, f1) if w2 else s8c(st["gelu"], opt.gelu_smooth)
        gelu = quantize_gelu(f1, gs, f"{p} GELU", int(w2))
        r2 = s16(st["res2"])
        ff2 = lin("output.dense", gs, r2, 2, "FFN 2", int(w2))
        res2_x = make_rescale(a16 / r2, 2, f"{p} residual 2")
        o8, o16 = s8c(st["out"]), s16(st["out"])
        ln2 = quantize_layer_norm(W["output.LayerNorm.weight"], W["output.LayerNorm.bias"],
                                  c.eps, r2, o8, o16, f"{p} LayerNorm 2")
        layers.append(LayerQuant(in8, in16, q, k, v, attn, o, res1_x, ln1, ff1, gelu, ff2,
                                 res2_x, ln2))
        in8, in16 = o8, o16
    return MiniLMQuant(c.hidden, c.heads, c.intermediate, c.eps, opt, tuple(layers))


def quantize_input(q: MiniLMQuant, hidden):
    """Host side: the embedding output (float) as the first layer's ``(x8, x16)`` (int64
    arrays; round half up, saturating)."""
    h = np.asarray(hidden, dtype=np.float64)
    x8 = ops.saturate(round_half_up(h / np.asarray(q.in8_scale)), 0)
    x16 = ops.saturate(round_half_up(h / q.in16_scale), 1)
    return x8, x16


def dequantize_output(q: MiniLMQuant, y16) -> np.ndarray:
    """Host side: the last layer's int16 output as float32 hidden states."""
    return (np.asarray(y16, dtype=np.float64) * q.out_scale).astype(np.float32)
