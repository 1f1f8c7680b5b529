"""``Device.run`` sees errors raised after DONE by instructions still in flight.

A SHIFT and a PERMUTE of the west SXM drive the same stream in the same cycles
(STREAM_COLLISION), ``d_func = superlanes + 1`` cycles after they issue, which is after the last
HALT: the chip reports DONE first and the flag a few cycles later. The driver must wait
(:func:`openlpu.isa.drain_cycles`) before it reads ERRORS, on the Verilator RTL of ``mini``.
"""

import pytest

from openlpu import isa
from openlpu.firmware.asm import assemble
from openlpu.firmware.package import Package
from openlpu.host.device import Device, DeviceError
from openlpu.params import preset

P = preset("mini")


def _collision_after_halt(p):
    pos = {s.name: s.position for s in p.floorplan}
    t_s = 1 + pos["mem_w0"] - pos["sxm_w"]          # the READ of mem_w0 reaches sxm_w
    t_m = t_s - (1 + pos["mem_w1"] - pos["sxm_w"])  # the map from mem_w1 arrives with it
    nop = lambda n: f"    NOP {n}\n" if n > 0 else ""
    text = f"""
.queue mem_w0.read
    READ 0, s2, W
    HALT
.queue mem_w1.read
{nop(t_m)}    READ 0, s5, W
    HALT
.queue sxm_w.shift
{nop(t_s)}    SHIFT 2, W, 6, E, {p.lanes}
    HALT
.queue sxm_w.permute
{nop(t_s)}    PERMUTE 2, W, 6, E, s5, W
    HALT
"""
    progs = assemble(text, p)
    halt = isa.BY_MNEMONIC["HALT"].encode()
    queues = {q.name: progs.get(q.name, [halt]) for q in p.queues}
    collide_at = t_s + isa.BY_MNEMONIC["SHIFT"].d_func(p)
    return Package(name="collision_after_halt", params=p, queues=queues, inputs=[], outputs=[],
                   predicted_cycles=t_s + 2), collide_at


@pytest.mark.timeout(600)
def test_error_after_done_is_reported():
    pkg, collide_at = _collision_after_halt(P)
    assert collide_at > pkg.predicted_cycles            # the drive comes after DONE
    with Device.open("verilator", P) as dev:
        dev.load(pkg)
        with pytest.raises(DeviceError, match="STREAM_COLLISION"):
            dev.run()
