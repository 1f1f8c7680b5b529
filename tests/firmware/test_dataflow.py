"""The dataflow builder places operands so they arrive together and keeps jobs apart."""

import pytest

from openlpu import isa
from openlpu.firmware.dataflow import INT8, Flow, MemSrc, commit
from openlpu.firmware.schedule import CompileError, Schedule
from openlpu.isa import Dir
from openlpu.params import preset

P = preset("mini")


def _job():
    flow = Flow(P)
    a = MemSrc((("mem_w0", 0),), stream=0)
    b = MemSrc((("mem_w1", 0),), stream=1)
    y = flow.vxm("ADD", a, b, dtype=INT8, out_dir=Dir.EAST)
    flow.write(y, [("mem_e0", P.mem_words)])
    return flow


def test_operands_arrive_in_the_issue_cycle():
    flow = _job()
    ops = {m: (q, t, f) for q, t, m, f in flow.ops if m != "READ"}
    reads = [(q, t) for q, t, m, f in flow.ops if m == "READ"]
    t_add = ops["VADD"][1]
    d_read = isa.BY_MNEMONIC["READ"].d_func(P)
    v = P.slice("vxm").position
    for q, t in reads:
        pos = P.slice(q.split(".")[0]).position
        assert t + d_read + (v - pos) == t_add
    t_write = ops["WRITE"][1]
    assert t_write == t_add + isa.BY_MNEMONIC["VADD"].d_func(P) + P.slice("mem_e0").position - v


def test_jobs_do_not_share_queue_slots_or_stream_slots():
    sched = Schedule(P)
    offsets = [commit(sched, _job(), 0) for _ in range(4)]
    assert len(set(offsets)) == 4                       # the same resources: one job per cycle
    assert offsets == sorted(offsets)


def _relu_from(slice_name, stream):
    flow = Flow(P)
    flow.vxm("RELU", MemSrc(((slice_name, 0),), stream=stream), dtype=INT8, out_dir=Dir.EAST)
    return flow


def test_two_values_never_share_a_stream_slot():
    # mem_w1's value passes mem_w0's output column one cycle after mem_w0 could use it: a job
    # from mem_w0 on the same stream one cycle later would overwrite it and must be delayed
    for stream, expected in ((0, 2), (1, 1)):
        sched = Schedule(P)
        assert commit(sched, _relu_from("mem_w1", 0), 0) == 0
        assert commit(sched, _relu_from("mem_w0", stream), 1) == expected


def test_misaligned_operands_are_rejected():
    flow = Flow(P)
    a = flow.vxm("RELU", MemSrc((("mem_w0", 0),), stream=0), dtype=INT8, out_dir=Dir.EAST)
    late = flow.vxm("RELU", MemSrc((("mem_w1", 0),), stream=1), dtype=INT8, out_dir=Dir.EAST,
                    t=a.t_drive + 5)
    with pytest.raises(CompileError, match="operands arrive at different cycles"):
        flow.vxm("ADD", a, late, dtype=INT8, out_dir=Dir.EAST, a_chain=True, b_chain=True)


def _chain_of_two(stream):
    """x (mem_w0) -> VRELU -> VRELU chained to it -> mem_e0: two ALUs drive ``stream``."""
    flow = Flow(P)
    x = MemSrc((("mem_w0", 0),), stream=stream)
    y = flow.vxm("RELU", x, dtype=INT8, out_dir=Dir.EAST)
    z = flow.vxm("RELU", y, dtype=INT8, out_dir=Dir.EAST, a_chain=True)
    flow.write(z, [("mem_e0", P.mem_words)])
    return flow


def test_two_alus_driving_one_stream_in_one_cycle_are_kept_apart():
    """The VXM's ALUs share one position: a later job's first op issued in the cycle of an
    earlier job's chained op (another ALU, the same stream, the same drive cycle) would put two
    values on one stream register, so commit delays it."""
    sched = Schedule(P)
    first = _chain_of_two(0)
    assert commit(sched, first, 0) == 0
    vrelu = sorted(t for q, t, m, f in first.ops if m == "VRELU")
    later = _chain_of_two(0)
    clash = vrelu[1] - vrelu[0]           # the later job's first VRELU beside the chained one
    drive = {t + isa.BY_MNEMONIC["VRELU"].d_func(P) for t in vrelu}
    off = commit(sched, later, clash)
    assert off > clash
    assert not drive & {off + t + isa.BY_MNEMONIC["VRELU"].d_func(P) for t in vrelu}
