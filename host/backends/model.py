"""Host-driver backend that runs programs on the cycle-exact reference model
(``verification/model``: :class:`~openlpu.verification.model.LpuModel`)."""

from openlpu.host.backend import Backend, run_limits

from openlpu.verification.model.chip import LpuModel

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

    def run(self, max_cycles, timeout_s=None):
        """Run the program on the model; the cycle limit and the wall clock (checked every
        1024 model cycles) as in :meth:`openlpu.host.backend.Backend.run`."""
        lim = run_limits(max_cycles, timeout_s)
        try:
            self.model.start(max_cycles=lim.max_cycles, deadline=lim.deadline)
        except TimeoutError:
            raise lim.timeout(self.name, self.model.cycles) from None
        self.last_run_cycles = self.model.cycles
