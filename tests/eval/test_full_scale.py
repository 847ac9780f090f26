"""benchmarks/full_scale.py end to end on tiny data (digits, so it always runs), on the CPU."""

from __future__ import annotations

import json
import signal
import time

import pytest

from benchmarks.full_scale import DEFAULT_METHODS, SPEED_METHODS, SPEED_VARIANTS, UnitTimeout, main, plan, time_limit
from ssd_fast.eval.bench import METHODS
from ssd_fast.eval.data import SCENARIOS


def _tiny(tmp_path, *extra: str) -> list[str]:
    return [
        "--tiny",
        "--seeds",
        "1",
        "--data-dir",
        str(tmp_path / "no-fashion-here"),  # falls back to the digits, which --tiny allows
        "--cache-dir",
        str(tmp_path / "cache"),
        "--out",
        str(tmp_path / "out"),
        "--device",
        "cpu",
        *extra,
    ]


def test_full_scale_tiny_writes_every_method_and_scenario(tmp_path):
    with pytest.warns(UserWarning, match="digits"):
        run = main(_tiny(tmp_path, "--methods", ",".join(METHODS)))
    payload = json.loads((tmp_path / "out" / "full_scale.json").read_text())
    assert payload["skipped"] == [] and all(u["status"] == "done" for u in payload["units"])
    summary = payload["summary"]
    assert set(summary) == set(SCENARIOS)
    for scenario in SCENARIOS:
        assert set(summary[scenario]) == set(METHODS)
        for entry in summary[scenario].values():
            assert entry["seeds"] == [0]
            for key in ("forget_acc", "retain_acc", "mia"):
                assert 0.0 <= entry[key][0] <= 1.0 and entry[key][1] == 0.0  # one seed: std 0
    for unit in payload["units"]:
        for r in unit["records"]:
            if r["method"] in ("ssd", "ssd_auto", "ssd_reference", "ssd_tune"):
                # the per-request breakdown adds up to the request's time
                assert {"forget importance", "rest"} <= r["steps"].keys()
                assert sum(r["steps"].values()) == pytest.approx(r["seconds"], rel=1e-9, abs=1e-9)
    variants = {u["variant"]: u for u in payload["units"] if u["variant"]}
    assert set(variants) == set(SPEED_VARIANTS)
    assert {r["method"] for r in variants["per_sample"]["records"]} == set(SPEED_METHODS)
    table = (tmp_path / "out" / "full_scale.md").read_text()
    for scenario in SCENARIOS:
        assert f"### {scenario} forgetting" in table
    for header in (line for line in table.splitlines() if line.startswith("| |")):
        assert [c.strip() for c in header.strip("|").split("|")][1:] == list(METHODS)
    assert table.count("| time per request (s) |") == len(SCENARIOS)
    for variant in SPEED_VARIANTS:
        assert f"### Speed variant: {variant}" in table
    assert run["data"] == "digits"


def test_the_default_methods_are_every_method_but_the_reference_ssd_first():
    assert sorted(DEFAULT_METHODS) == sorted(m for m in METHODS if m != "ssd_reference")
    assert DEFAULT_METHODS.index("ssd_tune") < DEFAULT_METHODS.index("retrain")


def test_full_scale_refuses_to_fall_back_to_digits_unless_tiny(tmp_path):
    args = [a for a in _tiny(tmp_path) if a != "--tiny"]
    with pytest.raises(FileNotFoundError, match="Fashion-MNIST not found"):
        main(args)


def test_a_budget_too_small_skips_units_and_still_writes_the_report(tmp_path):
    with pytest.warns(UserWarning, match="digits"):
        run = main(_tiny(tmp_path, "--budget", "0"))
    assert run["units"] == [] and len(run["skipped"]) == len(plan(list(SCENARIOS), [0], ["main", "speed"]))
    assert "skipped class seed 0" in (tmp_path / "out" / "full_scale.md").read_text()


def test_a_unit_past_its_time_limit_is_cut_and_reported(tmp_path):
    with pytest.warns(UserWarning, match="digits"):
        run = main(_tiny(tmp_path, "--unit-timeout", "0.001", "--scenarios", "class", "--stages", "main"))
    (unit,) = run["units"]
    assert unit["status"].startswith("cut after") and unit["records"] == []
    assert "cut after" in (tmp_path / "out" / "full_scale.md").read_text()


def test_time_limit_interrupts_and_then_disarms():
    before = signal.getsignal(signal.SIGALRM)
    with pytest.raises(UnitTimeout):
        with time_limit(0.05):
            while True:
                time.sleep(0.005)
    with time_limit(10):
        pass
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)  # no timer left armed
    assert signal.getsignal(signal.SIGALRM) is before  # the caller's handler is back


def test_dry_run_predicts_and_runs_nothing(tmp_path):
    rows = main(["--dry-run", "--budget", "300", "--out", str(tmp_path / "out")])["plan"]
    assert len(rows) == len(plan(list(SCENARIOS), [0, 1, 2], ["main", "speed"]))
    assert rows[0]["fits"] and not rows[-1]["fits"]  # 300 s holds the first seed, not the third
    assert sum(r["predicted"] for r in rows if r["fits"]) <= 300
    assert not (tmp_path / "out").exists()


def test_plan_is_seed_major_with_the_speed_variants_after_the_first_seed():
    assert [u["variant"] for u in plan(["class"], [0, 1], ["speed"])] == list(SPEED_VARIANTS)
    units = plan(["subclass", "class", "random"], [0, 1], ["main", "speed"])
    assert [(u["seed"], u["scenario"], u["variant"]) for u in units] == [
        (0, "class", ""),
        (0, "random", ""),
        (0, "subclass", ""),
        (0, "class", "unpinned"),
        (0, "class", "batch256"),
        (0, "class", "per_sample"),
        (1, "class", ""),
        (1, "random", ""),
        (1, "subclass", ""),
    ]
