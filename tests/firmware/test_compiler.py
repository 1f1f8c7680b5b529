import dataclasses
import math

import numpy as np
import pytest

from openlpu import isa
from openlpu.firmware.compiler import CompileError, compile_matmul
from openlpu.firmware.schedule import issue_counts
from openlpu.params import preset


@pytest.mark.parametrize("dims", [(0, 1, 1), (1, -2, 1), (1, 1, 1.5), (True, 1, 1)])
def test_bad_dimensions(params, dims):
    with pytest.raises(CompileError, match="matmul dimension"):
        compile_matmul(params, *dims)


def test_shape_that_does_not_fit_memory(params):
    # C's byte planes need both banks of the 4 MEM slices: nothing is left for A
    M = params.mem_words + 1
    with pytest.raises(CompileError, match=rf"^matmul {M}x1x1 on preset '{params.name}': A needs "
                                           rf"{M} words \({M * params.vl} bytes\) in at least 2 "
                                           r"stripes .*no MEM bank is left for it \(\d+ free of "
                                           rf"{4 * params.mem_addr_words} in all"):
        compile_matmul(params, M, 1, 1)


def test_program_that_does_not_fit_instruction_memory():
    p = dataclasses.replace(preset("tiny"), name="tiny-imem4", imem_words=4)
    with pytest.raises(CompileError, match="needs .* instruction words; preset 'tiny-imem4' has 4"):
        compile_matmul(p, 16, 16, 8)


def test_every_queue_ends_with_halt_at_the_predicted_cycle(params):
    pkg = compile_matmul(params, 5, params.vl + 1, 3)
    for name, words in pkg.queues.items():
        cycles = 0
        for w in words[:-1]:
            idef, f = isa.decode(w)
            cycles += {"NOP": f.get("count"),
                       "REPEAT": f.get("count", 0) * f.get("interval", 0)}.get(idef.mnemonic, 1)
        assert isa.decode(words[-1])[0].mnemonic == "HALT"
        assert cycles + 1 == pkg.predicted_cycles, name


def test_one_abc_per_activation_row_and_tile(params):
    M, K, N = 6, 2 * params.vl + 1, params.vl + 2
    pkg = compile_matmul(params, M, K, N)
    abc = issue_counts(pkg.queues["mxm_w.compute"])["ABC"]
    assert abc == M * math.ceil(K / params.vl) * math.ceil(N / params.vl)
    assert pkg.meta["macs"] == M * K * N


def test_repeat_compression_shrinks_images_and_keeps_timing(params):
    M, K, N = params.mem_words // 4, 2 * params.vl, params.vl
    packed = compile_matmul(params, M, K, N)
    # the same schedule without compression
    from openlpu.firmware import compiler, schedule
    orig = schedule.Schedule.emit
    try:
        schedule.Schedule.emit = lambda self, compress=True: orig(self, compress=False)
        plain = compiler.compile_matmul(params, M, K, N)
    finally:
        schedule.Schedule.emit = orig
    assert packed.predicted_cycles == plain.predicted_cycles
    words = lambda pkg: sum(len(w) for w in pkg.queues.values())   # noqa: E731
    assert words(packed) * 3 < words(plain)
    for q in packed.queues:
        assert issue_counts(packed.queues[q]).get("ABC") == issue_counts(plain.queues[q]).get("ABC")


# -- size options: chips without REPEAT (icu_repeat) or GATHER / SCATTER (mem_gather) -----------

def _variant(**changes):
    name = "tiny_" + "_".join(f"{k}{int(v)}" for k, v in changes.items())
    return dataclasses.replace(preset("tiny"), name=name, **changes)


def _has_repeat(words):
    return any(isa.decode(int(w))[0].mnemonic == "REPEAT" for w in words)


def _issue_trace(words):
    """(cycle, word) of every instruction a queue image issues, REPEAT copies expanded by the
    documented rule (copy k of X issues at r - 1 + k * interval, field + k * stride)."""
    t, out, last = 0, [], None
    for w in words:
        idef, f = isa.decode(int(w))
        if idef.mnemonic == "NOP":
            t += f["count"]
        elif idef.mnemonic == "HALT":
            return out + [(t, int(w))]
        elif idef.mnemonic == "REPEAT":
            x_def, x_f = last
            fld = isa.REPEAT_FIELD[x_def.mnemonic]
            for k in range(1, f["count"] + 1):
                g = dict(x_f)
                if fld:
                    g[fld] += k * f["stride"]
                out.append((t - 1 + k * f["interval"], x_def.encode(**g)))
            t += f["count"] * f["interval"]
        else:
            out.append((t, int(w)))
            last = (idef, f)
            t += 1
    raise AssertionError("queue image without HALT")


