"""compile_matmul over the whole MEM: operands and results striped over MEM slices and banks.

Compile-only checks on a model-scale chip, placement rules read back from the packages, and
striped matmuls on the reference model, bit-exact against numpy with measured == predicted
cycles."""

import math

import pytest

from openlpu.firmware.compiler import CompileError, compile_matmul
from openlpu.firmware.schedule import issue_counts
from openlpu.host.backends.model import ModelBackend
from openlpu.host.device import Device
from openlpu.params import preset
from openlpu.verification.matmul_check import (check_placement, check_wide, compiled_matmul,
                                               matmul_operands, run_matmul, weights_loaded)

#: The model-scale chip: VL 64, 16 streams, 8 MEM slices per hemisphere of 2 x 8192 words.
BIG = preset("base")


def _placement(pkg):
    """{name: [[(slice, bank, base, stride), ...] per plane]} of a matmul package."""
    return {t.name: t.layout for t in pkg.inputs + pkg.outputs}


@pytest.mark.parametrize("shape, min_util", [((64, 384, 1536), 0.95), ((16, 384, 1152), 0.9),
                                             ((512, 512, 512), 0.95)])
def test_model_scale_shapes_compile(shape, min_util):
    """The model-scale shapes: one ABC per (row, K-tile, N-tile), every weight row loaded once
    per accumulator chunk, within 5 % of the busier of the ABC and weight-load runs, the
    utilization target, the placement rules, and the wide-load rules where it is used."""
    M, K, N = shape
    pkg = compiled_matmul(BIG.name, M, K, N)
    vl = BIG.vl
    KT, NT = math.ceil(K / vl), math.ceil(N / vl)
    busy = pkg.meta["mxm_busy_cycles"]
    assert busy == M * KT * NT == issue_counts(pkg.queues["mxm_w.compute"])["ABC"]
    assert weights_loaded(pkg) == N * KT * math.ceil(M / BIG.mxm_acc_words)
    loads = issue_counts(pkg.queues["mxm_w.weights"])
    lw = loads.get("LW", 0) + loads.get("LWW", 0)      # weight-load cycles
    rows = pkg.meta.get("wide_load_rows", 1)
    assert lw == math.ceil(M / BIG.mxm_acc_words) * KT * sum(
        math.ceil(min(vl, N - j * vl) / rows) for j in range(NT))
    # one ABC and one weight load per cycle at most: the run is bounded below by the busier of
    # the two and, for these shapes, within 5 % of it plus the pipeline fill
    bound = max(busy, lw)
    assert bound < pkg.predicted_cycles <= 1.05 * bound + 200
    util = busy / pkg.predicted_cycles
    assert util >= min_util
    check_placement(pkg)
    if M <= BIG.vl:                          # weight-load bound with LW: the wide load is used
        check_wide(pkg)
    else:                                    # LWs hide behind 128-row chunks: unchanged
        assert "wide_load_rows" not in pkg.meta and pkg.format_version == 1
    print(f"\n{BIG.name} {M}x{K}x{N}: {pkg.predicted_cycles} cycles predicted, MXM busy "
          f"{busy} ({util:.1%}), {lw} weight-load cycles ({rows} rows each), stripes "
          f"{pkg.meta.get('stripes', 'single bank')}")


def test_operand_over_one_bank_is_striped_on_the_model_scale_chip():
    pkg = compiled_matmul(BIG.name, 64, 384, 1536)      # B^T: 1536 x 6 tiles = 9216 words > 8192
    lay = _placement(pkg)
    assert len(lay["B"][0]) >= 2 and pkg.format_version == 2
    west = {s.index for s in BIG.mem_slice_list[:BIG.mem_slices]}
    assert {s for s, *_ in lay["B"][0]} <= west and {s for s, *_ in lay["A"][0]} <= west
    # consecutive weight rows from different slices on different streams (a wide LW's need)
    streams = pkg.meta["streams"]
    assert len(streams["B"]) == len(lay["B"][0]) and not set(streams["A"]) & set(streams["B"])
    assert all(len(set(s for s, *_ in lay["B"][0][i:i + 2])) == 2
               for i in range(len(lay["B"][0]) - 1))


def test_small_operands_keep_the_single_bank_placement():
    pkg = compiled_matmul(BIG.name, 512, 512, 512)
    assert pkg.format_version == 1
    assert [t.planes for t in pkg.inputs] == [[(BIG.slice("mem_w0").index, 0)],
                                              [(BIG.slice("mem_w1").index, 0)]]


@pytest.mark.parametrize("chip, shape, message", [
    ("default", (16, 384, 384), r"B\^T needs 4608 words \(147456 bytes\) in at least 18 stripes "
                                r"of 256 words; the largest free run in bank 0 of .* is 256 words "
                                r"\(\d+ free there, \d+ free of 2048 in all"),
    ("default", (64, 256, 128), r"B\^T needs 1024 words .* \(512 free there"),
    ("tiny", (130, 8, 8), r"C byte plane 0 needs 130 words \(1040 bytes\) in at least 3 stripes"),
])
def test_shapes_that_do_not_fit_raise_a_compile_error(chip, shape, message):
    p = preset(chip)
    with pytest.raises(CompileError, match=rf"^matmul {shape[0]}x{shape[1]}x{shape[2]} on preset "
                                           rf"'{chip}': {message}"):
        compile_matmul(p, *shape)


#: Striped shapes: an operand needs more than one bank on every one of them.
STRIPED = [
    ("default", (64, 256, 64), {}),
    ("mini4", (32, 48, 32), {}),
    ("mini4", (16, 48, 64), {"requantize": ((1 << 30) + 12345, 2)}),
    ("mini4", (16, 48, 64), {"requantize": (-(3 << 28), 6), "relu": True}),
    ("quad", (48, 128, 40), {}),
]


def run_striped(backend, chip, shape, kw, kind, seed=1):
    """Compile, run on ``backend`` and compare with numpy; returns the package."""
    p = preset(chip)
    M, K, N = shape
    pkg = compile_matmul(p, M, K, N, **kw)
    assert pkg.meta.get("stripes"), "expected a striped placement"
    assert max(len(pl) for t in pkg.inputs for pl in t.layout) >= 2
    if "requantize" not in kw:
        check_placement(pkg)
    A, B = matmul_operands(kind, M, K, N, seed)
    run_matmul(Device(backend), pkg, A, B, **kw)
    return pkg


@pytest.mark.parametrize("kind", ["random", "min", "max", "zero", "one"])
@pytest.mark.parametrize("chip, shape, kw", STRIPED, ids=lambda v: str(v))
def test_striped_matmul_on_the_model(chip, shape, kw, kind):
    run_striped(ModelBackend(preset(chip)), chip, shape, kw, kind)
