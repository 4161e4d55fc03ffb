"""layer_profile.png: how well each residual position separates harmful from harmless prompts
along the refusal direction, how much each layer writes of it, and the selected edit's strength
per layer over it (so a reader sees whether the edit sits where the refusal is)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from heretic.atomic import write_with
from heretic.engine.parameters import AblationParams


def plot_layer_profile(
    profile: dict[str, Any], parameters: dict[str, Any] | None, path: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    separation, writes = profile["separation"], profile["write_separation"]
    layers = len(writes)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    # Residual position i is the output of layer i-1: plot it at x = i-1 (embeddings at -1).
    ax.plot(
        range(-1, layers),
        separation,
        marker="o",
        color="C0",
        label="separation of the residual (Cohen's d, held out)",
    )
    ax.bar(range(layers), writes, color="C0", alpha=0.3, label="separation written by the layer")
    ax.set_xlabel("layer")
    ax.set_ylabel("separation (d)")
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if parameters is not None:
        params = AblationParams.from_dict(parameters)
        twin = ax.twinx()
        for i, name in enumerate(sorted(params.kernels)):
            twin.step(
                range(layers),
                params.strengths(name, layers),
                where="mid",
                color=f"C{i + 1}",
                linewidth=2,
                label=f"selected {name} strength",
            )
        twin.set_ylabel("ablation strength")
        twin.set_ylim(bottom=0)
        more_h, more_l = twin.get_legend_handles_labels()
        handles, labels = handles + more_h, labels + more_l
    ax.legend(handles, labels, loc="best", fontsize=7, framealpha=0.8)
    fig.tight_layout()
    try:
        write_with(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)
