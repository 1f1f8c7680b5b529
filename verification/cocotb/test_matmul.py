"""Matrix multiplication on the whole chip in cocotb + Verilator, against numpy.

For each preset, every case is compiled with ``compile_matmul``; the packages (``Package.to_bytes``)
and the input matrices are handed to ``cocotb_matmul.py`` as files listed in a manifest, and
all cases run in one simulator process. Each case checks every element of ``C`` against
``A.astype(int32) @ B.astype(int32)`` and the measured CYCLES against ``pkg.predicted_cycles``.
"""

import json

import numpy as np
import pytest

from openlpu.params import preset
from openlpu.verification.cocotb.sim_runner import run_cocotb


def _cases(vl: int):
    """(name, M, K, N, fill) with fill "random", "edges" (random with -128, 127, 0, 1 mixed
    in) or an int for constant matrices. Names are cocotb test-name safe (<= 10 chars)."""
    return [
        ("one", 1, 1, 1, "random"),
        ("vl_cube", vl, vl, vl, "random"),
        ("ragged", 5, vl + 3, vl - 3, "random"),
        ("k_n_big", 6, 2 * vl + 5, 2 * vl + 1, "random"),
        ("all_m128", vl, 2 * vl, vl, -128),
        ("all_127", vl, 2 * vl, vl, 127),
        ("edges", vl + 2, 2 * vl, vl + 1, "edges"),
        ("striped", vl, 12 * vl, vl, "edges"),     # A and B^T striped over 2 slices each
    ]


def _inputs(rng, M, K, N, fill):
    if isinstance(fill, int):
        return np.full((M, K), fill, np.int8), np.full((K, N), fill, np.int8)
    A = rng.integers(-128, 128, (M, K)).astype(np.int8)
    B = rng.integers(-128, 128, (K, N)).astype(np.int8)
    if fill == "edges":            # sprinkle the edge values into random data
        for X in (A, B):
            idx = rng.integers(0, X.size, X.size // 4)
            X.flat[idx] = rng.choice(np.array([-128, 127, 0, 1], np.int8), idx.size)
    return A, B


@pytest.mark.parametrize("name", ["tiny", "default"])
def test_matmul(name, tmp_path):
    from openlpu.firmware.compiler import compile_matmul

    params = preset(name)
    rng = np.random.default_rng(2024)
    manifest = []
    for case, M, K, N, fill in _cases(params.vl):
        pkg = compile_matmul(params, M, K, N)
        A, B = _inputs(rng, M, K, N, fill)
        pkg_file = tmp_path / f"{case}.lpkg"
        pkg_file.write_bytes(pkg.to_bytes())
        data_file = tmp_path / f"{case}.npz"
        np.savez(data_file, A=A, B=B)
        manifest.append({"case": case, "package": str(pkg_file), "data": str(data_file)})
    (tmp_path / "manifest.json").write_text(json.dumps(manifest, indent=1))
    res = run_cocotb("cocotb_matmul", params, tmp_path / "run", timeout=600,
                     extra_env={"OPENLPU_MATMUL_MANIFEST": tmp_path / "manifest.json"})
    assert res.tests == len(manifest) and res.failed == 0
