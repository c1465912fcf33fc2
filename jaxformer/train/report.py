"""Where metrics go: a JSONL file and TensorBoard event files (process 0 only), and the loss plot."""

import json
import math
from pathlib import Path


class MetricsLog:
    """Appends one JSON object per record to `metrics.jsonl` and mirrors the numbers to
    TensorBoard. A resumed run appends to the same files; `read_metrics` keeps the last record
    per (step, kind), so steps redone after a crash count once. Disabled off process 0."""

    def __init__(self, jsonl_path: Path, tensorboard_dir: Path, *, enabled: bool = True):
        self.enabled = enabled
        self.path = Path(jsonl_path)
        self.writer = None
        if enabled:
            from tensorboardX import SummaryWriter  # heavy: only on the process that logs

            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.file = self.path.open("a", buffering=1)  # line-buffered: a crash loses no line
            self.writer = SummaryWriter(str(tensorboard_dir))

    def write(self, kind: str, step: int, values: dict) -> None:
        """kind: "train" or "eval"; values: name -> float (None is skipped in TensorBoard)."""
        if not self.enabled:
            return
        self.file.write(json.dumps({"kind": kind, "step": step, **values}) + "\n")
        for name, value in values.items():
            if value is not None and not isinstance(value, str) and math.isfinite(value):
                self.writer.add_scalar(f"{kind}/{name}", value, step)

    def close(self) -> None:
        if self.enabled:
            self.file.close()
            self.writer.close()


def read_metrics(path: Path) -> dict[str, dict[int, dict]]:
    """{"train": {step: record}, "eval": {step: record}} from a metrics.jsonl (last record wins)."""
    out = {"train": {}, "eval": {}}
    if not Path(path).exists():
        return out
    for line in Path(path).read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line cut short by a kill
        out.setdefault(record.get("kind", "train"), {})[record["step"]] = record
    return out


def plot_losses(metrics_path: Path, out_path: Path, *, title: str = "") -> Path:
    """Train loss (each log interval's mean) and validation loss against the step, as a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # matplotlib is heavy: loaded only to draw
    from matplotlib.figure import Figure

    records = read_metrics(metrics_path)
    fig = Figure(figsize=(7, 4.5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for kind, key, label, style in (("train", "loss", "train", "-"),
                                    ("eval", "val_loss", "validation", "o-")):
        points = sorted((s, r[key]) for s, r in records[kind].items() if r.get(key) is not None)
        if points:
            ax.plot(*zip(*points), style, label=label, markersize=3)
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_path)
    return Path(out_path)