def test_place_rejects_instructions_the_chip_lacks():
    """Schedule.place: CompileError naming the queue, the instruction, the preset and the option."""
    from openlpu.firmware.schedule import Schedule
    cases = [("ice40", "mem_w1.read", "REPEAT", dict(count=2, interval=1, stride=1), "icu_repeat"),
             ("ice40", "mem_e0.read", "GATHER",
              dict(addr=1, map_stream=0, map_dir=0, stream=1, dir=1), "mem_gather"),
             ("tiny_lite", "mem_e1.write", "SCATTER",
              dict(addr=1, map_stream=0, map_dir=0, stream=1, dir=1), "mem_gather"),
             ("tiny_lite", "mxm_w.result", "REPEAT", dict(count=1, interval=1, stride=0),
              "icu_repeat")]
    for chip, queue, mnemonic, fields, option in cases:
        p = preset(chip) if chip == "ice40" else dataclasses.replace(
            preset("tiny"), icu_repeat=False, mem_gather=False, name=chip)
        with pytest.raises(CompileError, match=rf"{queue}: {mnemonic} is not implemented by "
                                               rf"preset '{chip}' \({option}=False\)"):
            Schedule(p).place(queue, 3, mnemonic, **fields)
        full = Schedule(preset("tiny"))
        full.place(queue, 3, mnemonic, **fields)
        assert full.count(mnemonic) == 1


@pytest.mark.parametrize("shape", [(5, 9, 7), (3, 4, 4), (3, 3, 5)])
def test_matmul_without_repeat_on_ice40(shape):
    """ice40 (no REPEAT, 2 accumulator rows): no REPEAT word, bit-exact against numpy on
    the reference model with K, N > VL and M > the accumulator rows; cycles as predicted."""
    from openlpu.host.device import Device

    from ..conftest import int8_operands
    p = preset("ice40")
    M, K, N = shape
    assert M > p.mxm_acc_words
    pkg = compile_matmul(p, M, K, N)
    for name, words in pkg.queues.items():
        assert not _has_repeat(words), name
    rng = np.random.default_rng(sum(shape))
    A, B = int8_operands(rng, (M, K)), int8_operands(rng, (K, N))
    A[0, :] = np.resize([-128, 127, 0, 1], K)
    A[1, :] = -128
    B[:, 0] = -128
    B[:, 1] = np.resize([127, 0, 1, -128], K)
    with Device.open("model", p) as dev:
        cycles, out = dev.run_package(pkg, {"A": A, "B": B})
    assert cycles == pkg.predicted_cycles
    np.testing.assert_array_equal(out["C"], A.astype(np.int64) @ B.astype(np.int64))


def test_emit_without_repeat_issues_the_same_instructions_at_the_same_cycles():
    """The same matmul for tiny and for tiny without REPEAT: same predicted cycles, and every
    queue issues the same words in the same cycles (REPEAT copies expanded on tiny)."""
    M, K, N = 6, 2 * preset("tiny").vl + 1, preset("tiny").vl + 2
    full = compile_matmul(preset("tiny"), M, K, N)
    plain = compile_matmul(_variant(icu_repeat=False), M, K, N)
    assert plain.predicted_cycles == full.predicted_cycles
    assert any(_has_repeat(w) for w in full.queues.values())
    assert full.queues.keys() == plain.queues.keys()
    for q in full.queues:
        assert not _has_repeat(plain.queues[q]), q
        assert _issue_trace(plain.queues[q]) == _issue_trace(full.queues[q]), q
    assert sum(map(len, plain.queues.values())) > sum(map(len, full.queues.values()))


def test_program_that_needs_repeat_to_fit():
    """A shape that fits tiny's instruction memory only thanks to REPEAT: a CompileError naming
    the queue, the words it needs and the preset on the chip without REPEAT."""
    small = dataclasses.replace(preset("tiny"), imem_words=32, name="tiny_imem32")
    p = dataclasses.replace(small, icu_repeat=False, name="tiny_imem32_norep")
    shape = (16, 16, 8)
    compile_matmul(small, *shape)
    with pytest.raises(CompileError, match=rf"queue .* needs \d+ instruction words; preset "
                                           rf"'{p.name}' has {p.imem_words}"):
        compile_matmul(p, *shape)
