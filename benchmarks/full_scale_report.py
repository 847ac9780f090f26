"""The full-scale benchmark's outputs: one JSON with every record, and a Markdown report.

The report has, per scenario, a table of mean ± std over seeds (forget and retain accuracy,
test accuracy, MIA, time per request) with one column per method; then the per-request time
breakdown of the SSD variants, the speed variants (unpinned loaders, per_sample mode), the
once-per-model steps, and the units skipped or cut by the budget. Used by full_scale.py.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from ssd_fast.eval.bench import METHODS
from ssd_fast.eval.bench.report import mean_std, row_labels

# (record key, label suffix, is a percentage): the rows of each scenario's table.
TABLE_ROWS = (
    ("forget_acc", True),
    ("retain_acc", True),
    ("test_acc", True),
    ("mia", True),
    ("seconds", False),
)
STEP_ORDER = ("forget importance", "dampen", "tune", "fisher diagonal", "noise", "rest")


def cell(values: list[float], pct: bool) -> str:
    """'mean ± std' over seeds (percent, or seconds with 3 significant digits); '-' when empty."""
    mean, std = mean_std(values)
    if math.isnan(mean):
        return "-"
    if pct:
        return f"{100 * mean:.1f} ± {100 * std:.1f}"
    return f"{mean:.3g} ± {std:.2g}" if mean < 100 else f"{mean:,.0f} ± {std:,.0f}"


def _records(units: list[dict], variant: str = "") -> list[dict]:
    return [dict(r, scenario=u["scenario"]) for u in units if u.get("variant", "") == variant for r in u["records"]]


def summarise(units: list[dict], variant: str = "") -> dict[str, dict[str, dict]]:
    """scenario -> method -> {key: [mean, std], "seeds": n, "extrapolated": bool, "steps": {step: [mean, std]}}."""
    grouped: dict[str, dict[str, list[dict]]] = {}
    for r in _records(units, variant):
        grouped.setdefault(r["scenario"], {}).setdefault(r["method"], []).append(r)
    out: dict[str, dict[str, dict]] = {}
    for scenario, methods in grouped.items():
        for method, recs in methods.items():
            entry = {key: list(mean_std([r[key] for r in recs])) for key, _ in TABLE_ROWS}
            steps = sorted({s for r in recs for s in r.get("steps", {})}, key=_step_rank)
            entry["steps"] = {s: list(mean_std([r["steps"].get(s, math.nan) for r in recs])) for s in steps}
            entry["seeds"] = sorted({r["seed"] for r in recs})
            entry["extrapolated"] = any(r["extrapolated"] for r in recs)
            out.setdefault(scenario, {})[method] = entry
    return out


def _step_rank(step: str) -> int:
    return STEP_ORDER.index(step) if step in STEP_ORDER else len(STEP_ORDER)


def scenario_table(scenario: str, forget_name: str, methods: dict[str, list[dict]]) -> list[str]:
    """One scenario's table: a column per method, a row per score, mean ± std over its seeds."""
    names = sorted(methods, key=lambda m: METHODS.index(m) if m in METHODS else len(METHODS))
    seeds = sorted({r["seed"] for recs in methods.values() for r in recs})
    labels = row_labels(scenario)
    labels["seconds"] = "time per request (s)"
    lines = [
        f"### {scenario} forgetting: {forget_name} ({len(seeds)} seed(s): {', '.join(map(str, seeds))})",
        "",
        "| | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for key, pct in TABLE_ROWS:
        cells = []
        for m in names:
            text = cell([r[key] for r in methods[m]], pct)
            if key == "seconds" and any(r["extrapolated"] for r in methods[m]):
                text += " (extrapolated)"
            cells.append(text)
        lines.append(f"| {labels[key]} | " + " | ".join(cells) + " |")
    return lines + [""]


def breakdown_table(units: list[dict], title: str, variant: str = "") -> list[str]:
    """Per-request time of each SSD variant split into its steps (mean ± std over seeds)."""
    rows = []
    for scenario, methods in summarise(units, variant).items():
        for method, entry in methods.items():
            if method.startswith("ssd") and entry["steps"]:
                parts = ", ".join(f"{s} {_seconds(v)}" for s, v in entry["steps"].items())
                accs = " | ".join(_percent(entry[k]) for k in ("forget_acc", "retain_acc"))
                rows.append(f"| {scenario} | {method} | {accs} | {_seconds(entry['seconds'])} | {parts} |")
    if not rows:
        return []
    header = "| scenario | method | forget acc | retain acc | total (s) | steps (s) |"
    return [f"### {title}", "", header, "|---|---|---|---|---|---|", *rows, ""]


def _percent(mean_and_std: list[float]) -> str:
    mean, std = mean_and_std
    return "-" if math.isnan(mean) else f"{100 * mean:.1f} ± {100 * std:.1f}"


def _seconds(mean_and_std: list[float]) -> str:
    mean, std = mean_and_std
    return "-" if math.isnan(mean) else f"{mean:.3g} ± {std:.2g}"


def once_per_model(units: list[dict]) -> list[str]:
    """Training and full-importance times, per scenario and seed (cached models say so)."""
    lines = []
    for u in units:
        for step in u.get("steps", []):
            full = ", ".join(f"{m} {s:.2f} s" for m, s in step["full_importance_seconds"].items())
            cached = " (model from cache: time measured when trained)" if step["train_cached"] else ""
            lines.append(
                f"- {_unit_name(u)}: training {step['train_seconds']:.1f} s{cached}"
                + (f"; full importance {full}" if full else "")
            )
    return ["### Once per model (not in the per-request times)", "", *lines, ""] if lines else []


def unit_notes(units: list[dict], skipped: list[dict]) -> list[str]:
    """ssd_tune's choices, extrapolations, and what the budget skipped or cut."""
    lines = []
    for u in units:
        for r in u["records"]:
            if r["method"] in ("ssd_tune", "ssd_auto") and r.get("notes"):
                lines.append(f"- {_unit_name(u)} {r['method']}: {r['notes']}")
            if r["extrapolated"]:
                lines.append(f"- {_unit_name(u)} {r['method']}: {r['notes']}; measured {r['measured_seconds']:.2f} s")
        if u["status"] != "done":
            lines.append(f"- {_unit_name(u)}: {u['status']}")
    lines += [f"- skipped {_unit_name(s)}: {s['why']}" for s in skipped]
    return ["### Notes", "", *lines, ""] if lines else []


def _unit_name(unit: dict) -> str:
    variant = f" ({unit['variant']})" if unit.get("variant") else ""
    return f"{unit['scenario']}{variant} seed {unit['seed']}"


def markdown(run: dict) -> str:
    """The whole report for `run` (what full_scale.py collects)."""
    c = run["settings"]
    out = [
        f"## Full-scale unlearning benchmark: {c['model']} on {run.get('data', '?')}, device {run['device']}",
        "",
        f"Settings: {c['seeds']} seed(s) asked, train subset {c['train_subset'] or 'all'}, test subset "
        f"{c['test_subset'] or 'all'}, {c['epochs']} epochs at batch {c['batch_size']} (retrain too), finetune "
        f"{c['finetune_epochs']} epochs, {c['val_per_class']} train images per class held out (ssd_tune scores on "
        f"them), SSD alpha {c['alpha']:g} lambda {c['lam']:g}, importance {c['importance_mode']} mode at batch "
        f"{c['importance_batch_size'] or 64}, Fisher on {c['fisher_max_samples']} retain samples (time "
        f"extrapolated). Accuracies and MIA in %, mean ± std over seeds; wall time {run['elapsed']:.0f} s "
        f"of a {run['budget']:.0f} s budget.",
        "",
    ]
    for scenario, methods in _by_scenario(run["units"]).items():
        out += scenario_table(scenario, run["forget_names"].get(scenario, "?"), methods)
    out += breakdown_table(run["units"], "Per-request time breakdown")
    for variant in sorted({u["variant"] for u in run["units"] if u.get("variant")}):
        out += breakdown_table(run["units"], f"Speed variant: {variant}", variant)
    out += once_per_model(run["units"])
    out += unit_notes(run["units"], run["skipped"])
    return "\n".join(out) + "\n"


def _by_scenario(units: list[dict]) -> dict[str, dict[str, list[dict]]]:
    grouped: dict[str, dict[str, list[dict]]] = {}
    for r in _records(units):
        grouped.setdefault(r["scenario"], {}).setdefault(r["method"], []).append(r)
    return grouped


def write(run: dict, out: Path) -> dict[str, Path]:
    """full_scale.json (settings, every unit's records and steps, the summary) and full_scale.md."""
    out.mkdir(parents=True, exist_ok=True)
    payload = {**run, "summary": summarise(run["units"])}
    paths = {"json": out / "full_scale.json", "table": out / "full_scale.md"}
    paths["json"].write_text(json.dumps(payload, indent=1, default=float))
    paths["table"].write_text(markdown(run))
    return paths
