"""Reference-model semantics of LWW (the wide weight load): a whole weight plane installed from
every MEM slice at once, its interplay with LWT and IW, its range errors and the static check
of its REPEAT copies, checked against numpy on small directed programs."""

import numpy as np
import pytest

from openlpu import isa
from openlpu.firmware.asm import AsmError, assemble
from openlpu.isa import ErrorFlag
from openlpu.verification.model import ModelError

from ..conftest import int8_operands
from .test_model_lwt import dist, load, nop


def feed_slices(p):
    """The MEM slices feeding an LWW, one stream each (slice j on stream j, flowing west)."""
    return [s.name for s in p.mem_slice_list][:isa.wide_load_feed_rows(p)]


def plane_program(p, n_x, t0=None):
    """Every weight row by LWWs of ``F = wide_load_feed_rows`` rows per cycle: MEM slice j
    READs word k (row F*k + j) onto stream j at the cycle that lands it on the MXM with the k-th
    LWW (row F*k, streams 0..F-1); IW right after, then ``n_x`` ABCs (mem_w0 words 100..).
    Returns (text, first LWW cycle, cycles the LWWs take)."""
    vl = p.vl
    names = feed_slices(p)
    F = len(names)
    assert vl % F == 0
    n_lww = vl // F
    lat = {s: isa.BY_MNEMONIC["READ"].d_func(p) + dist(p, s, "mxm_w") for s in names}
    t0 = max(lat.values()) if t0 is None else t0
    queues = {}
    for j, s in enumerate(names):
        queues[f"{s}.read"] = (f"    {nop(t0 - lat[s])}\n    READ 0, s{j}, W\n"
                               f"    {f'REPEAT {n_lww - 1}, 1, 1' if n_lww > 1 else ''}\n")
    t_iw = t0 + n_lww
    t_abc = t_iw + 1
    lat_a = lat["mem_w0"]       # mem_w0 reads the activations after its plane words
    queues["mem_w0.read"] += (f"    {nop(t_abc - lat_a - (t0 - lat_a + n_lww))}\n"
                              f"    READ 100, s{F}, W\n"
                              f"    {f'REPEAT {n_x - 1}, 1, 1' if n_x > 1 else ''}\n")
    queues["mxm_w.weights"] = (f"    {nop(t0)}\n    LWW 0, s0, W, {F}\n"
                               f"    {f'REPEAT {n_lww - 1}, 1, {F}' if n_lww > 1 else ''}\n"
                               f"    IW\n")
    queues["mxm_w.compute"] = (f"    {nop(t_abc)}\n    ABC 0, s{F}, W, 0\n"
                               f"    {f'REPEAT {n_x - 1}, 1, 1' if n_x > 1 else ''}\n")
    text = "".join(f".queue {q}\n{body}    HALT\n" for q, body in queues.items())
    return text, t0, n_lww


