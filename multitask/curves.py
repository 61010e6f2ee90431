"""Training curves: a run's ``train_log.txt`` read back, and drawn as ``training_curves.png``.

SpeechBrain's ``FileTrainLogger`` writes one line per epoch (``epoch: 3, lr_heads: ... -
train loss: ... - valid loss: ..., valid intent_accuracy: ...``). :func:`read_train_log`
reads those lines back (a resumed run logs an epoch again after a kill between the log
and the checkpoint: the last line of an epoch wins), and :func:`plot_training_curves`
draws the losses and the validation scores per epoch, which the training loop redraws
after every epoch and the demo's report shows.
"""

from __future__ import annotations

from pathlib import Path

CURVES_FILE = "training_curves.png"


def read_train_log(path) -> list[dict]:
    """One dict per epoch, in epoch order: ``{"epoch": int, "<section> <name>": float}``
    (``"train loss"``, ``"valid intent_accuracy"``, ``"lr_heads"``...); lines that are
    not epoch lines are skipped.

    >>> import tempfile, os
    >>> log = os.path.join(tempfile.mkdtemp(), "train_log.txt")
    >>> _ = open(log, "w").write(
    ...     "epoch: 1, lr_heads: 1.00e-03 - train loss: 3.51 - valid loss: 2.87, valid intent_accuracy: 3.04e-01\\n"
    ...     "epoch: 2, lr_heads: 8.00e-04 - train loss: 2.34 - valid loss: 2.32, valid intent_accuracy: 4.06e-01\\n"
    ...     "epoch: 2, lr_heads: 8.00e-04 - train loss: 2.30 - valid loss: 2.31, valid intent_accuracy: 4.10e-01\\n")
    >>> [(e["epoch"], e["train loss"], e["valid intent_accuracy"]) for e in read_train_log(log)]
    [(1, 3.51, 0.304), (2, 2.3, 0.41)]
    """
    epochs: dict[int, dict] = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if not line.startswith("epoch: "):
            continue
        entry: dict = {}
        for section in line.split(" - "):
            for item in section.split(", "):
                key, _, value = item.partition(": ")
                try:
                    entry[key.strip()] = float(value)
                except ValueError:
                    continue
        if "epoch" in entry:
            entry["epoch"] = int(entry["epoch"])
            epochs[entry["epoch"]] = entry
    return [epochs[epoch] for epoch in sorted(epochs)]


def plot_training_curves(log_path, png_path, chosen_epoch: int | None = None,
                         best_metric: str = "mean_accuracy",
                         last_epoch: int | None = None, with_ctc: bool = False) -> Path | None:
    """Draw the training and validation loss, each validation accuracy and ``best_metric``,
    per epoch, from ``log_path`` into ``png_path``; ``chosen_epoch`` (the checkpoint kept by
    ``best_metric``) is marked. Epochs after ``last_epoch`` (left in the log by an earlier
    run in the same folder) are left out. ``with_ctc``: the training loss includes the
    auxiliary CTC loss, which validation leaves out (the legend says so). Returns the
    path, or ``None`` when the log holds no epoch yet.

    >>> import tempfile, os
    >>> folder = tempfile.mkdtemp()
    >>> _ = open(os.path.join(folder, "train_log.txt"), "w").write(
    ...     "epoch: 1 - train loss: 3.5 - valid loss: 2.9, valid intent_accuracy: 0.30\\n"
    ...     "epoch: 2 - train loss: 2.3 - valid loss: 2.3, valid intent_accuracy: 0.41\\n")
    >>> out = plot_training_curves(os.path.join(folder, "train_log.txt"),
    ...                            os.path.join(folder, CURVES_FILE), chosen_epoch=2)
    >>> out.name, out.stat().st_size > 1000
    ('training_curves.png', True)
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    epochs = [entry for entry in read_train_log(log_path)
              if last_epoch is None or entry["epoch"] <= last_epoch]
    if not epochs:
        return None
    x = [entry["epoch"] for entry in epochs]
    fig = Figure(figsize=(10, 4))
    FigureCanvasAgg(fig)
    loss_ax, score_ax = fig.subplots(1, 2)
    train_label = "training (with the CTC loss)" if with_ctc else "training"
    for key, label in (("train loss", train_label), ("valid loss", "validation")):
        if any(key in entry for entry in epochs):
            loss_ax.plot(x, [entry.get(key, float("nan")) for entry in epochs], marker="o",
                         label=label)
    loss_ax.set(title="Loss (weighted sum of the tasks')", xlabel="epoch")
    scores = [key for key in epochs[-1] if key.startswith("valid ") and key.endswith("_accuracy")
              and "unweighted" not in key]
    if f"valid {best_metric}" in epochs[-1] and f"valid {best_metric}" not in scores:
        scores.append(f"valid {best_metric}")
    for key in scores:
        kept_by = key == f"valid {best_metric}"
        score_ax.plot(x, [entry.get(key, float("nan")) for entry in epochs], "--" if kept_by else "-",
                      marker="o", label=key.removeprefix("valid ") + (" (keeps the checkpoint)"
                                                                       if kept_by else ""))
    score_ax.set(title="Validation scores", xlabel="epoch", ylim=(0, 1))
    for ax in (loss_ax, score_ax):
        if chosen_epoch is not None:
            ax.axvline(chosen_epoch, color="0.6", linestyle=":", label=f"checkpoint (epoch {chosen_epoch})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.tight_layout()
    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png_path, dpi=100)
    return png_path
