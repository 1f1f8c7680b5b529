"""Measured error of the VXM fixed-point functions (openlpu.vxm_ops) against float64.

Prints the worst absolute error (in real units and in Q16.16 ulps) of VEXP over x in [-16, 0],
VRECIP and VRSQRT over positive Q16.16 inputs, and the worst softmax-probability error of the
integer attention algorithm (verification/reference.py) against float64 attention.
"""

import numpy as np

from openlpu import vxm_ops
from openlpu.verification.reference import attention_consts, attention_float, attention_int

Q = 65536.0


def main():
    x = np.arange(-16 * 65536, 1, 3)
    err = np.abs(vxm_ops.fx_exp(x) / Q - np.exp(x / Q))
    print(f"VEXP   x in [-16, 0]: max abs error {err.max():.3g} ({err.max() * Q:.2f} ulp)")
    rng = np.random.default_rng(0)
    a = np.unique(np.concatenate([np.arange(1, 1 << 20, 3), rng.integers(1, 1 << 31, 400_000)]))
    want = Q * Q / a
    ok = want < vxm_ops.INT32_MAX
    err = np.abs(vxm_ops.fx_recip(a)[ok] - want[ok])
    print(f"VRECIP a > 0 (not saturated): max error {err.max():.3f} ulp")
    want = Q / np.sqrt(a / Q)
    got = vxm_ops.fx_rsqrt(a)
    err = np.abs(got - want)
    rel = err / want
    print(f"VRSQRT a > 0: max error {err.max():.2f} ulp, max relative error {rel.max():.3g}")
    worst = 0.0
    for lq, lk, d, causal in [(1, 1, 16, False), (7, 7, 16, True), (32, 32, 32, False),
                              (96, 96, 32, True), (96, 96, 16, False)]:
        for seed in range(3):
            r = np.random.default_rng(seed)
            Qm, K, V = (r.integers(-128, 128, (n, d)) for n in (lq, lk, lk))
            scale = (1 / 32) ** 2 / np.sqrt(d)      # Q and K dequantised by 1/32 each
            p_int = attention_int(Qm, K, V, attention_consts(scale), causal)["P"]
            _, p_f = attention_float(Qm, K, V, scale, causal)
            worst = max(worst, np.abs(p_int - p_f).max())
    print(f"attention probabilities (integer algorithm vs float64): max abs error {worst:.3g}")


if __name__ == "__main__":
    main()
