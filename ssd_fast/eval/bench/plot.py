"""The benchmark's figure: retain accuracy against forget accuracy and against MIA, and time."""

from __future__ import annotations

from pathlib import Path

from .report import _by_method


def save_plot(result, path: str | Path) -> Path:
    """Three panels; one colour per method, small dots per seed and a large one for the mean.

    Extrapolated times are hatched and labelled, never drawn as if measured.
    """
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and CI
    import matplotlib.pyplot as plt

    groups = _by_method(result)
    colours = {m: plt.cm.tab10(i % 10) for i, m in enumerate(groups)}
    # Distinct, shrinking markers, so that methods landing on the same point (ssd and its
    # reference should) stay visible on top of each other.
    shapes = ("o", "s", "^", "D", "v", "P", "X", "*", "h", "<")
    markers = {m: shapes[i % len(shapes)] for i, m in enumerate(groups)}
    sizes = {m: max(150 - 12 * i, 30) for i, m in enumerate(groups)}
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    for ax, key, label in (
        (axes[0], "forget_acc", "forget accuracy (%)"),
        (axes[1], "mia", "MIA (% of forget set called members)"),
    ):
        for m, recs in groups.items():
            xs = [100 * r[key] for r in recs]
            ys = [100 * r["retain_acc"] for r in recs]
            ax.scatter(xs, ys, color=colours[m], alpha=0.35, s=18)
            ax.scatter(
                [sum(xs) / len(xs)],
                [sum(ys) / len(ys)],
                color=colours[m],
                s=sizes[m],
                marker=markers[m],
                label=m,
                edgecolor="black",
            )
        ax.set_xlabel(label)
        ax.set_ylabel("retain accuracy (%)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    _time_panel(axes[2], groups, colours)
    fig.suptitle(
        f"{result.data_name}: {result.config.scenario} forgetting of {result.forget_name} ({result.config.model})"
    )
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _time_panel(ax, groups: dict, colours: dict) -> None:
    timed = {m: recs for m, recs in groups.items() if m != "baseline"}
    names = list(timed)
    means = [max(sum(r["seconds"] for r in recs) / len(recs), 1e-6) for recs in timed.values()]
    extrap = [any(r["extrapolated"] for r in recs) for recs in timed.values()]
    bars = ax.bar(names, means, color=[colours[m] for m in names])
    for bar, is_extrap in zip(bars, extrap):
        if is_extrap:
            bar.set_hatch("//")
            ax.annotate(
                "extrapolated",
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
                fontsize=8,
            )
    ax.set_yscale("log")
    ax.set_ylabel("unlearning time (s, log scale)")
    ax.tick_params(axis="x", rotation=30)
    ax.grid(alpha=0.3, axis="y")
