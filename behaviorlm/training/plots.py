"""Training curves saved next to each adapter (``loss.png``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def plot_stage_log(history: list[dict[str, float]], path: Path, title: str) -> None:
    """Readout cross-entropy per step with a moving average, and the KL term when it is on."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not history:
        return
    steps = np.array([h["step"] for h in history])
    nll = np.array([h["nll"] for h in history])
    kl = np.array([h["kl"] for h in history])
    window = max(1, len(nll) // 20)
    smooth = np.convolve(nll, np.ones(window) / window, mode="valid")
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, nll, alpha=0.3, label="cross-entropy over behaviors (weighted)")
    ax.plot(steps[window - 1 :], smooth, label=f"moving mean ({window})")
    if np.any(kl > 0):
        ax.plot(steps, kl, alpha=0.6, label="KL(base || adapted), non-target")
    ax.set_xlabel("step")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
