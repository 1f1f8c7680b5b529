"""Host-driver backend that runs programs on the reference model."""

from openlpu.host.backend import Backend, DeviceTimeout

from .chip import LpuModel

__all__ = ["ModelBackend"]


class ModelBackend(Backend):
    """The reference model behind the host bus; ``run`` executes the whole program at once."""

    name = "model"

    def __init__(self, params, *, strict: bool = False):
        super().__init__(params)
        self.model = LpuModel(params, strict=strict)

    def write(self, addr, data):
        self.model.write(addr, data)

    def read(self, addr):
        return self.model.read(addr)

    def run(self, max_cycles):
        try:
            self.model.start(max_cycles=max_cycles)
        except TimeoutError as e:
            raise DeviceTimeout(f"model: {e}") from None
