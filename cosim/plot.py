"""``cosim plot``: the standard figures of a sweep — each layer's headline metrics against the
swept parameter, one line per policy, with 95 % confidence bands over seeds."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path

from cosim.errors import CosimError

#: the metrics drawn for each layer when none are asked for
DEFAULT_METRICS = {
    "dvit": ["mean_latency_s", "success_rate"],
    "moe": ["mean_latency_s", "success_rate", "mean_iv_utility"],
    "cache": ["system_cost_per_request", "edge_execution_ratio", "switching_cost"],
    "core": ["max_concurrent_vehicles"],
}


def pyplot(command: str):  # noqa: ANN201 - matplotlib.pyplot
    """matplotlib's pyplot on the file-only Agg backend, or one line saying how to install it."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise CosimError(f"{command} needs matplotlib: pip install 'cosim[plot]'") from None
    return plt


def _folder(path: Path) -> Path:
    path = Path(path)
    folder = path.parent if path.suffix in (".parquet", ".csv") else path
    if not (folder / "summary.csv").is_file() or not (folder / "sweep.toml").is_file():
        raise CosimError(f"{path}: not a sweep results folder (needs summary.csv and sweep.toml; run `cosim sweep`)")
    return folder


def plot(results: str | Path, x: str | None = None, metrics: list[str] | None = None,
         out: str | Path | None = None) -> list[Path]:
    """Write the PNGs; returns their paths."""
    import pandas as pd

    folder = _folder(Path(results))
    plt = pyplot("cosim plot")
    try:
        grid = list(tomllib.loads((folder / "sweep.toml").read_text()).get("grid", {}))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, AttributeError, TypeError) as exc:
        raise CosimError(f"{folder / 'sweep.toml'}: not a readable sweep file ({exc})") from None
    try:
        df = pd.read_csv(folder / "summary.csv")
    except pd.errors.EmptyDataError:
        df = pd.DataFrame()
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise CosimError(f"{folder / 'summary.csv'}: unreadable ({' '.join(str(exc).split())})") from None
    if df.empty:
        raise CosimError(f"{folder}: no finished run to plot (see cells.csv for the errors)")
    missing = [c for c in ("scenario", "layer", "policy") if c not in df.columns]
    if missing:
        raise CosimError(f"{folder / 'summary.csv'}: not a cosim sweep summary (no column {missing[0]!r})")
    if x is None:
        varying = [k for k in grid if k in df.columns and df[k].nunique() > 1]
        if not varying:
            raise CosimError(f"{folder}: the sweep varies no parameter (only seeds): nothing to plot against")
        x = max(varying, key=lambda k: df[k].nunique())
    elif x not in df.columns:
        raise CosimError(f"--x {x}: not a swept key (swept: {', '.join(grid) or 'none'})")
    others = [k for k in grid if k != x and k in df.columns and df[k].nunique() > 1]
    out_dir = Path(out) if out else folder / "plots"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CosimError(f"--out {out_dir}: cannot create the folder ({exc.strerror or exc})") from None
    written = []
    for (scenario, layer), g in df.groupby(["scenario", "layer"], sort=False):
        wanted = metrics or DEFAULT_METRICS.get(layer, [])
        for m in wanted:
            if f"{m}.mean" not in g.columns or g[f"{m}.mean"].isna().all():
                if metrics:
                    raise CosimError(f"--metric {m}: layer '{layer}' has no such number")
                continue
            fig, ax = plt.subplots(figsize=(5.5, 3.6))
            label_keys = ["policy", *others]
            for key, line in g.groupby(label_keys, sort=False, dropna=False):
                key = key if isinstance(key, tuple) else (key,)
                line = line.sort_values(x)
                label = " ".join(str(v) for v in key if not (isinstance(v, float) and math.isnan(v))) or layer
                xs = line[x].to_numpy()
                mean, ci = line[f"{m}.mean"].to_numpy(), line[f"{m}.ci95"].fillna(0.0).to_numpy()
                drawn = ax.plot(xs, mean, marker="o", label=label)[0]
                ax.fill_between(xs, mean - ci, mean + ci, color=drawn.get_color(), alpha=0.15)
            ax.set_xlabel(x)
            ax.set_ylabel(m)
            ax.set_title(f"{scenario}: {layer}")
            ax.legend(fontsize=7)
            fig.tight_layout()
            path = out_dir / f"{scenario}-{layer}-{m}.png"
            fig.savefig(path, dpi=120)
            plt.close(fig)
            written.append(path)
    if not written:
        raise CosimError(f"{folder}: none of the metrics asked for is in the results")
    return written
