"""The artifact layout: epsilon labels in paths and in metrics.csv, and tables written before the label column."""

import pandas as pd

from sdfm.artifacts import METRIC_COLUMNS, auto_epsilons, benchmark_file, epsilon_label, read_metrics, run_dir
from sdfm.jobs.aggregate import aggregate_metrics

OLD_COLUMNS = [c for c in METRIC_COLUMNS if c != "epsilon_label"]


def _row(epsilon, label, seed=0, method="sdfm"):
    return ["moons", method, epsilon, label, 256, seed, "euler", 4, "w2", 0.5 + seed]


def test_labels_are_the_path_spelling():
    assert [epsilon_label(e) for e in (0, 0.0, 0.1, 1e-2, "auto")] == ["0", "0", "0.1", "0.01", "auto"]
    assert run_dir("results", "moons", "sdfm", "auto", 1).as_posix() == "results/runs/moons/sdfm/epsauto/seed1"
    assert benchmark_file("b", "train", "moons", "fm", "0", 0).as_posix() == "b/train/moons/fm-eps0-seed0.tsv"
    assert benchmark_file("b", "potential", "moons", "sdfm", "0.1").as_posix() == "b/potential/moons/eps0.1.tsv"


def test_aggregate_keeps_labels_as_strings_and_auto_is_read_from_them(tmp_path):
    runs = [_row(0.0, "0"), _row(0.1, "0.1"), _row(0.0371, "auto")]
    paths = []
    for i, row in enumerate(runs):
        paths.append(tmp_path / f"run{i}.csv")
        pd.DataFrame([row], columns=METRIC_COLUMNS).to_csv(paths[-1], index=False)
    table = aggregate_metrics(paths, tmp_path / "metrics.csv")
    back = read_metrics(tmp_path / "metrics.csv")
    assert list(back.columns) == METRIC_COLUMNS == list(table.columns)
    assert sorted(back.epsilon_label) == ["0", "0.1", "auto"]  # not 0.0 / 0.1 read back as numbers
    assert auto_epsilons(back) == {"moons": 0.0371}
    # a summary saying otherwise is ignored once the table has the column
    assert auto_epsilons(back, [{"dataset": "moons", "epsilon_rel": 0.1, "epsilon_auto": {"target": 0.05}}]) == {
        "moons": 0.0371}


def test_a_table_written_before_the_label_column_still_reads(tmp_path):
    old = tmp_path / "old.csv"
    pd.DataFrame([r[:3] + r[4:] for r in (_row(0.0, "0"), _row(0.0371, "auto"))], columns=OLD_COLUMNS).to_csv(
        old, index=False)
    table = read_metrics(old)
    assert list(table.columns) == METRIC_COLUMNS
    assert list(table.epsilon_label) == ["0", "0.0371"]  # numbers only: the summaries say which one was auto
    summary = {"dataset": "moons", "epsilon_rel": 0.0371, "epsilon_auto": {"target": 0.05}}
    assert auto_epsilons(table) == {} and auto_epsilons(table, [summary]) == {"moons": 0.0371}
    merged = aggregate_metrics([old], tmp_path / "metrics.csv")  # an old run's CSV joins a new table
    assert list(merged.columns) == METRIC_COLUMNS
