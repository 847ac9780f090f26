"""`python -m ssd_fast.eval.bench` end to end on a tiny configuration (digits, so it always runs)."""

from __future__ import annotations

import json

import pytest

from ssd_fast.eval.bench import METHODS, main, parse_args

REQUIRED = {"method", "seed", "forget_acc", "retain_acc", "test_acc", "mia", "seconds", "extrapolated"}


def _tiny(tmp_path, *extra: str) -> list[str]:
    return [
        "--data-dir",
        str(tmp_path / "no-fashion-here"),  # falls back to digits: fast and always present
        "--train-subset",
        "200",
        "--test-subset",
        "100",
        "--epochs",
        "1",
        "--finetune-epochs",
        "1",
        "--fisher-max-samples",
        "3",
        "--seeds",
        "2",
        "--no-progress",
        "--out",
        str(tmp_path / "out"),
        "--cache-dir",
        str(tmp_path / "cache"),
        *extra,
    ]


def test_bench_end_to_end_writes_table_json_and_plot(tmp_path, capsys):
    with pytest.warns(UserWarning, match="digits"):
        main(_tiny(tmp_path, "--forget", "3", "--methods", ",".join(METHODS)))
    out = tmp_path / "out"
    assert {p.name for p in out.iterdir()} >= {"table.md", "results.json", "plot.png"}
    results = json.loads((out / "results.json").read_text())
    records = results["records"]
    assert len(records) == 2 * len(METHODS)
    assert {(r["method"], r["seed"]) for r in records} == {(m, s) for m in METHODS for s in (0, 1)}
    for r in records:
        assert REQUIRED <= r.keys()
        assert all(0.0 <= r[k] <= 1.0 for k in ("forget_acc", "retain_acc", "test_acc", "mia"))
        # Fisher on 3 of ~180 retain samples is extrapolated and says so; nothing else is.
        assert r["extrapolated"] == r["method"].startswith("fisher")
        if r["extrapolated"]:
            assert r["seconds"] > r["measured_seconds"]
    baseline = [r for r in records if r["method"] == "baseline"]
    assert all(r["seconds"] == 0 and r["params_changed"] == 0 for r in baseline)
    ssd = {r["seed"]: r for r in records if r["method"] == "ssd"}
    ref = {r["seed"]: r for r in records if r["method"] == "ssd_reference"}
    for seed in ssd:  # the fast path and the oracle unlearn identically
        assert ssd[seed]["params_changed"] == ref[seed]["params_changed"]
        assert ssd[seed]["forget_acc"] == pytest.approx(ref[seed]["forget_acc"], abs=1e-6)
    tuned = [r for r in records if r["method"] == "ssd_tune"]
    assert all(r["details"]["trials"] > 0 and r["seconds"] >= r["steps"]["tune"] for r in tuned)
    for r in records:  # the training-set accuracies are reported beside the test-image ones
        assert 0.0 <= r["retain_train_acc"] <= 1.0 and 0.0 <= r["forget_train_acc"] <= 1.0
    table = (out / "table.md").read_text()
    assert "extrapolated" in table
    header = next(line for line in table.splitlines() if line.startswith("| |"))
    assert [c.strip() for c in header.strip("|").split("|")][1:] == list(METHODS)  # every method has a column
    for row in (
        "| forget acc, test images of the forgotten class |",
        "| retain acc, test images of the other classes |",
        "| test acc, all test images |",
        "| retain acc on D_r (train images kept) |",
        "| forget acc on D_f (train images forgotten) |",
    ):
        assert row in table
    assert "| forget acc, test images of the forgotten class |" in capsys.readouterr().out
    assert all(not s["train_cached"] for s in results["steps"])


def test_bench_reuses_the_cached_checkpoint(tmp_path):
    args = _tiny(tmp_path, "--scenario", "random", "--n-forget", "20", "--seeds", "1", "--methods", "baseline,ssd")
    with pytest.warns(UserWarning):
        first = main(args)
    with pytest.warns(UserWarning):
        second = main(args)
    assert not first.steps[0]["train_cached"] and second.steps[0]["train_cached"]
    assert first.records[1]["forget_acc"] == second.records[1]["forget_acc"]


def test_bench_refuses_ssd_tune_without_held_out_images(tmp_path):
    with pytest.raises(SystemExit, match="val-per-class"):
        main(_tiny(tmp_path, "--val-per-class", "0", "--methods", "baseline,ssd_tune"))


def test_bench_rejects_bad_flags():
    with pytest.raises(SystemExit):
        parse_args(["--methods", "ssd,magic"])
    with pytest.raises(SystemExit):
        parse_args(["--scenario", "rows"])
    config = parse_args([])
    assert (config.scenario, config.model, config.alpha, config.lam) == ("class", "cnn", 10.0, 1.0)
    assert config.methods == METHODS and {"ssd_tune", "ssd_auto", "fisher_fast"} <= set(config.methods)
    assert (config.importance_mode, config.full_batch_size()) == ("batch", 64)  # the published estimate
    assert parse_args(["--importance-mode", "per_sample", "--device", "cuda"]).full_batch_size() > 64
    assert parse_args(["--importance-mode", "per_sample", "--importance-batch-size", "8"]).full_batch_size() == 8


def test_checkpoint_records_the_cpu_time_of_a_cached_value(tmp_path):
    import torch

    from ssd_fast.eval.bench.checkpoint import Checkpoints

    first = Checkpoints(tmp_path, "k")
    value, seconds, cached = first.value("v.pt", lambda: {"w": torch.ones(3)})
    assert not cached and seconds >= 0 and first.cpu_seconds("v.pt") is not None and first.cpu_seconds("v.pt") >= 0
    again = Checkpoints(tmp_path, "k")
    loaded, seconds_again, cached_again = again.value("v.pt", lambda: {"w": torch.zeros(3)})
    assert cached_again and torch.equal(loaded["w"], value["w"]) and seconds_again == seconds
    assert again.cpu_seconds("v.pt") == first.cpu_seconds("v.pt")  # as measured when computed, read back
    assert again.cpu_seconds("other.pt") is None


def test_bench_tunes_subclass_forgetting_against_held_out_images(tmp_path):
    args = _tiny(
        tmp_path, "--scenario", "subclass", "--forget", "8", "--seeds", "1", "--methods", "baseline,ssd_tune,ssd_auto"
    )
    with pytest.warns(UserWarning):
        result = main(args)
    tuned = next(r for r in result.records if r["method"] == "ssd_tune")
    assert tuned["details"]["trials"] > 0 and "held-out" in tuned["notes"]
    assert 0.0 <= tuned["forget_acc"] <= 1.0 and 0.0 <= tuned["retain_acc"] <= 1.0
    assert "| forget acc, test images of the forgotten class |" in (tmp_path / "out" / "table.md").read_text()
