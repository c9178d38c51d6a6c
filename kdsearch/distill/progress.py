"""What a training run shows and hears: the per-epoch progress display and stop signals."""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any

from tqdm import tqdm


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


class Progress:
    """A tqdm bar over epochs on a terminal; one line per epoch otherwise; nothing if quiet."""

    def __init__(self, epochs: int, done: int, quiet: bool):
        self.quiet = quiet
        interactive = not quiet and sys.stderr.isatty()
        self.bar = tqdm(total=epochs, initial=done, unit="epoch", disable=not interactive)
        self.epochs = epochs

    def note(self, text: str) -> None:
        if self.quiet:
            return
        if self.bar.disable:
            print(text, flush=True)
        else:
            self.bar.write(text)

    def epoch_done(self, record: dict) -> None:
        test = test_text(record)
        if not self.bar.disable:
            self.bar.set_postfix(loss=f"{record['loss']:.3f}", test=test)
            self.bar.update()
        elif not self.quiet:
            print(
                f"epoch {record['epoch']}/{self.epochs}  loss {record['loss']:.4f}  "
                f"train {record['train_acc']:.2f}%  test {test}  "
                f"lr {record['lr']:.4g}  {record['images_per_s']:.0f} img/s", flush=True,
            )

    def close(self) -> None:
        self.bar.close()


def test_text(record: dict) -> str:
    """``"61.20%"``, ``"61.20% (of 1000)"`` on a test subset, ``"-"`` when not tested."""
    if record.get("test_acc") is None:
        return "-"
    text = f"{record['test_acc']:.2f}%"
    return text + (f" (of {record['test_images']})" if record.get("test_subset") else "")
