"""What a training run shows and leaves: metrics.csv, curves.png, the events a front end renders (progress,
the per-epoch line)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from swinseg.io import atomic_output


def metrics_columns(classes: tuple[str, ...]) -> list[str]:
    """metrics.csv's header: per-epoch training numbers, then validation Dice (mean and per class)."""
    fixed = ["epoch", "iteration", "loss", "lr", "slices_per_s", "seconds", "val_dice"]
    return fixed + [f"dice_{name}" for name in classes[1:]]


def write_metrics(path: Path, history: list[dict[str, Any]], classes: tuple[str, ...]) -> None:
    """metrics.csv from the history (rewritten whole, atomically, so it always matches last.pt)."""
    columns = metrics_columns(classes)
    lines = [",".join(columns)]
    for row in history:
        lines.append(",".join(_csv_value(row.get(column)) for column in columns))
    with atomic_output(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def plot_curves(path: Path, history: list[dict[str, Any]], classes: tuple[str, ...]) -> None:
    """curves.png: training loss, learning rate and validation Dice per class against the epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in history]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), constrained_layout=True)
    axes[0].plot(epochs, [row["loss"] for row in history], color="tab:blue")
    axes[0].set(title="training loss (0.4 CE + 0.6 Dice)", xlabel="epoch", ylabel="loss")
    axes[1].plot(epochs, [row["lr"] for row in history], color="tab:orange")
    axes[1].set(title="learning rate (end of epoch)", xlabel="epoch", ylabel="lr")
    validated = [row for row in history if row.get("val_dice") is not None]
    if validated:
        val_epochs = [row["epoch"] for row in validated]
        for name in classes[1:]:
            axes[2].plot(val_epochs, [row[f"dice_{name}"] for row in validated], marker=".", label=name)
        axes[2].plot(val_epochs, [row["val_dice"] for row in validated], color="black", linewidth=2, label="mean")
        axes[2].legend(fontsize="small", ncol=2)
        axes[2].set_ylim(0, 1)
    else:
        axes[2].text(0.5, 0.5, "no validation yet", ha="center", va="center", transform=axes[2].transAxes)
    axes[2].set(title="validation Dice (3-D, per class)", xlabel="epoch", ylabel="Dice")
    for axis in axes:
        axis.grid(alpha=0.3)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


class TrainingEvents:
    """What a training run reports as it goes, for a front end to show (swinseg's CLI draws a rich bar on a
    terminal, one line per epoch otherwise). This base class shows nothing; other processes of a job get it."""

    steps_wanted = False  # `step` is called (which waits for the GPU, twice a second) only when True

    def log(self, text: str) -> None:
        """A line of the run's log (summary, notes, resume and finish messages)."""

    def loading(self, done: int, total: int, name: str) -> None:
        """`done` of `total` cases read and checked, `name` the latest."""

    def epoch_started(self, epoch: int, epochs: int, batches: int) -> None:
        """Epoch `epoch` (1-based) of `epochs` begins; it has `batches` steps."""

    def step(self, done: int, loss: float, lr: float, slices_per_s: float) -> None:
        """`done` steps of the epoch are finished; running mean loss, learning rate and speed."""

    def validating(self, text: str) -> None:
        """Validation runs (`text` says on what)."""

    def epoch_finished(self, line: str) -> None:
        """The epoch is saved; `line` is its one-line summary (loss, lr, speed, ETA, validation Dice)."""


def epoch_line(row: dict[str, Any], epochs: int, best: dict[str, Any]) -> str:
    """The epoch's one-line summary (the whole log when stdout is not a terminal)."""
    remaining = (epochs - row["epoch"]) * row["seconds"]
    line = (
        f"epoch {row['epoch']}/{epochs}  loss {row['loss']:.4f}  lr {row['lr']:.3e}  "
        f"{row['slices_per_s']:.1f} slices/s  {row['seconds']:.1f} s  ETA {_duration(remaining)}"
    )
    if row.get("val_dice") is not None:
        line += f"  val Dice {row['val_dice']:.4f} (best {best['dice']:.4f} @ {best['epoch']})"
    return line


def _duration(seconds: float) -> str:
    seconds = int(math.ceil(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"
