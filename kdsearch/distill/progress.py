"""What a training run shows: the per-epoch progress display (stop signals:
:mod:`kdsearch.signals`)."""

from __future__ import annotations

import sys

from tqdm import tqdm


class Progress:
    """One line per epoch (on a terminal above a tqdm bar over the epochs, so the history
    stays when the run ends, and shows on a terminal of no size); ``brief``: the bar only;
    nothing if quiet."""

    def __init__(self, epochs: int, done: int, quiet: bool, brief: bool = False):
        self.quiet, self.brief = quiet, brief
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
        if not self.brief:
            self.note(f"epoch {record['epoch']}/{self.epochs}  loss {record['loss']:.4f}  "
                      f"train {record['train_acc']:.2f}%  test {test}  "
                      f"lr {record['lr']:.4g}  {record['images_per_s']:.0f} img/s")
        if not self.bar.disable:
            self.bar.set_postfix(loss=f"{record['loss']:.3f}", test=test)
            self.bar.update()

    def close(self) -> None:
        self.bar.close()


def test_text(record: dict) -> str:
    """``"61.20%"``, ``"61.20% (of 1000)"`` on a test subset, ``"-"`` when not tested."""
    if record.get("test_acc") is None:
        return "-"
    text = f"{record['test_acc']:.2f}%"
    return text + (f" (of {record['test_images']})" if record.get("test_subset") else "")
