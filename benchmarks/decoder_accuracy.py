"""Task accuracy of the decoder (host/models/decoder.py), float64 and int8, on numpy.

Greedy generation on the held-out reversal prompts with the float model and with the bit-exact
integer model (verification/models/decoder_ref.py: prefill, then one decode step per token with
the int8 K/V cache; argmax of the int32 logits on the host). An answer counts when every
generated token up to and including ``$`` equals the reversed digits. Prints both accuracies
and the numpy CPU time per generated token of each model (prefill included).

    python benchmarks/decoder_accuracy.py [--n 500]
"""

from __future__ import annotations

import argparse
import time

from openlpu.host.models.decoder import ReverseTask, load_weights
from openlpu.verification.models.decoder_ref import float_generate, int_generate


def evaluate(weights, n: int | None = None) -> dict:
    """``{"float": (accuracy, s per token), "int8": (...), "n": prompts, "same": fraction of
    prompts with the same answer from both}`` on the first ``n`` held-out prompts (all when
    None)."""
    prompts = ReverseTask().heldout(n)
    out, answers = {"n": len(prompts)}, {}
    for name, gen in (("float", float_generate), ("int8", int_generate)):
        ok = tokens = 0
        answers[name] = []
        t0 = time.process_time()
        for p, a in prompts:
            got, _ = gen(weights, p, max_new=len(a))
            answers[name].append(got)
            ok += got == a
            tokens += len(got)
        out[name] = (ok / len(prompts), (time.process_time() - t0) / tokens)
    out["same"] = sum(f == i for f, i in zip(answers["float"], answers["int8"])) / len(prompts)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description="decoder task accuracy, float64 and int8")
    ap.add_argument("--n", type=int, default=ReverseTask.HELDOUT_N,
                    help="held-out prompts (default all)")
    args = ap.parse_args(argv)
    w = load_weights()
    c = w.cfg
    print(f"decoder: {c.n_layers} layers, d_model {c.d_model}, {c.n_heads} heads of "
          f"{c.head_dim}, d_ff {c.d_ff}, vocab {c.vocab}, context {c.context}")
    r = evaluate(w, args.n)
    print(f"task: reverse {ReverseTask.MIN_DIGITS}..{ReverseTask.MAX_DIGITS} digits, "
          f"{r['n']} held-out prompts, greedy, exact match")
    for name in ("float", "int8"):
        acc, tpt = r[name]
        print(f"{name:5s}: accuracy {100 * acc:.1f} %, numpy CPU time {1e3 * tpt:.2f} ms/token")
    print(f"int8 - float: {100 * (r['int8'][0] - r['float'][0]):+.1f} points; same answer from "
          f"both on {100 * r['same']:.1f} % of the prompts")


if __name__ == "__main__":
    main()
