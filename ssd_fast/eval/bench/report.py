"""Turning records into the paper-style table (Markdown), results.json, and a console summary."""

from __future__ import annotations

import json
import math
import os
import platform
from pathlib import Path

import numpy as np
import torch

from .runner import BenchResult

# (record key, is a percentage). Labels depend on the scenario: see `row_labels`.
ROW_KEYS = (
    ("retain_acc", True),
    ("forget_acc", True),
    ("test_acc", True),
    ("retain_train_acc", True),
    ("forget_train_acc", True),
    ("mia", True),
    ("params_changed", True),
    ("seconds", False),
)
ROWS = tuple(key for key, _ in ROW_KEYS)


def row_labels(scenario: str) -> dict[str, str]:
    """What each row measures, in words. The published code reports its "D_r"/"D_f" on the
    TEST images of the retain and forget classes (its validation loaders), while the paper's
    D_r/D_f are training sets; so the labels say which images, and D_r/D_f name training data only."""
    if scenario == "random":
        retain, forget = "retain acc, whole test set", "forget acc, D_f (the forgotten train images)"
    else:
        retain, forget = (
            "retain acc, test images of the other classes",
            "forget acc, test images of the forgotten class",
        )
    return {
        "retain_acc": retain,
        "forget_acc": forget,
        "test_acc": "test acc, all test images",
        "retain_train_acc": "retain acc on D_r (train images kept)",
        "forget_train_acc": "forget acc on D_f (train images forgotten)",
        "mia": "MIA on D_f",
        "params_changed": "params changed",
        "seconds": "t (s)",
    }


def _by_method(result: BenchResult) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in result.records:
        out.setdefault(r["method"], []).append(r)
    return out


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value), ignoring NaN."""
    arr = np.array([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    if arr.size == 0:
        return float("nan"), float("nan")
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def summarise(result: BenchResult) -> dict[str, dict]:
    """method -> {key: [mean, std]} plus `extrapolated` (any seed) and `seeds`."""
    summary = {}
    for method, recs in _by_method(result).items():
        entry = {key: list(mean_std([r.get(key, float("nan")) for r in recs])) for key in ROWS}
        entry["extrapolated"] = any(r["extrapolated"] for r in recs)
        entry["seeds"] = len(recs)
        summary[method] = entry
    return summary


def _cell(mean: float, std: float, pct: bool) -> str:
    if math.isnan(mean):
        return "-"
    if pct:
        return f"{100 * mean:.2f} ± {100 * std:.2f}"
    return f"{mean:.3g} ± {std:.2g}" if mean < 100 else f"{mean:,.0f} ± {std:,.0f}"


def fisher_ssd_ratio(summary: dict[str, dict]) -> dict[str, float] | None:
    """Fisher Forgetting's time over SSD's (per request, and with the full importance included)."""
    if "fisher" not in summary or "ssd" not in summary or summary["ssd"]["seconds"][0] <= 0:
        return None
    return {"per_request": summary["fisher"]["seconds"][0] / summary["ssd"]["seconds"][0]}


def markdown_table(result: BenchResult) -> str:
    """The paper's layout: one column per method, one row per score (mean ± std over seeds)."""
    summary = summarise(result)
    methods = list(summary)
    c = result.config
    lines = [
        f"**{result.data_name}, {c.scenario} forgetting: {result.forget_name}** — model {c.model}, "
        f"{c.seeds} seed(s), train subset {c.train_subset or 'all'}, test subset {c.test_subset or 'all'}, "
        f"{c.val_per_class} train images per class held out (ssd_tune scores on them), "
        f"SSD alpha={c.alpha:g} lambda={c.lam:g}, importance {c.importance_mode} mode at batch {c.full_batch_size()}. "
        "Accuracies, MIA and params changed in %, t in seconds.",
        "",
        "| | " + " | ".join(methods) + " |",
        "|---|" + "---|" * len(methods),
    ]
    labels = row_labels(c.scenario)
    for key, pct in ROW_KEYS:
        label = labels[key]
        cells = []
        for m in methods:
            mean, std = summary[m][key]
            cell = _cell(mean, std, pct)
            if key == "seconds" and summary[m]["extrapolated"]:
                cell += " (extrapolated)"
            cells.append(cell)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", *footnotes(result, summary)]
    return "\n".join(lines) + "\n"


def footnotes(result: BenchResult, summary: dict[str, dict]) -> list[str]:
    """Notes on timing: what 't' covers, the once-per-model steps, extrapolation, the Fisher/SSD ratio."""
    notes = [
        "- t is the unlearning step only (baseline: none). SSD's t = forget importance + dampening "
        "(ssd_tune: + every trial of the search); the full-data importance is computed once per model, "
        "after training, and listed below."
    ]
    for step in result.steps:
        cpu = step.get("full_importance_cpu_seconds", {})
        full = ", ".join(
            f"{m} {s:.2f} s" + (f" (CPU {cpu[m]:.2f} s)" if cpu.get(m) is not None else "")
            for m, s in step["full_importance_seconds"].items()
        )
        notes.append(
            f"- seed {step['seed']}: training {step['train_seconds']:.1f} s"
            + (" (from cache, measured when trained)" if step["train_cached"] else "")
            + (f"; full-data importance {full}" if full else "")
        )
    for r in result.records:
        if r["method"] in ("ssd_tune", "ssd_auto") and r.get("notes"):
            notes.append(f"- {r['method']} seed {r['seed']}: {r['notes']}.")
    for r in result.records:
        if r["extrapolated"]:
            notes.append(
                f"- {r['method']} seed {r['seed']}: EXTRAPOLATED, {r['notes']}; measured {r['measured_seconds']:.2f} s."
            )
    ratio = fisher_ssd_ratio(summary)
    if ratio:
        tag = " (Fisher time extrapolated)" if summary["fisher"]["extrapolated"] else ""
        notes.append(f"- Fisher Forgetting / SSD time: {ratio['per_request']:,.0f}x per request{tag}.")
    return notes


def environment() -> dict:
    return {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "cuda": torch.cuda.is_available(),
    }  # threads used: config.threads


def write_outputs(result: BenchResult, out: str | Path) -> dict[str, Path]:
    """table.md and results.json under `out`; returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = out / "table.md"
    table.write_text(markdown_table(result))
    summary = summarise(result)
    payload = {
        "config": result.config.to_dict(),
        "data": result.data_name,
        "forget": result.forget_name,
        "environment": environment(),
        "records": result.records,
        "steps": result.steps,
        "summary": summary,
        "fisher_over_ssd_time": fisher_ssd_ratio(summary),
    }
    results = out / "results.json"
    results.write_text(json.dumps(payload, indent=1, default=float))
    return {"table": table, "results": results}
