"""cocotb matmul tests: load a package and its inputs over the host bus, run, check C and CYCLES.

The cases come from the manifest named by ``OPENLPU_MATMUL_MANIFEST`` (written by
``test_matmul.py``): one package file and one ``.npz`` with ``A`` and ``B`` per case.
"""

import json
import os

import cocotb
import numpy as np

from openlpu import isa
from openlpu.firmware.package import Package
from openlpu.host.image import assemble_outputs, input_writes, load_writes, output_reads
from openlpu.verification.cocotb.hostbus import HostBus, params_from_env

PARAMS = params_from_env()
_MANIFEST = os.environ.get("OPENLPU_MATMUL_MANIFEST")
CASES = {c["case"]: c for c in json.load(open(_MANIFEST))} if _MANIFEST else {}


@cocotb.test(skip=not CASES)
@cocotb.parametrize(case=list(CASES) or ["none"])
async def test_matmul(dut, case):
    spec = CASES[case]
    pkg = Package.load(spec["package"])
    assert pkg.params == PARAMS, f"package built for {pkg.params.name}, chip is {PARAMS.name}"
    data = np.load(spec["data"])
    A, B = data["A"], data["B"]
    expected = A.astype(np.int32) @ B.astype(np.int32)

    bus = await HostBus.start(dut)
    await bus.write_many(load_writes(pkg))
    await bus.write_many(input_writes(pkg, {"A": A, "B": B}))
    cycles = await bus.run(max_cycles=10 * pkg.predicted_cycles + 1000)
    assert await bus.reg(isa.HostReg.ERRORS) == 0, "chip raised error flags"
    measured = await bus.reg(isa.HostReg.CYCLES)
    assert measured == pkg.predicted_cycles, \
        f"CYCLES {measured} != predicted {pkg.predicted_cycles}"
    assert cycles == measured
    C = assemble_outputs(pkg, await bus.read_many(output_reads(pkg)))["C"]
    assert C.shape == expected.shape and C.dtype == np.int32
    bad = np.argwhere(C != expected)
    assert bad.size == 0, (f"{len(bad)} of {C.size} elements differ; first at {tuple(bad[0])}: "
                           f"got {C[tuple(bad[0])]}, expected {expected[tuple(bad[0])]}")
