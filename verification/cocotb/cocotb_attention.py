"""cocotb attention tests: load a package and its per-head Q, K, V over the host bus, run, check
every output element against the numpy integer reference and CYCLES against the prediction.

The cases come from the manifest named by ``OPENLPU_ATTENTION_MANIFEST`` (written by
``test_attention.py``): one package file and one ``.npz`` (``Q``, ``K``, ``V`` of shape
``(heads, seq, head_dim)``) per case. Expected outputs are computed here from
:func:`openlpu.verification.reference.attention_int`.
"""

import json
import os

import cocotb
import numpy as np

from openlpu.firmware.attention import attention_tensor_names
from openlpu.firmware.package import Package
from openlpu.verification import reference as ref
from openlpu.verification.cocotb.hostbus import HostBus, params_from_env

PARAMS = params_from_env()
_MANIFEST = os.environ.get("OPENLPU_ATTENTION_MANIFEST")
CASES = {c["case"]: c for c in json.load(open(_MANIFEST))} if _MANIFEST else {}


@cocotb.test(skip=not CASES)
@cocotb.parametrize(case=list(CASES) or ["none"])
async def test_attention(dut, case):
    spec = CASES[case]
    pkg = Package.load(spec["package"])
    assert pkg.params == PARAMS, f"package built for {pkg.params.name}, chip is {PARAMS.name}"
    data = np.load(spec["data"])
    meta = pkg.meta
    heads, causal = meta["heads"], meta["causal"]
    consts = ref.AttentionConsts(meta["mult"], meta["shift"], meta["delta"])
    names = attention_tensor_names(heads)
    inputs, expected = {}, {}
    for h in range(heads):
        Q, K, V = data["Q"][h], data["K"][h], data["V"][h]
        inputs.update({names["Q"][h]: Q, names["K"][h]: K, names["V"][h]: V})
        expected[names["O"][h]] = ref.attention_int(Q, K, V, consts, causal)["O"]

    bus = await HostBus.start(dut)
    out = await bus.run_package(pkg, inputs)
    for name, want in expected.items():
        got = out[name]
        assert got.shape == want.shape, f"{name}: shape {got.shape} != {want.shape}"
        bad = np.argwhere(got != want)
        assert bad.size == 0, (f"{name}: {len(bad)} of {got.size} elements differ; first at "
                               f"{tuple(bad[0])}: got {got[tuple(bad[0])]}, expected "
                               f"{want[tuple(bad[0])]}")
