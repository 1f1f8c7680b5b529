"""The transformer blocks of the graph compiler on the base chip: the MiniLM MLP block (linear +
bias -> int16, GELU, linear + bias -> int32, residual add; small and at MiniLM's FFN size,
16 tokens x 384 -> 1536 -> 384) and a 2-head attention block (q/k/v
projections, attention with a padding mask), each compiled from the graph API into ONE program
(``openlpu.verification.graph_blocks``), run on the chosen backend and checked in every element
against the graph's integer reference (``verification/graph_ref.py``); prints measured cycles
beside the prediction, the MXM utilization (ABC issues per cycle) and the compile time.

The base Verilator model is built on first use (about 6 minutes on a free 2-core machine; cached
under ``$OPENLPU_BUILD_DIR``). Usage::

    python benchmarks/graph_blocks.py [--backend verilator|model]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from openlpu.firmware.graph import compile_graph
from openlpu.firmware.schedule import issue_counts
from openlpu.host.device import Device
from openlpu.params import preset
from openlpu.verification.graph_blocks import attention_block, mlp_block
from openlpu.verification.graph_ref import run_graph

P = preset("base")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backend", default="verilator", choices=["verilator", "model"])
    args = ap.parse_args(argv)
    cases = [("MLP block 8x64 -> 128 -> 64", mlp_block(seed=0)),
             ("MiniLM FFN block 16x384 -> 1536 -> 384", mlp_block(seed=0, shape=(16, 384, 1536))),
             ("attention block 64x128, 2 heads, mask", attention_block(seed=0))]
    bad = 0
    t0 = time.perf_counter()
    with Device.open(args.backend, P) as dev:
        print(f"base on {args.backend}: opened in {time.perf_counter() - t0:.1f} s", flush=True)
        for label, (g, inputs) in cases:
            t = time.perf_counter()
            pkg = compile_graph(g, P)
            t_compile = time.perf_counter() - t
            words = sum(len(w) for w in pkg.queues.values())
            want = run_graph(g, inputs)
            t = time.perf_counter()
            cycles, got = dev.run_package(pkg, inputs)
            wall = time.perf_counter() - t
            wrong = sum(int(np.count_nonzero(np.asarray(got[k]) != v)) for k, v in want.items())
            abc = sum(issue_counts(w).get("ABC", 0) for w in pkg.queues.values())
            ok = wrong == 0 and cycles == pkg.predicted_cycles
            bad += not ok
            print(f"  {label:40s} {'exact' if wrong == 0 else f'{wrong} WRONG'}  {cycles} cycles"
                  f" (predicted {pkg.predicted_cycles}"
                  f"{', equal' if cycles == pkg.predicted_cycles else ', DIFFERENT'})"
                  f"  {len(pkg.meta['kernels'])} kernels  MXM {100 * abc / cycles:.1f} %"
                  f"  {words} instruction words  compile {t_compile:.2f} s  run {wall:.1f} s",
                  flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