def put_plane(m, p, W):
    names = feed_slices(p)
    F = len(names)
    for j, s in enumerate(names):
        m.mem[p.slice(s).index, :p.vl // F] = (W[j::F] & 0xFF).astype(np.uint8)


@pytest.mark.parametrize("kind", ["random", "min", "max", "one"])
def test_lww_plane_from_every_mem_slice(params, kind):
    """The plane arrives in VL / wide_load_feed_rows cycles (REPEAT advancing row by the
    count), the IW in the next cycle installs it, and the ABCs give W @ x."""
    p = params
    rng = np.random.default_rng(31)
    W = int8_operands(rng, (p.vl, p.vl), kind)
    W[0] = int8_operands(rng, p.vl)
    W[1, :2] = [-128, 127]
    xs = int8_operands(rng, (3, p.vl))
    xs[1] = -128
    xs[2, :3] = [0, 1, 127]
    # mem_w0 both feeds the weights and reads the activations: the activations follow the plane
    F = isa.wide_load_feed_rows(p)
    text, t0, n_lww = plane_program(p, len(xs))
    assert n_lww == -(-p.vl // F)
    m = load(p, text)
    put_plane(m, p, W)
    m.mem[p.slice("mem_w0").index, 100:100 + len(xs)] = (xs & 0xFF).astype(np.uint8)
    m.start()
    assert m.errors == 0
    np.testing.assert_array_equal(m.weights, W)
    for i, x in enumerate(xs):
        np.testing.assert_array_equal(m.acc[i], W @ x)


def test_lww_is_count_lws(params):
    """An LWW writes exactly its rows (the others keep their LW contents) and orders against an
    LWT on the same bytes as LWs of those rows would (the later RTL edge wins, LWT on a tie)."""
    p = params
    L, vl = p.lanes, p.vl
    rng = np.random.default_rng(32)
    k = min(3, isa.wide_load_max_rows(p))
    R = int8_operands(rng, (k, vl))
    v = int8_operands(rng, vl, "min")
    # LWT col (last superlane) at cycle 6, LWW rows 0..k-1 at cycle 7: byte (n, col) of the
    # LWW is written at 7 + col // L, the LWT's at 6 + n // L
    col = vl - 1
    mw = p.slice("mem_w0").index
    lat = 1 + dist(p, "mem_w0", "mxm_w")
    text = f"""
.queue mem_w0.read
    {nop(6 - lat)}
    READ 0, s5, W
    READ 1, s0, W
    HALT
.queue mem_e0.read
    {nop(7 - 1 - dist(p, "mem_e0", "mxm_w"))}
    READ 2, s1, W
    HALT
.queue mem_e1.read
    {nop(7 - 1 - dist(p, "mem_e1", "mxm_w"))}
    READ 3, s2, W
    HALT
.queue mxm_w.weights
    NOP 6
    LWT {col}, s5, W
    LWW 0, s0, W, {k}
    HALT
"""
    m = load(p, text)
    m.shadow[:] = 9
    m.mem[mw, 0] = (v & 0xFF).astype(np.uint8)
    m.mem[mw, 1] = (R[0] & 0xFF).astype(np.uint8)
    m.mem[p.slice("mem_e0").index, 2] = (R[1] & 0xFF).astype(np.uint8)
    m.mem[p.slice("mem_e1").index, 3] = (R[2] & 0xFF).astype(np.uint8)
    m.start()
    assert m.errors == 0
    want = np.full((vl, vl), 9, dtype=np.int64)
    want[:, col] = v
    want[:k] = R
    for n in range(k):
        if 6 + n // L >= 7 + col // L:
            want[n, col] = v[n]
    np.testing.assert_array_equal(m.shadow, want)


def test_lww_errors(params):
    """Rows past VL or streams past the last: ADDR_RANGE in the issue cycle and nothing written
    or sampled; a stream of the LWW never written: STREAM_UNWRITTEN (ModelError when strict)."""
    p = params
    vl, K = p.vl, isa.wide_load_max_rows(p)
    for fields in ((vl - 1, 0, 2), (0, p.streams - 1, 2), (vl - K + 1, 0, K), (511, 0, 1),
                   (0, 0, min(63, vl + 1))):
        m = load(p, f"""
.queue mxm_w.weights
    NOP 2
    LWW {fields[0]}, s{fields[1]}, W, {fields[2]}
    HALT
""", strict=False, check=False)
        m.shadow[:] = 7
        m.start()
        assert m.errors == ErrorFlag.ADDR_RANGE, fields       # no STREAM_UNWRITTEN: not sampled
        assert m.error_cycle == 2
        assert (m.shadow == 7).all(), fields
        with pytest.raises(AsmError, match="LWW: (row|stream|count)="):
            assemble(f".queue mxm_w.weights\n LWW {fields[0]}, s{fields[1]}, W, {fields[2]}\n", p)
    m = load(p, ".queue mxm_w.weights\n    LWW 0, s1, W, 2\n    HALT\n")
    with pytest.raises(ModelError, match="STREAM_UNWRITTEN.*stream 1"):
        m.start()


def test_lww_repeat_copies_checked(params):
    """A REPEAT of an LWW advances its row; every copy's rows must end by row VL - 1: the
    assembler rejects the first copy that would not, and the model flags ADDR_RANGE for it."""
    p = params
    vl = p.vl
    n = 2
    good = f".queue mxm_w.weights\n    LWW 0, s0, W, {n}\n    REPEAT {vl // n - 1}, 1, {n}\n    HALT\n"
    assemble(good, p)
    bad = f".queue mxm_w.weights\n    LWW 0, s0, W, {n}\n    REPEAT {vl // n}, 1, {n}\n    HALT\n"
    with pytest.raises(AsmError, match=f"copy {vl // n} of LWW has row={vl}"):
        assemble(bad, p)
    for text, flagged in ((good, 0), (bad, ErrorFlag.ADDR_RANGE)):
        m = load(p, text, strict=False, check=False)
        m.start()                                    # (every LWW also reads unwritten streams)
        assert m.errors & ErrorFlag.ADDR_RANGE == flagged


def test_iw_right_after_lww_is_no_hazard(params):
    """Unlike LWT, LWW rows follow LW's timing: an IW in the next cycle is exact."""
    p = params
    rng = np.random.default_rng(33)
    W = int8_operands(rng, (p.vl, p.vl))
    text, t0, n_lww = plane_program(p, 1)
    m = load(p, text)
    put_plane(m, p, W)
    m.start()                                        # no ScheduleHazard
    np.testing.assert_array_equal(m.weights, W)


def test_wide_load_limits():
    """``isa.wide_load_max_rows`` is min(streams, VL), ``wide_load_feed_rows`` also at most one
    row per MEM slice; a VL 64 chip with 16 streams and 8 MEM slices per hemisphere installs a
    64 x 64 plane in 4 cycles, and the static check takes exactly count <= max rows."""
    from openlpu.params import LpuParams, preset
    big = LpuParams(name="vl64", lanes=16, superlanes=4, streams=16, mem_slices=8,
                    mem_words=64, mxm_acc_words=64)
    got = {n: (isa.wide_load_max_rows(p), isa.wide_load_feed_rows(p))
           for n, p in (("tiny", preset("tiny")), ("default", preset("default")),
                        ("ice40", preset("ice40")), ("vl64", big))}
    assert got == {"tiny": (8, 4), "default": (8, 4), "ice40": (2, 2), "vl64": (16, 16)}
    assert -(-big.vl // isa.wide_load_feed_rows(big)) == 4
    lww = isa.BY_MNEMONIC["LWW"]
    isa.check_instruction(big, "weights", lww, dict(row=48, stream=0, dir=1, count=16))
    with pytest.raises(isa.IsaError, match=r"count=17 out of range .*1\.\.16"):
        isa.check_instruction(big, "weights", lww, dict(row=0, stream=0, dir=1, count=17))
