"""Host-bus smoke tests of the whole chip in cocotb + Verilator (tiny and default presets)."""

import pytest

from openlpu.params import preset

from openlpu.verification.cocotb.sim_runner import run_cocotb


@pytest.mark.parametrize("name", ["tiny", "default"])
def test_hostbus(name, tmp_path):
    res = run_cocotb("cocotb_hostbus", preset(name), tmp_path, timeout=300)
    assert res.tests == 3 and res.failed == 0
