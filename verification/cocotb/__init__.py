"""cocotb + Verilator verification of the whole chip.

``sim_runner``      pytest side: build the chip for Verilator (cached) and run a cocotb module
                    under a wall-clock limit, with a waveform on failure.
``hostbus``         cocotb side: a host-bus driver for the chip's ``host__*`` ports.
``test_<unit>.py``  pytest tests; ``cocotb_<unit>.py`` the cocotb tests they run.
"""
