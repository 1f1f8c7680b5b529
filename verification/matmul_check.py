"""Matmul test helpers shared by the compiler tests (reference model) and the RTL tests:
operands, a run on a device compared with numpy, and the placement rules of ``compile_matmul``
read back from a package."""

from __future__ import annotations

import numpy as np

from openlpu import isa, vxm_ops

__all__ = ["matmul_operands", "matmul_reference", "run_matmul", "check_placement",
           "check_wide", "weights_loaded", "compiled_matmul", "chained_matmuls",
           "run_chained"]


def matmul_operands(kind, M, K, N, seed):
    """int8 ``A`` (M x K) and ``B`` (K x N): seeded random with edge rows and columns (-128
    and 127), or one edge value (``min``, ``max``, ``zero``, ``one``) everywhere."""
    rng = np.random.default_rng(seed)
    if kind == "random":
        A, B = rng.integers(-128, 128, (M, K)), rng.integers(-128, 128, (K, N))
        A[0], B[:, 0], A[-1], B[:, -1] = -128, -128, 127, 127      # edge rows among random
        return A, B
    v = {"min": -128, "max": 127, "zero": 0, "one": 1}[kind]
    return np.full((M, K), v), np.full((K, N), v)


def matmul_reference(A, B, requantize=None, relu=False):
    """``A @ B`` in int64, requantized (:func:`vxm_ops.requantize`) and rectified as the fused
    epilogue does."""
    want = A.astype(np.int64) @ B
    if requantize is not None:
        want = vxm_ops.requantize(want, *requantize)
        if relu:
            want = np.maximum(want, 0)
    return want


def run_matmul(dev, pkg, A, B, *, requantize=None, relu=False, timeout_s=None):
    """Load ``pkg`` on ``dev``, write ``A`` and ``B``, run; asserts measured == predicted
    cycles and ``C`` equal to :func:`matmul_reference`."""
    dev.load(pkg)
    dev.write_inputs({"A": A, "B": B})
    kw = {} if timeout_s is None else {"timeout_s": timeout_s}
    assert dev.run(**kw) == pkg.predicted_cycles
    np.testing.assert_array_equal(dev.read_outputs()["C"],
                                  matmul_reference(A, B, requantize, relu))


def check_placement(pkg):
    """The placement rules of ``compile_matmul``, read back from the package: A and ``B^T`` in
    disjoint slices, no bank both read and written, the byte planes of one result row in four
    different slices."""
    p = pkg.params
    lay = {t.name: t.layout for t in pkg.inputs + pkg.outputs}
    a_slices = {s for s, *_ in lay["A"][0]}
    b_slices = {s for s, *_ in lay["B"][0]}
    assert not a_slices & b_slices, "A and B^T share a read queue"
    read = {(s, b) for t in "AB" for s, b, *_ in lay[t][0]}
    written = {(s, b) for plane in lay["C"] for s, b, *_ in plane}
    assert not read & written, "a bank is read and written"
    C = next(t for t in pkg.outputs if t.name == "C")
    for w in range(C.words(p.vl)):          # the byte planes of one row: 4 write queues
        slices = [C.locate(b, w)[0] for b in range(len(C.planes))]
        assert len(set(slices)) == len(slices)


def weights_loaded(pkg):
    """Weight rows the package installs: LW issues plus the rows of every LWW copy."""
    rows, last = 0, None
    for w in pkg.queues["mxm_w.weights"]:
        idef, f = isa.decode(int(w))
        if idef.mnemonic == "LW":
            rows, last = rows + 1, 1
        elif idef.mnemonic == "LWW":
            rows, last = rows + f["count"], f["count"]
        elif idef.mnemonic == "REPEAT" and last:
            rows += f["count"] * last
        elif idef.mnemonic not in isa.CONTROL_MNEMONICS:
            last = None
    return rows


