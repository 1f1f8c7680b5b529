def pytest_configure(config):
    config.addinivalue_line(
        "markers", "synth: FPGA synthesis + place-and-route (minutes; deselect with -m 'not synth')")
