"""The main demo (``make sim``): int8 matmul and one attention head compiled, loaded and run on
the RTL.

Runs ``C = A @ B`` on the Verilator-compiled RTL of a preset (default ``default``), checks every
element against numpy, compares the measured cycle count with the compiler's prediction and
prints MXM utilization and simulation speed. Then runs one causal attention head
(``softmax(Q K^T / sqrt(d)) V``) on a preset with a VXM (default ``mini``), checks it bit-exactly
against the numpy integer reference and prints the worst probability and output errors against
float64. ``--backend`` selects ``model``, ``amaranth`` or ``verilator``.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from openlpu.firmware.compiler import compile_matmul
from openlpu.params import PRESETS, preset

from .device import Device


def run_matmul(dev: Device, M: int, K: int, N: int, seed: int = 2026) -> dict:
    """Compile, load, run and check one matmul; returns the figures."""
    p = dev.params
    pkg = compile_matmul(p, M, K, N)
    rng = np.random.default_rng(seed)
    A = rng.integers(-128, 128, size=(M, K))
    B = rng.integers(-128, 128, size=(K, N))
    dev.load(pkg)
    dev.write_inputs({"A": A, "B": B})
    t0 = time.perf_counter()
    cycles = dev.run()
    wall = time.perf_counter() - t0
    C = dev.read_outputs()["C"]
    expected = A.astype(np.int32) @ B.astype(np.int32)
    return {
        "shape": (M, K, N),
        "pass": bool(np.array_equal(C, expected)),
        "mismatches": int(np.count_nonzero(C != expected)),
        "cycles": cycles,
        "predicted": pkg.predicted_cycles,
        "utilization": M * K * N / (cycles * p.vl * p.vl),
        "busy": pkg.meta["mxm_busy_cycles"] / cycles,
        "wall": wall,
        "words": sum(len(w) for w in pkg.queues.values()),
    }


def run_attention(dev: Device, seq: int, head_dim: int, causal: bool = True,
                  seed: int = 2026) -> dict:
    """Compile, load, run and check one attention head; returns the figures."""
    from openlpu.firmware.attention import attention_tensor_names, compile_attention
    from openlpu.verification import reference as ref

    p = dev.params
    scale = (1 / 32) ** 2 / np.sqrt(head_dim)     # Q and K dequantised by 1/32 each
    pkg = compile_attention(p, seq, seq, head_dim, scale=scale, causal=causal)
    rng = np.random.default_rng(seed)
    Q, K, V = (rng.integers(-128, 128, size=(seq, head_dim)) for _ in range(3))
    names = attention_tensor_names(1)
    dev.load(pkg)
    dev.write_inputs({names["Q"][0]: Q, names["K"][0]: K, names["V"][0]: V})
    cycles = dev.run()
    O = dev.read_outputs()[names["O"][0]]
    want = ref.attention_int(Q, K, V, ref.attention_consts(scale), causal)
    o_f, p_f = ref.attention_float(Q, K, V, scale, causal)
    return {
        "shape": (seq, head_dim),
        "pass": bool(np.array_equal(O, want["O"])),
        "mismatches": int(np.count_nonzero(O != want["O"])),
        "cycles": cycles,
        "predicted": pkg.predicted_cycles,
        "p_err": float(np.abs(want["P"] - p_f).max()),
        "o_err": float(np.abs(O - o_f).max()),
        "words": sum(len(w) for w in pkg.queues.values()),
    }


def measure_speed(dev: Device, seconds: float = 1.0) -> float:
    """Cycles per second of the loaded program, re-run for about ``seconds`` of wall time."""
    cycles, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        cycles += dev.run()
    return cycles / (time.perf_counter() - t0)


def generate_and_check(dev: Device, prompt, n_tokens: int, on_token=None, weights=None,
                       programs=None) -> dict:
    """Greedy generation with the decoder on ``dev`` (``host/models/decoder_chip.generate``),
    checked against the bit-exact integer reference (``decoder_ref.int_generate``, the same
    number of tokens): ``{"gen": ChipGeneration, "ref_tokens", "tokens_match", "logits_match",
    "mismatches"}`` (``mismatches``: logit elements that differ)."""
    from openlpu.host.models.decoder import load_weights
    from openlpu.host.models.decoder_chip import generate
    from openlpu.verification.models.decoder_ref import int_generate
    w = weights if weights is not None else load_weights(float_path=None)
    g = generate(dev, w, prompt, n_tokens, programs=programs, on_token=on_token)
    ref_tokens, ref_logits = int_generate(w, prompt, n_tokens, stop=False)
    same_shape = ref_logits.shape == g.logits.shape
    mism = int((ref_logits != g.logits).sum()) if same_shape else int(ref_logits.size)
    return {"gen": g, "ref_tokens": list(ref_tokens), "tokens_match": list(ref_tokens) == g.tokens,
            "logits_match": same_shape and mism == 0, "mismatches": mism}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="default", choices=sorted(PRESETS))
    ap.add_argument("--backend", default="verilator", choices=["model", "amaranth", "verilator"])
    ap.add_argument("--shape", action="append", default=None, metavar="MxKxN",
                    help="matmul shape (repeatable); default: a few shapes including tiling")
    ap.add_argument("--attention-preset", default="mini",
                    help="preset with a VXM for the attention head ('none' to skip)")
    args = ap.parse_args(argv)
    p = preset(args.preset)
    vl = p.vl
    shapes = ([tuple(int(x) for x in s.lower().split("x")) for s in args.shape] if args.shape else
              [(vl, vl, vl), (p.mxm_acc_words, 2 * vl, 2 * vl), (7, vl + 5, vl + 3)])
    print(f"OpenLPU demo: preset {p.name!r}: {p.superlanes} superlanes x {p.lanes} lanes "
          f"(VL={vl}), {p.streams} streams/direction, {2 * p.mem_slices} MEM slices, "
          f"MXM {vl}x{vl} int8")
    t0 = time.perf_counter()
    dev = Device.open(args.backend, p)
    print(f"backend: {args.backend} (ready in {time.perf_counter() - t0:.1f} s)")
    ok = True
    with dev:
        for M, K, N in shapes:
            r = run_matmul(dev, M, K, N)
            ok &= r["pass"] and r["cycles"] == r["predicted"]
            speed = measure_speed(dev, 0.5)
            print(f"matmul {M}x{K} @ {K}x{N} -> int32: "
                  f"{'PASS' if r['pass'] else 'FAIL'} vs numpy "
                  f"({r['mismatches']} mismatching elements); "
                  f"cycles measured {r['cycles']} / predicted {r['predicted']} "
                  f"{'(equal)' if r['cycles'] == r['predicted'] else '(DIFFERENT)'}; "
                  f"MXM utilization {100 * r['utilization']:.1f}% "
                  f"(busy {100 * r['busy']:.1f}% of cycles); {r['words']} instruction words; "
                  f"simulation {speed:,.0f} cycles/s (program re-run for 0.5 s, "
                  f"including the host's start and done polling)")
    if args.attention_preset != "none":
        pa = preset(args.attention_preset)
        with Device.open(args.backend, pa) as dev:
            seq, d = 3 * pa.vl, pa.vl
            r = run_attention(dev, seq, d)
            ok &= r["pass"] and r["cycles"] == r["predicted"]
            print(f"attention head on preset {pa.name!r} (causal, seq {seq}, head dim {d}): "
                  f"{'PASS' if r['pass'] else 'FAIL'} bit-exact vs the numpy integer reference "
                  f"({r['mismatches']} mismatching elements); cycles measured {r['cycles']} / "
                  f"predicted {r['predicted']} "
                  f"{'(equal)' if r['cycles'] == r['predicted'] else '(DIFFERENT)'}; "
                  f"{r['words']} instruction words; vs float64: probabilities within "
                  f"{r['p_err']:.4f}, int8 output within {r['o_err']:.2f}")
    print("RESULT:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
