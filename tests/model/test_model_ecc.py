"""MEM ECC (``LpuParams.mem_ecc``) in the reference model and the shared definitions.

The scenarios here (:func:`host_scenario`, :func:`copy_scenario`, :func:`gather_scenario`) run
on any host-bus backend; ``tests/rtl/test_mem_ecc.py`` runs them on the RTL and compares. The
model runs them exhaustively: every single and every double flip of the stored bits of one
host word (host reads) and of one codeword (READ by an instruction), on per-lane (Hamming(13,8))
and wide ((39,32)) codewords; the expected values come from ``openlpu.ecc`` and the timing rule.
"""

import dataclasses
import itertools

import numpy as np
import pytest

from openlpu import ecc, isa
from openlpu.firmware.asm import assemble
from openlpu.hostmap import imem_addr, mem_addr, mem_fault_writes, reg_addr
from openlpu.isa import ErrorFlag, HostReg
from openlpu.params import PRESETS, LpuParams, ParamsError, preset
from openlpu.verification.model import LpuModel
from openlpu.host.backends.model import ModelBackend

OP = isa.BY_MNEMONIC
GATHER = dataclasses.replace(preset("tiny"), name="tiny_ecc", mem_ecc=True)
WIDE = dataclasses.replace(preset("tiny"), name="tiny_ecc_wide", mem_ecc=True, mem_gather=False)


# -- scenarios (any backend: write / read / run, optionally tick) ----------------------------

def load_program(b, text):
    p = b.params
    progs = assemble(text, p)
    halt = OP["HALT"].encode()
    for q in p.queues:
        for i, w in enumerate(progs.get(q.name, [halt])):
            b.write(imem_addr(p, q.index, i), w)


def reg(b, r):
    return b.read(reg_addr(r))


