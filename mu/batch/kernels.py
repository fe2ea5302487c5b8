"""The Jupyter kernels ``mu.batch.execution`` starts for papermill: on this machine, over IPC, stopped cleanly.

Imported where a notebook executes (the worker process or Ray task), not where a batch is planned:
jupyter_client is not needed to check a batch's parameters.
"""

from __future__ import annotations

import os
import tempfile
import uuid

from jupyter_client.manager import AsyncKernelManager
from traitlets import CaselessStrEnum, default


class LocalKernelManager(AsyncKernelManager):
    """The kernel on this machine over IPC (unix sockets) instead of TCP: nothing listens on a
    network port, and ipykernel has no reason to warn that TCP traffic is unencrypted.

    Shut down without an interrupt: jupyter_client sends SIGINT to every kernel before asking it to
    shut down (to stop code still running), but papermill shuts a kernel down once its notebook has
    run or failed. The SIGINT then only lands in whatever message ipykernel is handling and prints
    ``[IPKernelApp] ERROR | KeyboardInterrupt caught in kernel.`` to the runner's terminal. A kernel
    that is still busy stops all the same: shutdown request, then SIGTERM, then SIGKILL
    (``_async_finish_shutdown``). An interrupt asked for while running (a cell timeout) is sent.
    """

    transport = CaselessStrEnum(["tcp", "ipc"], default_value="ipc", config=True)

    @default("ip")
    def _unique_ipc_path(self) -> str:
        # jupyter_client's default is "kernel-ipc" in the working directory when no connection file is
        # set yet: two kernels started at once from one folder would then share their sockets.
        return os.path.join(tempfile.gettempdir(), f"mu-kernel-{uuid.uuid4().hex[:16]}-ipc")

    async def _async_interrupt_kernel(self) -> None:
        if self.shutting_down:
            return
        await super()._async_interrupt_kernel()
