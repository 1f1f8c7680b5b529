"""The decoder generating tokens on the chip (``host/models/decoder_chip.py``): cycles of the
prefill and of each decode step beside two bounds, with every token and logit checked against
the integer reference (``verification/models/decoder_ref.py``).

* weight-streaming bound of a decode step: the int8 weight bytes one token streams into the
  MXM (every matrix once) over the bytes per cycle the MXM takes in: ``VL`` per ``LW`` and
  ``VL * isa.wide_load_feed_rows`` per ``LWW`` (both printed);
* ``sum(M*K*N) / VL^2``: the MXM's compute bound (one ``VL``-wide row of a ``VL x VL`` weight
  plane per cycle), over the model's matmuls and over the attention's two products.

Also prints the cycles of each program of one decode step (they run one after the other; the
host writes each program's inputs in between, not counted in the chip's cycles).

    python benchmarks/decoder_chip.py [--backend model|verilator] [--tokens N] [--prompt DIGITS]
"""

from __future__ import annotations

import argparse
import math
import re
import time
from collections import defaultdict

from openlpu import isa
from openlpu.host.device import Device
from openlpu.host.models.decoder import ReverseTask, Tokenizer, load_weights
from openlpu.host.models.decoder_chip import DecoderPrograms, generate, weight_bytes_per_token
from openlpu.params import preset
from openlpu.verification.models.decoder_ref import int_generate


def mkn(cfg, rows: int, keys: int) -> tuple:
    """``(linear, attention)`` sums of ``M*K*N`` of ``rows`` rows against ``keys`` keys."""
    d, f = cfg.d_model, cfg.d_ff
    lin = cfg.n_layers * (4 * rows * d * d + 2 * rows * d * f) + rows * d * cfg.vocab
    att = cfg.n_layers * cfg.n_heads * 2 * rows * keys * cfg.head_dim
    return lin, att


def run(backend: str, prompt, n_tokens: int, params=None) -> dict:
    """Generate on ``backend``; returns the figures (raises AssertionError on a mismatch)."""
    w = load_weights(float_path=None)
    p = params or preset("base")
    progs = DecoderPrograms(w, p)
    t0 = time.perf_counter()
    with Device.open(backend, p) as dev:
        g = generate(dev, w, prompt, n_tokens, programs=progs)
    wall = time.perf_counter() - t0
    ref_tokens, ref_logits = int_generate(w, prompt, n_tokens, stop=False)
    assert g.tokens == list(ref_tokens), (g.tokens, ref_tokens)
    assert (g.logits == ref_logits).all(), "logits differ from the integer reference"
    assert g.cycles == g.predicted, (g.cycles, g.predicted)
    return {"gen": g, "weights": w, "params": p, "wall": wall, "compiled": len(progs)}


def report(r: dict, prompt) -> None:
    g, w, p = r["gen"], r["weights"], r["params"]
    cfg, vl = w.cfg, p.vl
    P = len(prompt)
    wb = weight_bytes_per_token(cfg)
    rows_wide = isa.wide_load_feed_rows(p)
    lin, att = mkn(cfg, P, P)
    print(f"prefill ({P} tokens): {g.cycles[0]} cycles (predicted {g.predicted[0]}); "
          f"sum(MKN)/VL^2: linear {lin / vl**2:.0f}, attention {att / vl**2:.0f} cycles")
    if len(g.cycles) > 1:
        dec = g.cycles[1:]
        lin1, att1 = mkn(cfg, 1, P + len(dec))
        print(f"decode ({len(dec)} steps, keys {P + 1}..{P + len(dec)}): "
              f"{sum(dec) / len(dec):.0f} cycles/token (min {min(dec)}, max {max(dec)}; "
              f"+{(dec[-1] - dec[0]) / max(1, len(dec) - 1):.0f} per extra key); all measured "
              f"== predicted")
        print(f"  weight-streaming bound: {wb} B/token / {vl} B per cycle (LW) = "
              f"{math.ceil(wb / vl)} cycles, / {vl * rows_wide} B per cycle (LWW of "
              f"{rows_wide} rows) = {math.ceil(wb / (vl * rows_wide))} cycles")
        print(f"  sum(MKN)/VL^2 of the last step: linear {lin1 / vl**2:.1f}, attention "
              f"{att1 / vl**2:.1f} cycles")
        print(f"  decode step / LW bound: {sum(dec) / len(dec) / math.ceil(wb / vl):.2f}x")
        per = defaultdict(int)
        for name, c in g.detail[-1]:
            per[re.sub(r"_\d+(x\d+)?$", "", re.sub(r"^decoder_(l\d+\.)?", "", name))] += c
        print("  last decode step by program (both layers summed): "
              + ", ".join(f"{k} {v}" for k, v in per.items()))
    print(f"tokens {Tokenizer().decode(g.tokens)!r} equal the integer reference, logits equal "
          f"in every element; {r['compiled']} programs compiled; {r['wall']:.1f} s wall")


def main(argv=None):
    ap = argparse.ArgumentParser(description="decoder prefill and decode cycles on the chip")
    ap.add_argument("--backend", default="model", choices=["model", "verilator"])
    ap.add_argument("--tokens", type=int, default=9, help="tokens generated (default 9: the "
                                                          "prefill's and 8 decode steps)")
    ap.add_argument("--prompt", default=None, help="digits (default: first held-out prompt)")
    args = ap.parse_args(argv)
    prompt = (ReverseTask().heldout(1)[0][0] if args.prompt is None
              else ReverseTask().prompt_ids(args.prompt))
    print(f"decoder on {args.backend} (preset base), prompt {Tokenizer().decode(prompt)!r}")
    report(run(args.backend, prompt, args.tokens), prompt)


if __name__ == "__main__":
    main()