def inject_and_write(b, sl, row, superlane, group, value, bits):
    """Host write of one MEM host word, with the stored ``bits`` flipped (ECC_INJECT)."""
    p = b.params
    place = (sl, row // p.mem_words, row % p.mem_words, superlane, group)
    writes = mem_fault_writes(p, *place, value, bits) if bits else [(mem_addr(p, *place), value)]
    for addr, data in writes:
        b.write(addr, data)
    return writes[-1][0]


def fault_plan(p, rng, n_double):
    """Faults, one per vector word: every single stored bit of a host word's codewords, then
    ``n_double`` random pairs inside one codeword: ``[(word, superlane, group, bits)]``."""
    n, nb = ecc.code_for(p).n, ecc.host_word_code_bits(p)
    faults = [(b,) for b in range(nb)]
    for _ in range(n_double):
        j = int(rng.integers(ecc.host_word_codewords(p)))
        i, k = sorted(rng.choice(n, 2, replace=False).tolist())
        faults.append((j * n + i, j * n + k))
    return [(w, int(rng.integers(p.superlanes)), int(rng.integers(p.host_lane_groups)), f)
            for w, f in enumerate(faults)]


def expected_status(p, bits):
    """(corrected codewords, uncorrectable codewords) of a host word with ``bits`` flipped."""
    n = ecc.code_for(p).n
    by_cw = {}
    for b_ in bits:
        by_cw.setdefault(b_ // n, []).append(b_)
    corr = sum(1 for v in by_cw.values() if len(v) == 1)
    return corr, len(by_cw) - corr


def host_words(p, vec):
    """The host words of a vector (superlane-major, then lane group)."""
    return [int.from_bytes(bytes(vec[s * p.lanes + p.host_word_lanes * g:
                                     s * p.lanes + p.host_word_lanes * (g + 1)]), "little")
            for s in range(p.superlanes) for g in range(p.host_lane_groups)]


def store_words(b, sl, data, faults=()):
    p = b.params
    for row, vec in enumerate(data):
        for k, value in enumerate(host_words(p, vec)):
            s, g = divmod(k, p.host_lane_groups)
            bits = next((f for w, fs, fg, f in faults if (w, fs, fg) == (row, s, g)), ())
            inject_and_write(b, sl, row, s, g, value, bits)


def run(b):
    b.write(reg_addr(HostReg.CTRL), isa.Ctrl.CLEAR_ERRORS)
    b.run(10_000)
    if hasattr(b, "tick"):
        b.tick(isa.drain_cycles(b.params))
    return {r: reg(b, r) for r in (HostReg.ERRORS, HostReg.ERROR_CYCLE, HostReg.CYCLES,
                                   HostReg.ECC_CORRECTED, HostReg.ECC_UNCORRECTABLE)}


def read_words(b, sl, nwords):
    p = b.params
    return np.array([[b.read(mem_addr(p, sl, w // p.mem_words, w % p.mem_words, s, g))
                      for s in range(p.superlanes) for g in range(p.host_lane_groups)]
                     for w in range(nwords)], dtype=np.uint64)


def copy_scenario(b, data, faults):
    """Store ``data`` (words x VL) in mem_w1 with ``faults``, READ every word (word ``w`` at
    cycle ``w``) and WRITE it into mem_e1; returns the registers after the run and mem_e1's
    host words (whose host reads, of words WRITE encoded, must not count anything)."""
    p = b.params
    src, dst = p.slice("mem_w1"), p.slice("mem_e1")
    nwords = len(data)
    store_words(b, src.index, data, faults)
    delay = OP["READ"].d_func(p) + dst.position - src.position
    load_program(b, f"""
.queue mem_w1.read
    READ 0, s2, E
    REPEAT {nwords - 1}, 1, 1
    HALT
.queue mem_e1.write
    NOP {delay}
    WRITE 0, s2, E
    REPEAT {nwords - 1}, 1, 1
    HALT
""")
    regs = run(b)
    out = read_words(b, dst.index, nwords)
    assert reg(b, HostReg.ECC_CORRECTED) == regs[HostReg.ECC_CORRECTED]
    assert reg(b, HostReg.ECC_UNCORRECTABLE) == regs[HostReg.ECC_UNCORRECTABLE]
    return regs, out


def host_scenario(b, faults, value):
    """For each fault: inject it into one host word of mem_e0, read the word back; returns
    (data, ECC_CORRECTED, ECC_UNCORRECTABLE, ERRORS, ERROR_CYCLE) per fault."""
    p = b.params
    out = []
    for w, s, g, bits in faults:
        b.write(reg_addr(HostReg.CTRL), isa.Ctrl.CLEAR_ERRORS)
        addr = inject_and_write(b, p.slice("mem_e0").index, w, s, g, value, bits)
        assert reg(b, HostReg.ECC_INJECT) == 0           # taken by that write
        out.append((b.read(addr), reg(b, HostReg.ECC_CORRECTED),
                    reg(b, HostReg.ECC_UNCORRECTABLE), reg(b, HostReg.ERRORS),
                    reg(b, HostReg.ERROR_CYCLE)))
    return out


def gather_scenario(b, rng):
    """GATHERs on per-lane codewords (``mem_gather``): mem_w1 word ``w < VL`` has a single flip
    in lane ``w``, word ``VL + w`` a double flip in lane ``w``. Maps READ from mem_w0 (one hop
    east: at mem_w1 at t + 2): GATHER 1 (cycle 2, identity, words 0..) reads every single;
    GATHER 2 (cycle 3, lane l reads word VL + (l+1) mod VL) only clean codewords; GATHER 3
    (cycle 4, identity, words VL..) every double. The
    gathered vectors are written to mem_e1 words 0..2. Returns (registers, mem_e1 words, data)."""
    p = b.params
    vl, n = p.vl, ecc.code_for(p).n
    data = rng.integers(0, 256, (2 * vl, vl), dtype=np.uint8)
    faults = []
    for w in range(2 * vl):
        lane = w % vl
        s, within = divmod(lane, p.lanes)
        g, j = divmod(within, p.host_word_lanes)
        bit = int(rng.integers(n))
        bits = (j * n + bit,) if w < vl else (j * n + bit, j * n + (bit + 1 + int(rng.integers(n - 1))) % n)
        faults.append((w, s, g, bits))
    src, maps, dst = p.slice("mem_w1"), p.slice("mem_w0"), p.slice("mem_e1")
    store_words(b, src.index, data, faults)
    lanes = np.arange(vl)
    store_words(b, maps.index, np.array([lanes, (lanes + 1) % vl], dtype=np.uint8))
    delay = OP["GATHER"].d_func(p) + dst.position - src.position
    load_program(b, f"""
.queue mem_w0.read
    READ 0, s3, W
    READ 1, s3, W
    READ 0, s3, W
    HALT
.queue mem_w1.read
    NOP 2
    GATHER 0, s3, W, s2, E
    GATHER {vl}, s3, W, s2, E
    GATHER {vl}, s3, W, s2, E
    HALT
.queue mem_e1.write
    NOP {2 + delay}
    WRITE 0, s2, E
    REPEAT 2, 1, 1
    HALT
""")
    regs = run(b)
    return regs, read_words(b, dst.index, 3), data


# -- definitions ---------------------------------------------------------------------------

def test_presets_keep_their_identity():
    for p in PRESETS.values():
        assert "mem_ecc" not in p.to_dict()
        assert not p.mem_ecc
    ecc_p = dataclasses.replace(preset("tiny"), mem_ecc=True)
    assert ecc_p.to_dict()["mem_ecc"] is True
    assert ecc_p.config_id != preset("tiny").config_id
    assert LpuParams.from_json(ecc_p.to_json()) == ecc_p
    with pytest.raises(ParamsError, match="mem_ecc must be True or False"):
        dataclasses.replace(preset("tiny"), mem_ecc=1)


def test_code_of_each_tile_and_its_cost():
    assert (ecc.code_for(GATHER).n, ecc.code_for(GATHER).k) == (13, 8)
    assert (ecc.code_for(WIDE).n, ecc.code_for(WIDE).k) == (39, 32)
    assert ecc.code_for(preset("ice40")).k == 16 and ecc.code_for(preset("ice40")).n == 22
    assert ecc.host_word_code_bits(GATHER) == 4 * 13
    assert ecc.host_word_code_bits(WIDE) == 39
    assert ecc.host_word_code_bits(GATHER) < 1 << isa.ECC_INJECT_INDEX_BITS


@pytest.mark.parametrize("k", [8, 16, 32])
def test_vectorised_code_equals_the_scalar_one(k):
    c = ecc.code(k)
    rng = np.random.default_rng(k)
    datas = np.arange(256) if k == 8 else rng.integers(0, 1 << k, 64, dtype=np.uint64)
    words = c.encode_np(datas)
    assert [int(w) for w in words] == [c.encode(int(d)) for d in datas]
    if k == 8:
        stored = np.arange(1 << c.n, dtype=np.uint64)            # every 13-bit word
    else:
        flips = [1 << i for i in range(c.n)] + [(1 << i) | (1 << j)
                                               for i, j in itertools.combinations(range(c.n), 2)]
        stored = (words[:4, None] ^ np.array(flips, dtype=np.uint64)[None]).reshape(-1)
    data, status = c.decode_np(stored)
    want = [c.decode(int(w)) for w in stored]
    assert [(int(d), int(s)) for d, s in zip(data, status)] == [(d, int(s)) for d, s in want]


def test_code_rejects_bad_values():
    c = ecc.code(8)
    with pytest.raises(ValueError, match="8-bit"):
        c.encode(256)
    with pytest.raises(ValueError, match="13-bit"):
        c.decode(1 << 13)


def test_inject_word_checks_its_bits():
    assert isa.ecc_inject_bits(ecc.inject_word(GATHER, 51)) == (51,)
    assert isa.ecc_inject_bits(ecc.inject_word(GATHER, 0, 12)) == (0, 12)
    with pytest.raises(ecc.InjectError, match="no MEM ECC"):
        ecc.inject_word(preset("tiny"), 0)
    with pytest.raises(ecc.InjectError, match="one or two"):
        ecc.inject_word(GATHER)
    with pytest.raises(ecc.InjectError, match="one or two"):
        ecc.inject_word(GATHER, 1, 2, 3)
    with pytest.raises(ecc.InjectError, match="named twice"):
        ecc.inject_word(GATHER, 4, 4)
    with pytest.raises(ecc.InjectError, match=r"out of range \[0, 39\)"):
        ecc.inject_word(WIDE, 39)
    assert mem_fault_writes(GATHER, 1, 0, 2, 1, 0, 0xAB, (3, 9)) == [
        (reg_addr(HostReg.ECC_INJECT), ecc.inject_word(GATHER, 3, 9)),
        (mem_addr(GATHER, 1, 0, 2, 1, 0), 0xAB)]
    with pytest.raises(ecc.InjectError, match="out of range"):
        mem_fault_writes(GATHER, 1, 0, 2, 1, 0, 0xAB, (52,))
    from openlpu.hostmap import AddressError
    with pytest.raises(AddressError, match="MEM word 64 out of range"):
        mem_fault_writes(GATHER, 1, 0, 64, 1, 0, 0xAB, (3,))


# -- the model -----------------------------------------------------------------------------

@pytest.mark.parametrize("p", [GATHER, WIDE], ids=["per_lane", "wide"])
def test_host_read_every_single_and_double_flip(p):
    """Every bit and every pair of bits of one host word's stored codeword(s)."""
    nb = ecc.host_word_code_bits(p)
    faults = [(3, 1, 0, bits) for bits in
              [(i,) for i in range(nb)] + list(itertools.combinations(range(nb), 2))]
    value = 0x9E37_79B9
    got = host_scenario(ModelBackend(p), faults, value)
    for (_, _, _, bits), (data, corr, unc, errs, cyc) in zip(faults, got):
        c, u = expected_status(p, bits)
        assert (corr, unc, errs, cyc) == (c, u, ErrorFlag.MEM_UNCORRECTABLE if u else 0, 0), bits
        if not u:
            assert data == value, bits
    n_double = sum(1 for *_, bits in faults if expected_status(p, bits)[1])
    assert n_double == (len(list(itertools.combinations(range(ecc.code_for(p).n), 2)))
                        * ecc.host_word_codewords(p))


@pytest.mark.parametrize("p", [GATHER, WIDE], ids=["per_lane", "wide"])
def test_read_every_single_and_double_flip_of_a_codeword(p):
    """READ by an instruction: every single and double flip of codeword 0 of a host word."""
    n = ecc.code_for(p).n
    flips = [(i,) for i in range(n)] + list(itertools.combinations(range(n), 2))
    rng = np.random.default_rng(5)
    batch = p.mem_addr_words
    for start in range(0, len(flips), batch):
        chunk = flips[start:start + batch]
        faults = [(w, w % p.superlanes, w % p.host_lane_groups, bits)
                  for w, bits in enumerate(chunk)]
        data = rng.integers(0, 256, (len(chunk), p.vl), dtype=np.uint8)
        regs, out = copy_scenario(ModelBackend(p), data, faults)
        singles = [w for w, *_, bits in faults if len(bits) == 1]
        doubles = [(w, s) for w, s, _, bits in faults if len(bits) == 2]
        assert regs[HostReg.ECC_CORRECTED] == len(singles)
        assert regs[HostReg.ECC_UNCORRECTABLE] == len(doubles)
        want = np.array([host_words(p, v) for v in data], dtype=np.uint64)
        np.testing.assert_array_equal(out[singles], want[singles])
        if doubles:
            w, s = doubles[0]
            assert regs[HostReg.ERRORS] == ErrorFlag.MEM_UNCORRECTABLE
            assert regs[HostReg.ERROR_CYCLE] == w + OP["READ"].d_func(p) + s
        else:
            assert regs[HostReg.ERRORS] == 0
        # the last WRITE issues at delay + len - 1, its queue's HALT one cycle later
        delay = OP["READ"].d_func(p) + p.slice("mem_e1").position - p.slice("mem_w1").position
        assert regs[HostReg.CYCLES] == delay + len(chunk) + 1


def test_gather_counts_only_the_codewords_it_reads():
    p = GATHER
    regs, out, data = gather_scenario(ModelBackend(p), np.random.default_rng(9))
    vl = p.vl
    lanes = np.arange(vl)
    assert regs[HostReg.ECC_CORRECTED] == vl               # GATHER 1: every single
    assert regs[HostReg.ECC_UNCORRECTABLE] == vl           # GATHER 3: every double
    assert regs[HostReg.ERRORS] == ErrorFlag.MEM_UNCORRECTABLE
    assert regs[HostReg.ERROR_CYCLE] == 4 + OP["GATHER"].d_func(p)   # superlane 0, GATHER 3
    np.testing.assert_array_equal(out[0], host_words(p, data[lanes, lanes]))
    np.testing.assert_array_equal(out[1], host_words(p, data[vl + (lanes + 1) % vl, lanes]))


def test_counters_clear_with_errors_and_saturate():
    p = GATHER
    m = LpuModel(p)
    addr = mem_addr(p, 0, 0, 1, 0, 0)
    m.write(reg_addr(HostReg.ECC_INJECT), ecc.inject_word(p, 2))
    m.write(addr, 7)
    assert m.read(reg_addr(HostReg.ECC_INJECT)) == 0
    m.read(addr)
    m.read(addr)
    assert m.read(reg_addr(HostReg.ECC_CORRECTED)) == 2   # the stored word stays faulty
    m.write(reg_addr(HostReg.CTRL), isa.Ctrl.CLEAR_ERRORS)
    assert m.read(reg_addr(HostReg.ECC_CORRECTED)) == 0
    m.mem_ecc.corrected = (1 << 32) - 2
    for _ in range(3):
        m.read(addr)
    assert m.read(reg_addr(HostReg.ECC_CORRECTED)) == (1 << 32) - 1
    m.write(addr, 7)                                       # rewritten: encoded afresh
    for q in p.queues:                                     # an empty program: START clears
        m.write(imem_addr(p, q.index, 0), OP["HALT"].encode())
    m.write(reg_addr(HostReg.CTRL), isa.Ctrl.START)
    assert m.read(reg_addr(HostReg.ECC_CORRECTED)) == 0
    assert m.read(addr) == 7 and m.read(reg_addr(HostReg.ECC_CORRECTED)) == 0


def test_inject_is_taken_by_any_host_mem_write_and_ignored_without_ecc():
    p = GATHER
    m = LpuModel(p)
    m.write(reg_addr(HostReg.ECC_INJECT), ecc.inject_word(p, 0))
    m.write(mem_addr(p, 0, 0, 0, 0, 0) | (1 << 19), 5)     # an address past the MEM slices
    assert m.read(reg_addr(HostReg.ECC_INJECT)) == 0
    m.write(mem_addr(p, 0, 0, 0, 0, 0), 5)
    assert m.read(mem_addr(p, 0, 0, 0, 0, 0)) == 5
    assert m.read(reg_addr(HostReg.ECC_CORRECTED)) == 0
    plain = LpuModel(preset("tiny"))
    plain.write(reg_addr(HostReg.ECC_INJECT), 0x80)
    for r in (HostReg.ECC_INJECT, HostReg.ECC_CORRECTED, HostReg.ECC_UNCORRECTABLE):
        assert plain.read(reg_addr(r)) == 0
