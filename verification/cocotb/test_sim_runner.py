"""The cocotb runner helper reports a failing run with its log and a waveform file."""

import pytest

from openlpu.params import preset
from openlpu.verification.cocotb.sim_runner import CocotbFailure, run_cocotb


def test_failure_leaves_waveform(tmp_path, capsys):
    with pytest.raises(CocotbFailure, match="1 of 1 cocotb tests failed") as info:
        run_cocotb("cocotb_selftest", preset("tiny"), tmp_path, timeout=300)
    wave = tmp_path / "dump.vcd"
    assert f"waveform: {wave}" in str(info.value)
    assert f"waveform: {wave}" in capsys.readouterr().out
    assert wave.stat().st_size > 0
    assert "host__r_valid" in wave.read_text(errors="replace")[:1_000_000]
