"""Attention on the whole chip in cocotb + Verilator, bit-exact against the numpy integer
reference (``openlpu.verification.reference.attention_int``).

Presets ``mini`` (VL = 8) and ``mini4`` (VL = 16, four superlanes), both with every slice kind,
run the same testbench, one simulator process per preset. On ``mini`` the cases cover head
dimension VL/2 and VL, sequence lengths 1, 7, VL and 3*VL, one and four heads, causal and not,
random data and the edge values -128, 127, 0 and 1; ``mini4`` runs a reduced set (sequence 1, VL
and 3*VL, head dimension VL/2 and VL, four heads at VL/2: with 64 MEM words per bank, four heads of
dimension VL do not fit). Each case checks every output element and the measured CYCLES against
the compiler's prediction.
"""

import json

import numpy as np
import pytest

from openlpu.params import preset
from openlpu.verification.cocotb.sim_runner import run_cocotb


def _cases_reduced(vl: int):
    """The smaller set for the second preset (same tuple layout as :func:`_cases`)."""
    cases = []
    for seq in (1, vl, 3 * vl):
        for d in (vl // 2, vl):
            for causal in (False, True):
                cases.append((f"s{seq}d{d}{'c' if causal else 'n'}", seq, d, 1, causal,
                              "random"))
    cases += [("h4s1c", 1, vl // 2, 4, True, "edges"), ("h4s7n", 7, vl // 2, 4, False, "random"),
              (f"h4s{vl}c", vl, vl // 2, 4, True, "edges"),
              ("allm128", 3 * vl, vl, 1, True, -128), ("ones", vl, vl // 2, 1, False, 1),
              ("edges", 3 * vl, vl, 1, True, "edges")]
    return cases


def _cases(vl: int):
    """(name, seq, head_dim, heads, causal, fill); names are cocotb test-name safe."""
    cases = []
    for seq in (1, 7, vl, 3 * vl):
        for d in (vl // 2, vl):
            for causal in (False, True):
                cases.append((f"s{seq}d{d}{'c' if causal else 'n'}", seq, d, 1, causal,
                              "random"))
    for seq in (1, 7, vl):
        cases.append((f"h4s{seq}c", seq, vl, 4, True, "edges"))
    cases.append(("h4s7n", 7, vl // 2, 4, False, "random"))
    cases += [("all127", vl, vl, 1, False, 127), ("allm128", 3 * vl, vl, 1, True, -128),
              ("zeros", 7, vl, 1, True, 0), ("ones", vl, vl // 2, 1, False, 1),
              ("edges", 3 * vl, vl, 1, True, "edges")]
    return cases


def _data(rng, heads, seq, d, fill):
    shape = (heads, seq, d)
    if isinstance(fill, int):
        return [np.full(shape, fill, np.int8) for _ in range(3)]
    out = [rng.integers(-128, 128, shape).astype(np.int8) for _ in range(3)]
    if fill == "edges":
        for X in out:
            idx = rng.integers(0, X.size, X.size // 3)
            X.flat[idx] = rng.choice(np.array([-128, 127, 0, 1], np.int8), idx.size)
    return out


@pytest.mark.parametrize("name", ["mini", "mini4"])
def test_attention(tmp_path, name):
    from openlpu.firmware.attention import compile_attention

    params = preset(name)
    rng = np.random.default_rng(7)
    manifest = []
    cases = _cases if name == "mini" else _cases_reduced
    for case, seq, d, heads, causal, fill in cases(params.vl):
        scale = (1 / 32) ** 2 / np.sqrt(d)
        pkg = compile_attention(params, seq, seq, d, heads=heads, scale=scale, causal=causal)
        Q, K, V = _data(rng, heads, seq, d, fill)
        pkg_file = tmp_path / f"{case}.lpkg"
        pkg_file.write_bytes(pkg.to_bytes())
        data_file = tmp_path / f"{case}.npz"
        np.savez(data_file, Q=Q, K=K, V=V)
        manifest.append({"case": case, "package": str(pkg_file), "data": str(data_file)})
    (tmp_path / "manifest.json").write_text(json.dumps(manifest, indent=1))
    res = run_cocotb("cocotb_attention", params, tmp_path / "run", timeout=1200,
                     extra_env={"OPENLPU_ATTENTION_MANIFEST": tmp_path / "manifest.json"})
    assert res.tests == len(manifest) and res.failed == 0
