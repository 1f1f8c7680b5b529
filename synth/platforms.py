"""FPGA boards and their top-level designs: LpuChip + HostBridge + UART on the board's UART.

Each entry of :data:`BOARDS` names an ``amaranth-boards`` platform, the preset sized for its
device, the clock it runs at and the device's resources (to check that a build fits).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from amaranth.hdl import ClockDomain, ClockSignal, Elaboratable, Instance, Module, Signal
from amaranth.lib import io, wiring
from amaranth.lib.cdc import ResetSynchronizer

from openlpu.params import LpuParams
from openlpu.rtl.bridge import HostBridge, attach_chip
from openlpu.rtl.uart import UartRx, UartTx, uart_divisor

__all__ = ["Board", "BOARDS", "board", "BoardTop", "ecp5_pll_params", "ice40_pll_params",
           "BoardError"]

DEFAULT_BAUD = 115200


class BoardError(ValueError):
    """Unknown board, or a clock the board cannot make."""


@dataclass(frozen=True)
class Board:
    """An FPGA board the flow can build for.

    ``capacity`` maps nextpnr's cell types to the device's count (for the fit check);
    ``logic_cell`` is the cell type counted as LUTs/LCs.
    """
    name: str
    family: str              # "ecp5" | "ice40"
    preset: str              # default preset
    clk_mhz: float           # board oscillator
    target_mhz: float        # default system clock (a PLL makes it when != clk_mhz)
    capacity: dict = field(default_factory=dict)
    logic_cell: str = ""
    ff_cell: str = ""
    dsp_cell: str = ""
    bram_cell: str = ""

    def platform(self):
        if self.name == "ulx3s":
            from amaranth_boards.ulx3s import ULX3S_85F_Platform
            return ULX3S_85F_Platform()
        if self.name == "icebreaker":
            from amaranth_boards.icebreaker import ICEBreakerPlatform
            return ICEBreakerPlatform()
        if self.name == "hx8k":
            from amaranth_boards.ice40_hx8k_b_evn import ICE40HX8KBEVNPlatform
            return ICE40HX8KBEVNPlatform()
        raise BoardError(f"no platform for board {self.name!r}")  # pragma: no cover


BOARDS: dict[str, Board] = {
    "ulx3s": Board("ulx3s", "ecp5", preset="ecp5", clk_mhz=25.0, target_mhz=100.0,
                   capacity={"TRELLIS_COMB": 83640, "TRELLIS_FF": 83640, "MULT18X18D": 156,
                             "DP16KD": 208},
                   logic_cell="TRELLIS_COMB", ff_cell="TRELLIS_FF", dsp_cell="MULT18X18D",
                   bram_cell="DP16KD"),
    "icebreaker": Board("icebreaker", "ice40", preset="ice40", clk_mhz=12.0, target_mhz=12.0,
                        capacity={"ICESTORM_LC": 5280, "ICESTORM_DSP": 8, "ICESTORM_RAM": 30,
                                  "ICESTORM_SPRAM": 4},
                        logic_cell="ICESTORM_LC", ff_cell="ICESTORM_LC",
                        dsp_cell="ICESTORM_DSP", bram_cell="ICESTORM_RAM"),
    # iCE40-HX8K breakout board: the largest iCE40 (no DSP, no SPRAM); FTDI channel B UART.
    "hx8k": Board("hx8k", "ice40", preset="ice40", clk_mhz=12.0, target_mhz=30.0,
                  capacity={"ICESTORM_LC": 7680, "ICESTORM_RAM": 32},
                  logic_cell="ICESTORM_LC", ff_cell="ICESTORM_LC",
                  dsp_cell="ICESTORM_DSP", bram_cell="ICESTORM_RAM"),
}


def board(name: str) -> Board:
    try:
        return BOARDS[name]
    except KeyError:
        raise BoardError(f"unknown board {name!r}; known boards: {', '.join(BOARDS)}") from None


def ecp5_pll_params(fin_mhz: float, fout_mhz: float) -> dict:
    """EHXPLLL dividers for ``fout`` from ``fin`` (feedback from CLKOP, VCO 400..800 MHz).

    Returns ``{"CLKI_DIV", "CLKFB_DIV", "CLKOP_DIV", "fout"}`` with the closest ``fout``;
    raises :class:`BoardError` if no setting is within 1 %.
    """
    best = None
    for clki in range(1, 129):
        pfd = fin_mhz / clki
        if pfd < 3.125:
            break
        for fb in range(1, 81):
            f = pfd * fb
            for op in range(1, 129):
                vco = f * op
                if 400 <= vco <= 800:
                    err = abs(f - fout_mhz)
                    if best is None or err < best[0]:
                        best = (err, clki, fb, op, f)
                    break
    if best is None or best[0] > 0.01 * fout_mhz:
        raise BoardError(f"the ECP5 PLL cannot make {fout_mhz} MHz from {fin_mhz} MHz")
    _, clki, fb, op, f = best
    return {"CLKI_DIV": clki, "CLKFB_DIV": fb, "CLKOP_DIV": op, "fout": f}


def ice40_pll_params(fin_mhz: float, fout_mhz: float) -> dict:
    """SB_PLL40_CORE dividers for ``fout`` from ``fin`` (simple feedback).

    ``fout = fin * (DIVF + 1) / ((DIVR + 1) * 2**DIVQ)`` with the phase detector at 10..133 MHz
    and the VCO at 533..1066 MHz (iCE40 sysCLOCK PLL guide, as in icestorm's ``icepll``).
    Returns ``{"DIVR", "DIVF", "DIVQ", "FILTER_RANGE", "fout"}`` with the closest ``fout``;
    raises :class:`BoardError` if no setting is within 1 %.
    """
    best = None
    for divr in range(16):
        pfd = fin_mhz / (divr + 1)
        if not 10 <= pfd <= 133:
            continue
        for divf in range(128):
            vco = pfd * (divf + 1)
            if not 533 <= vco <= 1066:
                continue
            for divq in range(1, 7):
                f = vco / (1 << divq)
                if 16 <= f <= 275:
                    err = abs(f - fout_mhz)
                    if best is None or err < best[0]:
                        best = (err, divr, divf, divq, f, pfd)
    if best is None or best[0] > 0.01 * fout_mhz:
        raise BoardError(f"the iCE40 PLL cannot make {fout_mhz} MHz from {fin_mhz} MHz")
    _, divr, divf, divq, f, pfd = best
    filter_range = next(i + 1 for i, lim in enumerate((17, 26, 44, 66, 101)) if pfd < lim) \
        if pfd < 101 else 6
    return {"DIVR": divr, "DIVF": divf, "DIVQ": divq, "FILTER_RANGE": filter_range, "fout": f}


class BoardTop(Elaboratable):
    """LpuChip + HostBridge + UART PHY on a board.

    The bridge registers its bus outputs (``HostBridge(bus_reg=True)``) for chips with
    ``params.host_start_reg``, the presets tuned for Fmax (elsewhere the START decode after
    those registers would limit the clock anyway). The ``sync`` domain runs at ``freq_mhz``,
    from a PLL when it differs from the board clock (EHXPLLL on ECP5, SB_PLL40_CORE on iCE40;
    the design is held in reset until the PLL locks). LED 0 shows ``running``, LED 1 ``done``.

    Parameters
    ----------
    board : Board
    params : LpuParams
    freq_mhz : float, optional
        System clock (default: the board's target).
    baud : int
        UART baud rate.
    chip : wiring.Component, optional
        Design with the members of ``LpuChip`` to build instead (default ``LpuChip(params)``).
    """

    def __init__(self, board: Board, params: LpuParams, freq_mhz: float | None = None,
                 baud: int = DEFAULT_BAUD, chip=None):
        self.board = board
        self.params = params
        self.freq_mhz = float(freq_mhz or board.target_mhz)
        self.pll = None
        if self.freq_mhz != board.clk_mhz:
            pll_params = ecp5_pll_params if board.family == "ecp5" else ice40_pll_params
            self.pll = pll_params(board.clk_mhz, self.freq_mhz)
            self.freq_mhz = self.pll["fout"]
        self.baud = baud
        self.divisor = uart_divisor(self.freq_mhz * 1e6, baud)
        if chip is None:
            from openlpu.rtl.chip import LpuChip
            chip = LpuChip(params)
        self.chip = chip

    def _pll_instance(self, clk_in, clk_out, locked):
        """The family's PLL primitive, making ``clk_out`` from ``clk_in`` (``self.pll``)."""
        p = self.pll
        if self.board.family == "ice40":
            return Instance(
                "SB_PLL40_CORE",
                p_FEEDBACK_PATH="SIMPLE", p_DIVR=p["DIVR"], p_DIVF=p["DIVF"], p_DIVQ=p["DIVQ"],
                p_FILTER_RANGE=p["FILTER_RANGE"],
                i_REFERENCECLK=clk_in, i_RESETB=1, i_BYPASS=0,
                o_PLLOUTGLOBAL=clk_out, o_LOCK=locked)
        return Instance(
            "EHXPLLL",
            a_FREQUENCY_PIN_CLKI=str(self.board.clk_mhz),
            a_FREQUENCY_PIN_CLKOP=f"{p['fout']:.6g}",
            a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1",
            a_MFG_GMCREF_SEL="2",
            p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
            p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA",
            p_CLKI_DIV=p["CLKI_DIV"], p_CLKFB_DIV=p["CLKFB_DIV"],
            p_CLKOP_ENABLE="ENABLED", p_CLKOP_DIV=p["CLKOP_DIV"],
            p_CLKOP_CPHASE=p["CLKOP_DIV"] - 1, p_CLKOP_FPHASE=0, p_FEEDBK_PATH="CLKOP",
            i_RST=0, i_STDBY=0, i_CLKI=clk_in, o_CLKOP=clk_out, i_CLKFB=clk_out,
            i_PHASESEL0=0, i_PHASESEL1=0, i_PHASEDIR=0, i_PHASESTEP=0,
            i_PHASELOADREG=0, i_PLLWAKESYNC=0, i_ENCLKOP=0, o_LOCK=locked)

    def elaborate(self, platform):
        m = Module()
        if self.pll is not None:
            clk_io = platform.request(platform.default_clk, dir="-")
            m.submodules.clk_buf = clk_buf = io.Buffer("i", clk_io)
            pll_clk, locked = Signal(name="pll_clk"), Signal(name="pll_locked")
            m.domains.sync = ClockDomain("sync")
            m.submodules.pll = self._pll_instance(clk_buf.i, pll_clk, locked)
            m.d.comb += ClockSignal("sync").eq(pll_clk)
            m.submodules.rst_sync = ResetSynchronizer(~locked, domain="sync")
            platform.add_clock_constraint(pll_clk, self.freq_mhz * 1e6)

        chip = self.chip
        m.submodules.bridge = bridge = HostBridge(timeout=40 * self.divisor,
                                                  bus_reg=self.params.host_start_reg)
        attach_chip(m, bridge, chip)
        m.submodules.uart_rx = rx = UartRx(self.divisor)
        m.submodules.uart_tx = tx = UartTx(self.divisor)
        wiring.connect(m, rx.o, bridge.i)
        wiring.connect(m, bridge.o, tx.i)

        uart = platform.request("uart", 0, dir="-")
        m.submodules.rx_buf = rx_buf = io.Buffer("i", uart.rx)
        m.submodules.tx_buf = tx_buf = io.Buffer("o", uart.tx)
        m.d.comb += [rx.rx.eq(rx_buf.i), tx_buf.o.eq(tx.tx)]

        for i, sig in enumerate([chip.running, chip.done]):
            try:
                led = platform.request("led", i, dir="-")
            except Exception:  # a board with fewer LEDs
                break
            m.submodules[f"led_buf{i}"] = buf = io.Buffer("o", led)
            m.d.comb += buf.o.eq(sig)
        return m