def check_wide(pkg):
    """The wide-load placement rules: B^T in `count` distinct slices, one bank each, none of
    them A's or a bank C writes; B's streams consecutive and disjoint from A's; every LWW
    reads B's first stream."""
    p = pkg.params
    count = pkg.meta["wide_load_rows"]
    lay = {t.name: t.layout for t in pkg.inputs + pkg.outputs}
    b_slices = [s for s, *_ in lay["B"][0]]
    assert len(b_slices) == count == len(set(b_slices))
    assert not set(b_slices) & {s for s, *_ in lay["A"][0]}
    written = {(s, b) for plane in lay["C"] for s, b, *_ in plane}
    assert not {(s, b) for s, b, *_ in lay["B"][0]} & written
    sb, sa = pkg.meta["streams"]["B"], pkg.meta["streams"]["A"]
    assert sb == list(range(sb[0], sb[0] + count)) and not set(sa) & set(sb)
    assert count <= isa.wide_load_feed_rows(p)
    for w in pkg.queues["mxm_w.weights"]:
        idef, f = isa.decode(int(w))
        assert idef.mnemonic != "LW"
        if idef.mnemonic == "LWW":
            assert f["stream"] == sb[0] and f["dir"] == isa.Dir.WEST and 1 <= f["count"] <= count


_COMPILED: dict = {}


def compiled_matmul(chip: str, M: int, K: int, N: int, **kw):
    """``compile_matmul(preset(chip), M, K, N, **kw)``, compiled once per process (the
    model-scale shapes take seconds; several tests read the same packages)."""
    from openlpu.firmware.compiler import compile_matmul
    from openlpu.params import preset
    key = (chip, M, K, N, tuple(sorted(kw.items())))
    if key not in _COMPILED:
        _COMPILED[key] = compile_matmul(preset(chip), M, K, N, **kw)
    return _COMPILED[key]


#: The first matmul's epilogue in :func:`chained_matmuls` (int8 result the second one reads).
CHAIN_REQUANTIZE = ((1 << 30) + 12345, 6)


def chained_matmuls(params, M: int, K: int, N: int):
    """One program of two matmuls: ``H = requantize(A @ B1)`` (M x K x K, fused epilogue,
    int8 in MEM), then ``C = H @ B2`` (M x K x N) reading ``H`` where the first left it
    (``inputs=(H, None)``). Returns ``(package, second matmul's Emitted)``."""
    from openlpu.firmware.chipstate import ChipState
    from openlpu.firmware.compiler import emit_matmul
    state = ChipState(params, f"chained matmuls {M}x{K}x{N}")
    first = emit_matmul(state, M, K, K, requantize=CHAIN_REQUANTIZE, names=("A", "B1", "H"))
    second = emit_matmul(state, M, K, N, earliest=first.end, inputs=(first.outputs[0], None),
                         names=("H", "B2", "C"))
    pkg = state.package(name=f"chained_{M}x{K}x{N}", inputs=first.inputs + second.inputs[1:],
                        outputs=second.outputs)
    return pkg, second


def run_chained(dev, pkg, kind, seed, *, timeout_s=None):
    """Run a :func:`chained_matmuls` package on ``dev`` with :func:`matmul_operands` data;
    asserts measured == predicted cycles and ``C`` equal to numpy's in every element."""
    shapes = {t.name: tuple(t.shape) for t in pkg.inputs + pkg.outputs}
    (M, K), N = shapes["A"], shapes["C"][1]
    A, B1 = matmul_operands(kind, M, K, K, seed)
    _, B2 = matmul_operands(kind, M, K, N, seed + 1)
    dev.load(pkg)
    dev.write_inputs({"A": A, "B1": B1, "B2": B2})
    kw = {} if timeout_s is None else {"timeout_s": timeout_s}
    assert dev.run(**kw) == pkg.predicted_cycles
    H = matmul_reference(A, B1, CHAIN_REQUANTIZE)
    np.testing.assert_array_equal(dev.read_outputs()["C"], matmul_reference(H, B2))
