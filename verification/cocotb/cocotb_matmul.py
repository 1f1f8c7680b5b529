"""cocotb matmul tests: load a package and its inputs over the host bus, run, check C and CYCLES.

The cases come from the manifest named by ``OPENLPU_MATMUL_MANIFEST`` (written by
``test_matmul.py``): one package file and one ``.npz`` with ``A`` and ``B`` per case.
"""

import json
import os

import cocotb
import numpy as np

from openlpu.firmware.package import Package
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
    C = (await bus.run_package(pkg, {"A": A, "B": B}))["C"]
    assert C.shape == expected.shape and C.dtype == np.int32
    bad = np.argwhere(C != expected)
    assert bad.size == 0, (f"{len(bad)} of {C.size} elements differ; first at {tuple(bad[0])}: "
                           f"got {C[tuple(bad[0])]}, expected {expected[tuple(bad[0])]}")
