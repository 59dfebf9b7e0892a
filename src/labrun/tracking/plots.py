"""The plots a run stores beside its test metrics."""

from __future__ import annotations

from pathlib import Path

import torch

from labrun.files import pyplot


def confusion_png(matrix: torch.Tensor, class_names: list[str], path: Path) -> Path:
    plt = pyplot()
    n = len(class_names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * n, 0.8 + 0.7 * n), dpi=120)
    ax.imshow(matrix.numpy(), cmap="Blues")
    ax.set_xticks(range(n), class_names, rotation=45, ha="right")
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    peak = matrix.max().item() or 1
    for i in range(n):
        for j in range(n):
            v = int(matrix[i, j])
            ax.text(j, i, v, ha="center", va="center", color="white" if v > peak / 2 else "black")
    ax.set_title("test confusion matrix")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def roc_png(
    fpr: list[torch.Tensor], tpr: list[torch.Tensor], class_names: list[str], path: Path
) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 5), dpi=120)
    for name, f, t in zip(class_names, fpr, tpr, strict=True):
        auc = torch.trapezoid(t, f).item()
        ax.plot(f.numpy(), t.numpy(), label=f"{name} (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], "k--", linewidth=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("test ROC, one vs rest")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def coverage_png(coverage: dict, class_names: list[str], path: Path) -> Path:
    """Generated vs real class shares under the feature classifier."""
    plt = pyplot()
    n = len(class_names)
    fig, ax = plt.subplots(figsize=(1.5 + 0.6 * n, 3.5), dpi=120)
    xs = range(n)
    ax.bar([x - 0.2 for x in xs], coverage["real"], width=0.4, label="real (test)")
    ax.bar([x + 0.2 for x in xs], coverage["generated"], width=0.4, label="generated")
    ax.set_xticks(list(xs), class_names, rotation=45, ha="right")
    ax.set_ylabel("share")
    ax.set_title(f"mode coverage: KL(real || generated) = {coverage['kl']:.4f}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
