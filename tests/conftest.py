import numpy as np
import pytest

from openlpu.params import preset

# Presets every preset-independent test runs on.
TEST_PRESETS = ["tiny", "quad"]


@pytest.fixture(params=TEST_PRESETS)
def params(request):
    return preset(request.param)


def int8_operands(rng, shape, kind="random"):
    """int8 test operands: seeded random or an edge pattern (-128, 127, 0, 1)."""
    if kind == "random":
        return rng.integers(-128, 128, size=shape, dtype=np.int64)
    value = {"min": -128, "max": 127, "zero": 0, "one": 1}[kind]
    return np.full(shape, value, dtype=np.int64)
