"""Training curves from the trainers' tensorboard logs, one line per system."""

from pathlib import Path
from typing import Dict, List, Tuple


def read_scalar(tb_dir: Path, tag_suffix: str = "tot_loss") -> List[Tuple[int, float]]:
    """(step, value) of the first scalar tag ending with ``tag_suffix`` in a tensorboard folder."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0})
    acc.Reload()
    tags = [t for t in acc.Tags().get("scalars", []) if t.endswith(tag_suffix)]
    if not tags:
        return []
    return [(e.step, e.value) for e in acc.Scalars(sorted(tags)[0])]


def plot_curves(curves: Dict[str, List[Tuple[int, float]]], path: Path, title: str) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for name, pts in sorted(curves.items()):
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=name)
    ax.set_xlabel("batch")
    ax.set_ylabel("training loss (running average)")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if any(curves.values()):
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(str(path), dpi=110)
    return path
