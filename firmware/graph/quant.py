"""Requantization constants: a real factor as the VXM's ``(multiplier, shift)``.

``VREQ`` computes ``saturate8(round(x * multiplier / 2**(31 + shift)))`` with an int32
``multiplier`` and ``shift`` in 0..31 (openlpu/vxm_ops.py ``requantize``); :func:`multiplier_for`
picks the pair closest to ``x * factor``: the largest shift whose multiplier still fits int32.
"""

from __future__ import annotations

import math

__all__ = ["multiplier_for", "DTYPE_CODE", "rescale_for", "gelu_quant", "gelu_table"]

#: dtype name -> the ``Rescale`` / emitter dtype code (0 int8, 1 int16, 2 int32)
DTYPE_CODE = {"int8": 0, "int16": 1, "int32": 2}


def rescale_for(ratio, dtype: str, where: str):
    """The :class:`~openlpu.host.models.minilm_quant.Rescale` multiplying by ``ratio`` (one
    value or one per channel) into ``dtype``: one shift for all channels
    (``minilm_quant.make_rescale``), as the per-channel epilogues of the linear, GELU and
    residual kernels take it. Raises ValueError naming ``where``."""
    from openlpu.host.models.minilm_quant import make_rescale
    return make_rescale(ratio, DTYPE_CODE[dtype], where)


def gelu_quant(in_scale: float, out_scale, out_dtype: str, where: str):
    """The :class:`~openlpu.host.models.minilm_quant.GeluQuant` of an int16 input of unit
    ``in_scale`` and an ``out_dtype`` output of unit(s) ``out_scale``
    (``minilm_quant.quantize_gelu``)."""
    from openlpu.host.models.minilm_quant import quantize_gelu
    return quantize_gelu(in_scale, out_scale, where, DTYPE_CODE[out_dtype])


def multiplier_for(factor: float, where: str = "requantize") -> tuple[int, int]:
    """``(multiplier, shift)`` with ``multiplier / 2**(31 + shift)`` closest to ``factor``
    (0 < factor < 1); raises ValueError naming ``where`` for a factor it cannot express."""
    if not (isinstance(factor, (int, float)) and math.isfinite(factor) and factor > 0):
        raise ValueError(f"{where}: the requantize factor must be a positive number, "
                         f"not {factor!r}")
    for shift in range(31, -1, -1):
        m = round(factor * 2.0 ** (31 + shift))
        if m < (1 << 31):
            if m == 0:
                break
            return int(m), shift
    if factor * 2.0 ** 62 < 0.5:
        raise ValueError(f"{where}: factor {factor:.3g} is below the smallest the VXM "
                         f"multiplier expresses (2**-62)")
    raise ValueError(f"{where}: factor {factor:.6g} is not below 1 (in_scale * w_scale / "
                     f"out_scale); VREQ only scales down")


def gelu_table():
    """The 256 GELU correction entries the gelu kernel's ``GATHER`` reads
    (``minilm_quant.gelu_table``)."""
    from openlpu.host.models.minilm_quant import gelu_table as table
    return table()[0]
