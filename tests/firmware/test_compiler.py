import dataclasses
import math

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
    with pytest.raises(CompileError, match="needs .* words of one MEM bank"):
        compile_matmul(params, params.mem_words + 1, 1, 1)


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
