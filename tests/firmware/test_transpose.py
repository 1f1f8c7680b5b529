"""Transpose kernel (SXM skew + TRANSPOSE): shapes that must be refused, and runs on the reference
model against numpy ``X.T`` with cycles equal to the prediction (the RTL runs are in
verification/test_transpose_rtl.py)."""

import dataclasses

import numpy as np
import pytest

from openlpu.firmware.schedule import CompileError, issue_counts
from openlpu.firmware.transpose import compile_transpose
from openlpu.host.device import Device
from openlpu.params import preset

SXM_PRESETS = ["mini", "mini4"]


def transpose_operand(rng, rows, cols, fill="random"):
    """Seeded random int8, with the edge values -128, 127, 0, 1 in the first elements and, for
    ``fill="edges"``, scattered over a third of the matrix."""
    X = rng.integers(-128, 128, (rows, cols))
    edges = np.array([-128, 127, 0, 1])
    X.flat[:min(4, X.size)] = edges[:min(4, X.size)]
    if fill == "edges":
        idx = rng.integers(0, X.size, max(1, X.size // 3))
        X.flat[idx] = rng.choice(edges, idx.size)
    return X


def shapes(p):
    """Full tiles, partial tiles in either dimension, several tiles, one element."""
    vl = p.vl
    return [(vl, vl), (1, 1), (3, 5), (vl + 3, 2 * vl - 1), (2 * vl, vl), (2 * vl, 2 * vl),
            (vl - 1, 3 * vl), (1, 2 * vl + 1), (2 * vl + 1, 1)]


def run_model(p, pkg, X):
    with Device.open("model", p) as dev:
        cycles, out = dev.run_package(pkg, {"X": X})
    return cycles, out["Y"]


@pytest.mark.parametrize("name", SXM_PRESETS)
@pytest.mark.parametrize("fill", ["random", "edges"])
def test_transpose_on_model(name, fill):
    p = preset(name)
    for k, (rows, cols) in enumerate(shapes(p)):
        rng = np.random.default_rng(1000 * k + rows * 37 + cols + (fill == "edges"))
        X = transpose_operand(rng, rows, cols, fill)
        pkg = compile_transpose(p, rows, cols)
        cycles, Y = run_model(p, pkg, X)
        assert Y.shape == (cols, rows)
        np.testing.assert_array_equal(Y, X.T, err_msg=f"{rows}x{cols} on {name}")
        assert cycles == pkg.predicted_cycles, f"{rows}x{cols} on {name}"


@pytest.mark.parametrize("name", SXM_PRESETS)
def test_constant_matrices(name):
    p = preset(name)
    for value in (-128, 127, 0, 1):
        X = np.full((p.vl + 1, p.vl - 2), value)
        pkg = compile_transpose(p, *X.shape)
        cycles, Y = run_model(p, pkg, X)
        np.testing.assert_array_equal(Y, X.T)
        assert cycles == pkg.predicted_cycles


@pytest.mark.parametrize("name", SXM_PRESETS)
def test_instruction_counts_and_cycles_per_tile(name):
    """A full tile takes S*VL shifted rows (SHIFT for blocks g < S/2, PERMUTE for the others, in
    the same cycles) and S TRANSPOSEs; with several tiles the steady state costs
    ceil(S/2)*VL + S cycles per tile (docs/kernels.md)."""
    p = preset(name)
    S, vl = p.superlanes, p.vl
    half = (S + 1) // 2
    one = compile_transpose(p, vl, vl)
    three = compile_transpose(p, vl, 3 * vl)
    assert one.meta["shifts"] == S * vl and one.meta["transposes"] == S
    assert three.meta["shifts"] == 3 * S * vl and three.meta["transposes"] == 3 * S
    assert three.predicted_cycles - one.predicted_cycles == 2 * (half * vl + S)
    counts = {}
    for words in three.queues.values():
        for m, n in issue_counts(words).items():
            counts[m] = counts.get(m, 0) + n
    assert counts["SHIFT"] == 3 * half * vl and counts["PERMUTE"] == 3 * (S - half) * vl
    assert counts["TRANSPOSE"] == 3 * S
    assert counts["WRITE"] == 3 * S * vl + 3 * vl          # skew buffers + Y rows
    assert counts["CONFIG"] == 3 * 2 * S                   # per tile, block row and buffer


def test_refuses_what_does_not_fit():
    with pytest.raises(CompileError, match="needs an SXM"):
        compile_transpose(preset("tiny"), 4, 4)
    p = preset("mini")
    with pytest.raises(CompileError, match=r"X \(rows x column tiles\) needs 130 words"):
        compile_transpose(p, 65, 9)                       # 65 rows x 2 column tiles
    with pytest.raises(CompileError, match=r"Y \(cols x row tiles\) needs 80 words"):
        compile_transpose(p, 9, 40)                       # 40 columns x 2 row tiles
    small = dataclasses.replace(preset("mini4"), mem_words=8)
    with pytest.raises(CompileError, match="the skew buffer needs 16 words"):
        compile_transpose(small, 1, 1)
    for bad in (0, -1, 2.0, True, None):
        with pytest.raises(CompileError, match="must be a positive integer"):
            compile_transpose(p, bad, 4)
        with pytest.raises(CompileError, match="must be a positive integer"):
            compile_transpose(p, 4, bad)


def test_largest_fitting_shape():
    p = preset("mini")
    rows, cols = p.mem_words // 2, 2 * p.vl             # X and Y fill a bank: 8 tiles on mini
    X = transpose_operand(np.random.default_rng(5), rows, cols)
    pkg = compile_transpose(p, rows, cols)
    cycles, Y = run_model(p, pkg, X)
    np.testing.assert_array_equal(Y, X.T)
    assert cycles == pkg.predicted_cycles
