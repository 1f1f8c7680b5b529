"""Striped matmuls (an operand needs more than one MEM bank) and matmuls that install their
weights with wide loads (``LWW``) on the Verilator RTL of the ``default`` and ``mini4`` presets:
bit-exact against numpy and :mod:`openlpu.vxm_ops`, with measured cycles equal to the
compiler's prediction. Seeded random data with edge rows, and
the edge values -128, 127, 0, 1 everywhere."""

import pytest

from openlpu.firmware.compiler import compile_matmul
from openlpu.host.device import Device
from openlpu.params import preset
from openlpu.verification.matmul_check import matmul_operands, run_matmul

CASES = [   # (preset, (M, K, N), compile_matmul options)
    ("default", (64, 256, 64), {}),                      # A and B^T over 2 slices each
    ("default", (40, 256, 40), {}),                      # partial tiles and chunks
    ("mini4", (32, 48, 32), {}),                          # B^T over 2 slices on 2 streams
    ("mini4", (16, 48, 64), {"requantize": ((1 << 30) + 12345, 2)}),
    ("mini4", (16, 48, 64), {"requantize": (-(3 << 28), 6), "relu": True}),  # B^T via the VXM
]


@pytest.fixture(scope="module")
def devices():
    """One Verilator device per preset, opened on first use."""
    opened = {}

    def get(name):
        if name not in opened:
            opened[name] = Device.open("verilator", preset(name))
        return opened[name]
    yield get
    for d in opened.values():
        d.close()


@pytest.mark.parametrize("kind", ["random", "min", "max", "zero", "one"])
@pytest.mark.parametrize("case", range(len(CASES)),
                         ids=[f"{c[0]}-{'x'.join(map(str, c[1]))}-{'-'.join(c[2]) or 'int32'}"
                              for c in CASES])
def test_striped_matmul_on_verilator(devices, case, kind):
    name, (M, K, N), kw = CASES[case]
    dev = devices(name)
    pkg = compile_matmul(preset(name), M, K, N, **kw)
    assert pkg.meta.get("stripes") and pkg.format_version == 2
    A, B = matmul_operands(kind, M, K, N, seed=M * 100 + K + case)
    run_matmul(dev, pkg, A, B, timeout_s=600, **kw)


WIDE_CASES = [  # (preset, (M, K, N), options): few rows per chunk, weights installed with LWW
    ("mini4", (16, 48, 64), {}),                         # 3 rows per LWW; B^T needs 3 banks
    ("mini4", (4, 32, 40), {}),                          # 3+3+3+3+3+1 rows a plane, partial N-tile
    ("mini4", (1, 32, 48), {"requantize": ((1 << 30) + 12345, 2)}),     # with the epilogue
    ("mini4", (4, 32, 40), {"requantize": (-(3 << 28), 6), "relu": True}),
]


@pytest.mark.parametrize("kind", ["random", "min", "max", "zero", "one"])
@pytest.mark.parametrize("case", range(len(WIDE_CASES)),
                         ids=[f"{c[0]}-{'x'.join(map(str, c[1]))}-{'-'.join(c[2]) or 'int32'}"
                              for c in WIDE_CASES])
def test_wide_load_matmul_on_verilator(devices, case, kind):
    name, (M, K, N), kw = WIDE_CASES[case]
    dev = devices(name)
    pkg = compile_matmul(preset(name), M, K, N, **kw)
    assert pkg.meta.get("wide_load_rows", 0) >= 2
    A, B = matmul_operands(kind, M, K, N, seed=M * 100 + K + 7 * case)
    run_matmul(dev, pkg, A, B, timeout_s=600, **kw)
