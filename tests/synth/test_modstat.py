"""The per-module resource table (synth/modstat.py): parsing of Yosys ``stat`` output."""

from openlpu.synth.modstat import _group, format_stats, parse_stat

STAT = """
=== lpu_chip.icu_mem_e0_read ===

   Number of wires:                391
   Number of cells:                789
     SB_DFF                         39
     SB_DFFESR                     121
     SB_LUT4                       457
     SB_RAM40_4K                     2

=== lpu_chip.mem_e0.sweep_read ===

   Number of cells:                 12
     SB_DFFESR                       1
     SB_LUT4                        11

=== lpu_chip.mem_e0 ===

   Number of cells:                943
     SB_CARRY                       86
     SB_LUT4                       751
     SB_RAM40_4K                     4
     lpu_chip.mem_e0.sweep_read      1

=== design hierarchy ===

   lpu_chip                          1
     SB_LUT4                     14468
"""


def test_parse_and_group():
    s = parse_stat(STAT, "ice40")
    assert s["lpu_chip.icu_mem_e0_read"] == {"FF": 160, "LUT4": 457, "BRAM": 2}
    assert s["lpu_chip.mem_e0"] == {"CARRY": 86, "LUT4": 751, "BRAM": 4}   # no submodule cell
    assert "design hierarchy" not in " ".join(s)                           # totals not counted
    assert _group("lpu_chip.mem_e0.sweep_read", "lpu_chip") == "mem_e0"
    assert _group("lpu_chip", "lpu_chip") == "(top)"
    table = format_stats({"mem_e0": {"LUT4": 762, "BRAM": 4}, "fabric": {"LUT4": 801}}, "ice40")
    assert table.splitlines()[-1].split("|")[1].strip() == "1563"           # total LUT4
