"""Process lifetime: SIGINT/SIGTERM as a request to stop after the current step (search,
training, tuning), and worker processes that end with the process that started them."""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
from typing import Any


class StopSignals:
    """Context manager: SIGINT/SIGTERM set ``requested`` (the signal's name) instead of killing.

    The loop checks the flag after each step, so it costs no host sync. A second signal
    raises :class:`KeyboardInterrupt` at once. Only installed in the main thread.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __enter__(self) -> StopSignals:
        self.requested: str | None = None
        self.previous = {}
        if threading.current_thread() is threading.main_thread():
            self.previous = {sig: signal.signal(sig, self.handle) for sig in self.SIGNALS}
        return self

    def handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name

    def __exit__(self, *exc_info: Any) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def exit_with_parent() -> None:
    """End this worker process as soon as the process that started it ends, however it ends.

    Call it in a ``multiprocessing`` worker's initializer. A pool's workers do not die with
    their parent: a ``kdsearch compare`` killed by SIGTERM or SIGKILL would leave them
    training, writing into the run folders that the next compare resumes. A daemon thread
    waits on the parent's sentinel and exits the process at once; the training it interrupts
    resumes from its last checkpoint, and every file is written atomically.
    """
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_exit_when_ready, args=(parent.sentinel,), daemon=True,
                         name="exit-with-parent").start()


def _exit_when_ready(sentinel: int) -> None:
    multiprocessing.connection.wait([sentinel])
    os._exit(1)
