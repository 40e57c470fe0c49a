"""``cosim plot``: the standard figures of a sweep — each layer's headline metrics (what the
layer declares: :attr:`cosim.layers.base.Layer.headline_metrics`, a plugin layer's too) against the
swept parameter, one line per policy, with 95 % confidence bands over seeds; and for every sweep
(seeds only, too) the comparison figure every paper needs: each policy's paired per-seed
difference to the baseline with its 95 % interval and Holm-adjusted p-value (a forest plot, from
``paired.csv``), the task-level latency and success differences first."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path

from cosim.errors import CosimError

#: the paired differences the forest plot shows first for a layer with tasks (cosim.pairing)
TASK_LEVEL = ["latency_diff_s", "success_diff"]
#: what the task-level differences and the run's own numbers (the sweep's ``core`` rows) are, with units
UNITS = {"latency_diff_s": "latency difference on common tasks [s]", "success_diff": "success-rate difference",
         "max_concurrent_vehicles": "vehicles at once"}
#: the run's own numbers drawn when none are asked for (the sweep's ``layer = "core"`` rows)
CORE_METRICS = ["max_concurrent_vehicles"]


def headline(layer: str, folder: Path | None = None) -> tuple[list[str], dict[str, str]]:
    """(the metrics drawn for ``layer`` when none are asked for, metric -> its label with unit):
    what the layer declares (:attr:`cosim.layers.base.Layer.headline_metrics`), a plugin layer's
    too — its plugin imported as its runs imported it (a cell's ``config.toml`` in ``folder``);
    none for a layer whose class cannot be found here."""
    if layer == "core":
        return list(CORE_METRICS), dict(UNITS)
    from cosim import registry
    from cosim.errors import ConfigError

    try:
        cls = registry.layer_class(layer)
    except ConfigError:
        from cosim.results import load

        cell = next((c for c in sorted((folder / "cells").glob("*")) if (c / "config.toml").is_file()), None) \
            if folder is not None and (folder / "cells").is_dir() else None
        cls = load(cell).layers().get(layer) if cell is not None else None
    if cls is None:
        return [], dict(UNITS)
    return [m.key for m in cls.headline_metrics], {**UNITS, **{m.key: m.label for m in cls.headline_metrics}}


def pyplot(command: str):  # noqa: ANN201 - matplotlib.pyplot
    """matplotlib's pyplot on the file-only Agg backend, or one line saying how to install it."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise CosimError(f"{command} needs matplotlib: pip install 'cosim[plot]'") from None
    return plt


def plain(text: object) -> str:
    """``text`` (a name from the results: scenario, layer, policy) as matplotlib draws it literally:
    every ``$`` escaped, so no mathtext starts (``$\\frac{$`` is text, not a formula that fails)."""
    return str(text).replace("$", r"\$")


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
    varying = [k for k in grid if k in df.columns and df[k].nunique() > 1]
    if x is not None and x not in df.columns:
        raise CosimError(f"--x {x}: not a swept key (swept: {', '.join(grid) or 'none'})")
    if x is None and varying:
        x = max(varying, key=lambda k: df[k].nunique())
    out_dir = Path(out) if out else folder / "plots"
    from cosim.engine.folder import new_folders

    before = set(out_dir.iterdir()) if out_dir.is_dir() else set()
    with new_folders(out_dir, flag="--out"):  # a failed call leaves no folder it made
        try:
            written = _forest(folder, plt, out_dir, varying, metrics)
            if x is not None:
                written += _lines(df, plt, out_dir, x, [k for k in varying if k != x], metrics, folder)
            if not written:
                raise CosimError(f"{folder}: none of the metrics asked for is in the results")
        except BaseException:  # e.g. a --metric no layer has, found after other figures were drawn
            for p in set(out_dir.iterdir()) - before:  # the figures this call added; earlier files stay
                if p.suffix == ".png" and p.is_file():
                    p.unlink()
            raise
    return written


def _lines(df, plt, out_dir: Path, x: str, others: list[str], metrics: list[str] | None,  # noqa: ANN001
           folder: Path | None = None) -> list[Path]:
    """Each metric against ``x``, one line per policy (and other swept key), 95 % bands."""
    written = []
    for (scenario, layer), g in df.groupby(["scenario", "layer"], sort=False):
        default, units = headline(layer, folder)
        wanted = metrics or default
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
                label = plain(" ".join(str(v) for v in key if not (isinstance(v, float) and math.isnan(v))) or layer)
                xs = line[x].to_numpy()
                mean, ci = line[f"{m}.mean"].to_numpy(), line[f"{m}.ci95"].fillna(0.0).to_numpy()
                drawn = ax.plot(xs, mean, marker="o", label=label)[0]
                ax.fill_between(xs, mean - ci, mean + ci, color=drawn.get_color(), alpha=0.15)
            ax.set_xlabel(x)
            ax.set_ylabel(plain(units.get(m, m)))
            ax.set_title(plain(f"{scenario}: {layer} (mean over seeds, 95 % band)"))
            ax.legend(fontsize=7)
            fig.tight_layout()
            path = out_dir / f"{scenario}-{layer}-{m}.png"
            fig.savefig(path, dpi=120)
            plt.close(fig)
            written.append(path)
    return written


def _forest(folder: Path, plt, out_dir: Path, varying: list[str], metrics: list[str] | None) -> list[Path]:  # noqa: ANN001
    """Per scenario and layer: one panel per metric, one row per policy (and grid point): the
    paired difference to the baseline, its 95 % interval as a bar, the Holm-adjusted p beside it."""
    import numpy as np
    import pandas as pd

    try:
        paired = pd.read_csv(folder / "paired.csv")
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return []
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise CosimError(f"{folder / 'paired.csv'}: unreadable ({' '.join(str(exc).split())})") from None
    if paired.empty or "layer" not in paired.columns:
        return []
    written = []
    for (scenario, layer), g in paired.groupby(["scenario", "layer"], sort=False):
        default, units = headline(layer, folder)
        wanted = [m for m in (metrics or TASK_LEVEL + default)
                  if f"{m}.diff" in g.columns and g[f"{m}.diff"].notna().any()]
        if not wanted:
            continue
        labels = [plain(" ".join([str(r["policy"])] + [f"{k}={r[k]}" for k in varying])) for _, r in g.iterrows()]
        base = g["baseline"].iloc[0]
        fig, axes = plt.subplots(1, len(wanted), figsize=(3.4 * len(wanted) + 1.2, 0.42 * len(g) + 1.4),
                                 sharey=True, squeeze=False)
        y = np.arange(len(g))[::-1]
        for ax, m in zip(axes[0], wanted):
            d, h = g[f"{m}.diff"].to_numpy(float), g[f"{m}.ci95"].to_numpy(float)
            bare = np.isfinite(d) & ~np.isfinite(h)  # fewer than two seeds: a mean with no interval, no p
            ax.errorbar(d[~bare], y[~bare], xerr=np.nan_to_num(h[~bare]), fmt="o", color="#4c72b0", capsize=3)
            if bare.any():  # hollow, and said beside it: not a zero-width interval
                ax.plot(d[bare], y[bare], "o", mfc="none", color="#c44e52")
            ax.axvline(0.0, color="0.4", lw=0.8)
            ph = g[f"{m}.p_holm"].to_numpy(float) if f"{m}.p_holm" in g else np.full(len(g), np.nan)
            for yi, di, pi, no in zip(y, d, ph, bare):
                if no:
                    ax.annotate("no interval: n < 2", (di, yi), xytext=(0, 6), textcoords="offset points",
                                ha="center", fontsize=6, color="#c44e52")
                elif np.isfinite(di) and np.isfinite(pi):
                    ax.annotate(f"p_holm={pi:.2g}", (di, yi), xytext=(0, 6), textcoords="offset points", ha="center",
                                fontsize=6)
            ax.set_xlabel(plain(f"{units.get(m, m)}\n(policy - {base}, mean ± 95 %"
                                + ("; hollow: n < 2, no interval)" if bare.any() else ")")), fontsize=8)
        axes[0][0].set_yticks(y, labels, fontsize=8)
        n = g["n"].dropna().astype(int) if "n" in g else pd.Series(dtype=int)
        seeds = ("no seeds" if n.empty else f"{n.min()}–{n.max()} seeds" if n.min() != n.max()
                 else f"{n.max()} seed{'s' if n.max() != 1 else ''}")
        fig.suptitle(plain(f"{scenario}: {layer}, paired per seed ({seeds}), Holm-adjusted p"
                           + ("" if n.empty or n.min() >= 2 else "; with one seed neither interval nor p")),
                     fontsize=9)
        fig.tight_layout()
        path = out_dir / f"{scenario}-{layer}-paired.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)
    return written
