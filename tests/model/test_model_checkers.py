"""Every checker of the reference model fires on a bad program and stays quiet on a good one."""

import numpy as np
import pytest

from openlpu import isa
from openlpu.firmware.asm import assemble
from openlpu.hostmap import imem_addr, mem_addr
from openlpu.isa import Dir, ErrorFlag
from openlpu.verification.model import LpuModel, ModelError


def load(model, text):
    p = model.params
    progs = assemble(text, p)
    halt = isa.BY_MNEMONIC["HALT"].encode()
    for q in p.queues:
        words = progs.get(q.name, [halt])
        for i, w in enumerate(words):
            model.write(imem_addr(p, q.index, i), w)


def nop(n):
    return f"NOP {n}" if n else ""


def copy_program(p, *, read_at=0, write_delay=None, wbank=1, rstream=2, wstream=2):
    """READ mem_w1 word 3 eastward; mem_e1 WRITEs it to bank ``wbank`` word 4 on arrival."""
    src, dst = p.slice("mem_w1"), p.slice("mem_e1")
    delay = isa.BY_MNEMONIC["READ"].d_func(p) + (dst.position - src.position)
    if write_delay is not None:
        delay = write_delay
    return f"""
.queue mem_w1.read
    {nop(read_at)}
    READ 3, s{rstream}, E
    HALT
.queue mem_e1.write
    {nop(read_at + delay)}
    WRITE {wbank * p.mem_words + 4}, s{wstream}, E
    HALT
"""


def put_word(model, sl, word, data):
    p = model.params
    for s in range(p.superlanes):
        for g in range(p.host_lane_groups):
            lanes = data[s * p.lanes + 4 * g: s * p.lanes + 4 * g + 4]
            model.write(mem_addr(p, sl, word // p.mem_words, word % p.mem_words, s, g),
                        int.from_bytes(bytes(lanes), "little"))


def test_copy_across_the_chip_is_exact(params):
    m = LpuModel(params, strict=True)
    data = np.random.default_rng(3).integers(0, 256, params.vl, dtype=np.uint8)
    put_word(m, params.slice("mem_w1").index, 3, data)
    load(m, copy_program(params))
    m.start()
    np.testing.assert_array_equal(m.mem[params.slice("mem_e1").index, params.mem_words + 4], data)
    assert m.errors == 0


@pytest.mark.parametrize("variant, flag", [
    (dict(write_delay=0), ErrorFlag.STREAM_UNWRITTEN),        # WRITE before the data arrives
    (dict(wstream=5), ErrorFlag.STREAM_UNWRITTEN),            # WRITE samples the wrong stream
])
def test_unwritten_stream(params, variant, flag):
    m = LpuModel(params, strict=True)
    load(m, copy_program(params, **variant))
    with pytest.raises(ModelError, match=flag.name):
        m.start()


def test_bank_conflict(params):
    p = params
    arrive = isa.BY_MNEMONIC["READ"].d_func(p) + (p.slice("mem_e0").position - p.slice("mem_w0").position)
    good = f"""
.queue mem_e0.read
    READ 0, s0, W
    HALT
.queue mem_w0.read
    {nop(arrive)}
    READ 1, s1, W
    HALT
.queue mem_w0.write
    {nop(arrive)}
    WRITE {p.mem_words + 2}, s0, W
    HALT
"""
    m = LpuModel(p, strict=True)
    load(m, good)
    m.start()                               # read bank 0 while writing bank 1: fine
    assert m.errors == 0
    m = LpuModel(p, strict=True)
    load(m, good.replace(f"WRITE {p.mem_words + 2}", "WRITE 2"))
    with pytest.raises(ModelError, match="BANK_CONFLICT"):
        m.start()


def test_address_range_on_accumulator(params):
    m = LpuModel(params, strict=True)
    prog = {q.name: [isa.BY_MNEMONIC["HALT"].encode()] for q in params.queues}
    prog["mxm_w.result"] = [isa.BY_MNEMONIC["ACC"].encode(acc=params.mxm_acc_words, group=0, dir=0),
                            isa.BY_MNEMONIC["HALT"].encode()]
    for q in params.queues:
        for i, w in enumerate(prog[q.name]):
            m.write(imem_addr(params, q.index, i), w)
    with pytest.raises(ModelError, match="ADDR_RANGE"):
        m.start()


def test_bad_instruction_and_overrun(params):
    m = LpuModel(params, strict=False)
    halt = isa.BY_MNEMONIC["HALT"].encode()
    for q in params.queues:
        m.write(imem_addr(params, q.index, 0), halt)
    q = params.queue("mem_w0.read")
    m.write(imem_addr(params, q.index, 0), isa.BY_MNEMONIC["LW"].encode(row=0, stream=0, dir=1))
    m.start()
    assert m.errors & ErrorFlag.BAD_INSTRUCTION
    # the rest of the queue is NOP count=0 words (invalid) up to the end of the memory
    assert m.errors & ErrorFlag.IMEM_OVERRUN


def test_collision_checker(params):
    m = LpuModel(params, strict=True)
    drives = {}
    vec = np.zeros(params.vl, dtype=np.uint8)
    m._drive(0, drives, 1, 0, Dir.EAST, vec, "first")
    with pytest.raises(ModelError, match="STREAM_COLLISION"):
        m._drive(0, drives, 1, 0, Dir.EAST, vec, "second")


def test_host_write_while_running_is_flagged(params):
    m = LpuModel(params)
    m.running = True
    m.write(mem_addr(params, 0, 0, 0, 0, 0), 1)
    assert m.errors & ErrorFlag.HOST_WHILE_RUNNING
