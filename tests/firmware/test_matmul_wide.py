"""compile_matmul with wide weight loads (LWW): schedule properties on the model-scale chip,
placement rules read back from the packages, and runs on the reference model, bit-exact against
numpy with measured == predicted cycles."""

import pytest

from openlpu import isa
from openlpu.firmware.compiler import compile_matmul
from openlpu.firmware.schedule import issue_counts
from openlpu.host.backends.model import ModelBackend
from openlpu.host.device import Device
from openlpu.params import preset
from openlpu.verification.matmul_check import (check_wide, compiled_matmul, matmul_operands,
                                               run_matmul)

#: The model-scale chip (VL 64, 16 streams, 8 MEM slices per hemisphere). Its utilization
#: targets and placement rules are checked in test_compiler_layout.py.
BASE = preset("base")


def _chip(name):
    return preset(name)


def test_wide_load_only_when_it_is_faster():
    # 16x384x1152 fits one bank per operand; with LW it is weight-load bound (7,060 cycles)
    pkg = compiled_matmul(BASE.name, 16, 384, 1152)
    assert pkg.meta["wide_load_rows"] >= 2 and pkg.predicted_cycles < 16 * 6 * 18 * 1.1 + 200
    # LWs hidden behind the ABCs: the single-bank package is kept, byte for byte
    a = compile_matmul(preset("mini4"), 32, 48, 32)
    assert "wide_load_rows" not in a.meta and "LWW" not in issue_counts(a.queues["mxm_w.weights"])
    # with the fused epilogue too, a shape whose LWs hide behind the ABCs keeps LW
    r = compile_matmul(preset("mini4"), 16, 48, 64, requantize=((1 << 30) + 12345, 2))
    assert "wide_load_rows" not in r.meta


def test_wide_planes_are_repeat_compressed():
    pkg = compiled_matmul(BASE.name, 16, 384, 1152)
    words = pkg.queues["mxm_w.weights"]
    n_lww = issue_counts(words)["LWW"]
    kinds = [isa.decode(int(w))[0].mnemonic for w in words]
    # per 64-row plane: one LWW word, one REPEAT and the last partial LWW at most
    assert kinds.count("LWW") + kinds.count("REPEAT") < n_lww
    assert len(words) < BASE.imem_words


#: Shapes that install their weights with LWW (mini4: 3 rows per cycle, the 4 MEM slices less
#: A's; base: 7, its west slices less A's). On mini4, B^T of (16, 48, 64) needs 3 banks.
WIDE = [
    ("mini4", (16, 48, 64)),
    ("mini4", (8, 32, 40)),
    ("mini4", (17, 16, 20)),
    ("default", (16, 64, 64)),
    ("base", (16, 128, 128)),
]


def run_wide(backend, chip, shape, kind, seed=1):
    """Compile, check the wide placement, run on ``backend`` and compare with numpy."""
    p = _chip(chip)
    M, K, N = shape
    pkg = compile_matmul(p, M, K, N)
    check_wide(pkg)
    A, B = matmul_operands(kind, M, K, N, seed)
    run_matmul(Device(backend), pkg, A, B)
    return pkg


@pytest.mark.parametrize("kind", ["random", "min", "max", "zero", "one"])
@pytest.mark.parametrize("chip, shape", WIDE, ids=lambda v: str(v))
def test_wide_matmul_on_the_model(chip, shape, kind):
    if chip == "base" and kind != "random":
        pytest.skip("base: one run (seeded random with edge rows) keeps the model time short")
    run_wide(ModelBackend(_chip(chip)), chip, shape, kind)


#: Shapes that do not use wide loads (chunks of more than VL + 1 rows, or LWs that hide anyway):
#: their packages are the ones compile_matmul builds with wide loads disabled, byte for byte
#: (checked against main before wide loads: the same sha256 on every shape here).
UNCHANGED = [
    ("default", (64, 256, 64), {}),
    ("default", (40, 256, 40), {}),
    ("mini4", (32, 48, 32), {}),
    ("mini4", (16, 48, 64), {"requantize": ((1 << 30) + 12345, 2)}),
    ("base", (512, 512, 512), {}),
]


@pytest.mark.parametrize("chip, shape, kw", UNCHANGED, ids=lambda v: str(v))
def test_packages_without_wide_loads_are_unchanged(chip, shape, kw, monkeypatch):
    from openlpu.firmware import compiler
    p = _chip(chip)
    pkg = compiled_matmul(chip, *shape, **kw)
    assert "wide_load_rows" not in pkg.meta
    assert "LWW" not in issue_counts(pkg.queues["mxm_w.weights"])
    monkeypatch.setattr(compiler, "_wide_limit", lambda *a: 0)
    assert compile_matmul(p, *shape, **kw).to_bytes() == pkg.to_bytes()


def test_wide_load_not_tried_for_large_chunks(monkeypatch):
    from openlpu.firmware import compiler
    calls = []
    real = compiler._wide_limit
    monkeypatch.setattr(compiler, "_wide_limit", lambda *a: calls.append(real(*a)) or calls[-1])
    compile_matmul(preset("default"), 64, 64, 64)          # one chunk of 64 rows > VL + 1
    compile_matmul(preset("default"), 16, 64, 64)
    assert calls[0] == 0 and calls[1][0] >= 2


@pytest.mark.parametrize("chip, shape", [("base", (1, 128, 256)), ("base", (8, 384, 128)),
                                         ("base", (3, 64, 200))],
                         ids=lambda v: str(v))
def test_a_matmul_reading_a_given_input_loads_wide(chip, shape):
    """A matmul whose A another kernel left in MEM (``inputs=(A, None)``) installs its weights
    with LWW from the slices A leaves when that is faster: with a few rows (decode-shaped) it
    is weight-load bound, at LW's one row per cycle 6 to 16 times slower. (On mini4 the
    slices the first matmul leaves are too few for a wide load.)"""
    from openlpu.verification.matmul_check import chained_matmuls, run_chained
    p = _chip(chip)
    pkg, second = chained_matmuls(p, *shape)
    rows = second.meta["wide_load_rows"]
    assert 2 <= rows <= isa.wide_load_feed_rows(p)
    h_slices = {s for s, *_ in second.inputs[0].layout[0]}
    assert not h_slices & {s for s, *_ in second.inputs[1].layout[0]}   # B2^T beside H
    words = pkg.queues["mxm_w.weights"]
    assert "LWW" in issue_counts(words)
    run_chained(Device(ModelBackend(p)), pkg, "random", seed=sum(shape))
