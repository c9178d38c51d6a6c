"""Process lifetime: SIGINT/SIGTERM as a request to stop after the current step (search,
training, tuning), passed on to worker processes, which end with the process that started
them."""

from __future__ import annotations

import contextlib
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


class ForwardSignals(StopSignals):
    """:class:`StopSignals` for the parent of worker processes (``kdsearch compare --jobs``):
    each SIGINT/SIGTERM is also passed on to every live child that ``multiprocessing``
    started, so that each stops after its current step, checkpoints and reports it as the
    parent would. A second signal reaches them too (they stop at once)."""

    def handle(self, signum: int, frame: Any) -> None:
        self.requested = self.requested or signal.Signals(signum).name
        for child in multiprocessing.active_children():
            with contextlib.suppress(ProcessLookupError):  # ended since
                os.kill(child.pid, signum)


def tie_to_parent() -> None:
    """Make this worker process a child of its parent in every way that matters for stopping.

    Call it in a ``multiprocessing`` worker's initializer. A pool's workers do not die with
    their parent: a killed ``kdsearch compare`` left them training, writing into the run
    folders that the next compare resumes. Here a daemon thread waits on the parent's
    sentinel and exits the process as soon as the parent ends, however it ends (the
    training it cuts resumes from its last checkpoint; every file is written atomically).
    And the worker leaves the terminal's process group, so that Ctrl-C reaches only the
    parent, which passes it on once (:class:`ForwardSignals`).
    """
    parent = multiprocessing.parent_process()
    if parent is None:
        return
    os.setpgid(0, 0)
    threading.Thread(target=_exit_when_ready, args=(parent.sentinel,), daemon=True,
                     name="exit-with-parent").start()


def _exit_when_ready(sentinel: int) -> None:
    multiprocessing.connection.wait([sentinel])
    os._exit(1)
