"""SIGINT/SIGTERM as a request to stop after the current step (search, training, tuning)."""

from __future__ import annotations

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
