"""FPGA build smoke tests: the smallest preset (``ice40``) through Yosys + nextpnr for the
iCE40-HX8K board (its own device, where it fills about 90 % of the logic cells) and for the
ULX3S-85F (ECP5 flow).

Both run at the board's clock (no PLL) to keep place-and-route short; the 100 MHz build of the
``ecp5`` preset is run with ``make synth`` and recorded in docs/fpga.md.
"""

import json

import pytest

from openlpu.params import preset
from openlpu.synth import build as synth_build
from openlpu.synth.platforms import (BOARDS, BoardError, BoardTop, ecp5_pll_params,
                                     ice40_pll_params)


def test_pll_dividers():
    p = ecp5_pll_params(25.0, 100.0)
    assert p["fout"] == pytest.approx(100.0)
    vco = p["fout"] * p["CLKOP_DIV"]
    assert 400 <= vco <= 800
    with pytest.raises(BoardError, match="cannot make"):
        ecp5_pll_params(25.0, 2000.0)


@pytest.mark.parametrize("fout", [16.0, 24.0, 30.0, 48.0, 100.0])
def test_ice40_pll_dividers(fout):
    p = ice40_pll_params(12.0, fout)
    pfd = 12.0 / (p["DIVR"] + 1)
    vco = pfd * (p["DIVF"] + 1)
    assert 10 <= pfd <= 133 and 533 <= vco <= 1066
    assert p["fout"] == pytest.approx(vco / 2 ** p["DIVQ"])
    assert abs(p["fout"] - fout) <= 0.01 * fout
    assert 1 <= p["FILTER_RANGE"] <= 6
    with pytest.raises(BoardError, match="cannot make"):
        ice40_pll_params(12.0, 400.0)


def test_board_table_and_errors():
    assert {"ulx3s", "icebreaker"} <= set(BOARDS)
    for b in BOARDS.values():
        preset(b.preset)                         # every board's default preset exists
    with pytest.raises(BoardError, match="known boards"):
        synth_build.get_board("nosuchboard")
    top = BoardTop(BOARDS["hx8k"], preset("ice40"), 30.0)       # iCE40 PLL from 12 MHz
    assert top.pll["fout"] == pytest.approx(30.0) and top.freq_mhz == pytest.approx(30.0)
    with pytest.raises(BoardError, match="cannot make"):
        BoardTop(BOARDS["hx8k"], preset("ice40"), 5.0)


@pytest.mark.synth
@pytest.mark.timeout(900)
@pytest.mark.parametrize("board_name,bitstream,min_bytes", [
    ("hx8k", "top.bin", 100_000),     # an HX8K image is 135,100 bytes
    ("ulx3s", "top.bit", 100_000),
])
def test_smallest_preset_builds_and_fits(tmp_path, board_name, bitstream, min_bytes):
    brd = BOARDS[board_name]
    try:
        synth_build.find_tools(brd.family, log=lambda *a: None)
    except synth_build.BuildError as e:
        pytest.skip(str(e))
    result = synth_build.build(board_name, "ice40", freq_mhz=brd.clk_mhz, out=tmp_path,
                               timeout=840, log=print)
    saved = json.loads((tmp_path / f"{board_name}-ice40" / "result.json").read_text())
    assert saved == result
    assert (tmp_path / f"{board_name}-ice40" / bitstream).stat().st_size > min_bytes
    assert result["fits"]
    for cell, cap in brd.capacity.items():
        used = result["utilization"].get(cell, {}).get("used", 0)
        assert used <= cap, f"{cell}: {used} used, device has {cap}"
    assert result["luts"] > 1000 and result["brams"] > 0     # the chip was not optimised away
    assert result["fmax_mhz"] and result["fmax_mhz"] > 0     # recorded, not asserted against a target


def test_ice40_flip_flops_from_the_packer_log():
    tim = ("Info: Packing LUT-FFs..\nInfo:     4285 LCs used as LUT4 only\n"
           "Info:     1223 LCs used as LUT4 and DFF\nInfo: Packing non-LUT FFs..\n"
           "Info:     1182 LCs used as DFF only\nInfo:      429 LCs used as CARRY only\n")
    assert synth_build._ice40_dff_lcs(tim) == 1223 + 1182
    assert synth_build._ice40_dff_lcs("no packer output") is None


@pytest.mark.timeout(300)
def test_hx8k_top_has_the_pll_at_its_target_clock():
    """The HX8K build at its 30 MHz target instantiates the iCE40 PLL with the computed
    dividers and constrains its output (elaboration and RTLIL only, no tools)."""
    brd = BOARDS["hx8k"]
    top = BoardTop(brd, preset("ice40"))
    assert top.freq_mhz == pytest.approx(brd.target_mhz) and top.pll is not None
    plan = brd.platform().prepare(top, name="top")
    rtlil = plan.files["top.il"]
    rtlil = rtlil if isinstance(rtlil, str) else rtlil.decode()
    assert "SB_PLL40_CORE" in rtlil
    assert f"parameter \\DIVF {top.pll['DIVF']}" in rtlil
    assert f"set_frequency pll_clk {brd.target_mhz}" in plan.files["top.pcf"]


@pytest.mark.timeout(300)
def test_ulx3s_top_has_the_pll_at_its_target_clock():
    """The ULX3S build at its 100 MHz target instantiates the ECP5 PLL with the computed
    dividers and constrains its output (elaboration and RTLIL only, no tools)."""
    brd = BOARDS["ulx3s"]
    top = BoardTop(brd, preset("ice40"))
    plan = brd.platform().prepare(top, name="top")
    rtlil = plan.files["top.il"]
    assert "EHXPLLL" in rtlil and f"parameter \\CLKFB_DIV {top.pll['CLKFB_DIV']}" in rtlil
    assert "pll_clk" in plan.files["top.lpf"] and "100" in plan.files["top.lpf"]
