"""Epsilon `auto` through the jobs: the potential job chooses and records it, train and evaluate read it
back, the metrics rows hold the number, and the report, `sdfm compare` and the study mark the row."""

import json

import pandas as pd
import pytest

from sdfm.jobs.evaluate import evaluate_run
from sdfm.jobs.potential import fit_potential_job
from sdfm.jobs.prepare import prepare_data_job
from sdfm.jobs.train import train_job
from sdfm.ot.auto_epsilon import resolve_auto_epsilon
from sdfm.report.document import cost_table, paper_table, read_auto_epsilons
from sdfm.runtime import JobContext
from sdfm.studies.adaptive_epsilon import adaptive_epsilon_study, auto_vs_fixed
from sdfm.tracking import open_client

SETTINGS = {"steps": 40, "batch_size": 128, "eval_every": 20, "eval_batch": 1024}
AUTO = {"target_entropy": 0.2, "reference_batch": 128, "potential_steps": 100}
MODEL = {"kind": "mlp", "hidden": 16, "depth": 1}
TRAIN = {"steps": 2, "batch_size": 16, "warmup_steps": 0, "checkpoint_every": 0, "log_every": 1}
EVALUATE = {"solvers": ["euler"], "nfe": [2], "n_samples": 100, "metrics": ["w2"]}


@pytest.fixture(scope="module")
def auto_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("auto")
    ctx = JobContext(experiment="auto-epsilon", results_dir=str(root / "results"), progress=False)
    prepare_data_job("moons", "moons", {"n_train": 300, "n_test": 100}, root / "moons.npz", ctx)
    pot = root / "results" / "potentials" / "moons"
    summary = fit_potential_job(root / "moons.npz", "moons", "auto", SETTINGS, pot / "epsauto.pt",
                                pot / "epsauto.json", ctx, auto_epsilon=AUTO)
    run_dir = root / "results" / "runs" / "moons" / "sdfm" / "epsauto" / "seed0"
    train_job(root / "moons.npz", "moons", "sdfm", "auto", 0, MODEL, TRAIN, run_dir / "model.pt",
              run_dir / "checkpoint.pt", ctx, potential_path=pot / "epsauto.pt")
    table = evaluate_run(root / "moons.npz", run_dir / "model.pt", "moons", "sdfm", "auto", 0, 16, EVALUATE,
                         run_dir / "metrics.csv", ctx)
    return root, ctx, summary, run_dir, table


@pytest.mark.slow
def test_the_potential_job_chooses_records_and_fits_at_the_choice(auto_run, monkeypatch):
    root, ctx, summary, _, _ = auto_run
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    chosen = summary["epsilon_auto"]
    assert summary["epsilon_rel"] == chosen["epsilon_rel"] > 0
    assert chosen["target_entropy"] == 0.2 and chosen["entropy"] >= 0.2 and chosen["reference_batch"] == 128
    assert chosen["curve"]["epsilon_rel"] == sorted(chosen["curve"]["epsilon_rel"])
    import torch

    from sdfm.data import load_prepared

    again = resolve_auto_epsilon(load_prepared(root / "moons.npz").flat_train(), AUTO, seed=0)
    assert again.epsilon_rel == pytest.approx(chosen["epsilon_rel"], rel=1e-12)  # seeded: reproducible
    saved = torch.load(root / "results" / "potentials" / "moons" / "epsauto.pt", weights_only=False)
    assert saved["history"]["epsilon_rel"] == summary["epsilon_rel"] and saved["history"]["epsilon_auto"]
    run = open_client(ctx.results_dir).get_run(summary["mlflow_run_id"])
    assert run.info.run_name == "potential/moons/epsauto" and run.data.params["auto_target_entropy"] == "0.2"
    assert run.data.metrics["auto_epsilon_rel"] == pytest.approx(summary["epsilon_rel"])


@pytest.mark.slow
def test_train_and_evaluate_use_the_chosen_number(auto_run):
    _, _, summary, run_dir, table = auto_run
    trained = json.loads((run_dir / "model.json").read_text())
    assert trained["epsilon_rel"] == summary["epsilon_rel"] and trained["epsilon_auto"] is True
    assert set(table.epsilon) == {summary["epsilon_rel"]}
    assert set(pd.read_csv(run_dir / "metrics.csv").epsilon) == {summary["epsilon_rel"]}


@pytest.mark.slow
def test_auto_is_refused_where_it_has_no_meaning(auto_run):
    root, ctx, _, run_dir, _ = auto_run
    with pytest.raises(ValueError, match="epsilon 'auto' is chosen by the SD-FM potential job"):
        train_job(root / "moons.npz", "moons", "otfm", "auto", 0, MODEL, TRAIN, root / "o.pt", root / "oc.pt", ctx)
    with pytest.raises(ValueError, match="unknown auto_epsilon setting 'target'"):
        resolve_auto_epsilon(__import__("torch").randn(10, 2), {"target": 0.1})


def _table(auto_eps):
    rows = []
    for eps, value in ((0.0, 1.0), (0.1, 2.0), (auto_eps, 0.5)):
        for nfe in (1, 4):
            rows.append(["moons", "sdfm", eps, 16, 0, "euler", nfe, "w2", value * nfe])
    rows += [["moons", "fm", 0.0, 16, 0, "euler", nfe, "w2", 9.0] for nfe in (1, 4)]
    return pd.DataFrame(rows, columns=["dataset", "method", "epsilon", "batch_size", "seed", "solver", "nfe",
                                       "metric", "value"])


EPS = 0.0123


@pytest.fixture
def auto_results(tmp_path):
    """A results folder with the summary an `auto` potential job writes (fast: no job runs)."""
    summary = {"dataset": "moons", "epsilon_rel": EPS, "epsilon_abs": 0.02, "epsilon_auto": {
        "epsilon_rel": EPS, "epsilon_abs": 0.02, "entropy": 0.051, "target_entropy": 0.05, "cost_std": 1.6,
        "reference_batch": 1024, "criterion": "semidiscrete",
        "curve": {"epsilon_rel": [0.001, EPS, 0.1], "entropy": [0.01, 0.051, 0.4]}}}
    path = tmp_path / "results" / "potentials" / "moons" / "epsauto.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(summary))
    return tmp_path, path


def test_tables_compare_and_cost_mark_the_auto_row(auto_results):
    root, _ = auto_results
    table = _table(EPS)
    means, _ = paper_table(table, "moons", "w2", auto=EPS)
    assert list(means.index) == ["FM (independent)", "SD-FM (semidiscrete), eps=0",
                                 "SD-FM (semidiscrete), eps=auto (0.0123)", "SD-FM (semidiscrete), eps=0.1"]
    assert read_auto_epsilons(root / "results") == {"moons": EPS}
    bench = root / "benchmarks"
    for stage, name in (("potential", "epsauto.tsv"), ("train", "sdfm-epsauto-seed0.tsv"),
                        ("evaluate", "sdfm-epsauto-seed0.tsv")):
        (bench / stage / "moons").mkdir(parents=True, exist_ok=True)
        (bench / stage / "moons" / name).write_text("s\th:m:s\n2.5\t0:00:02\n")
    costs = cost_table(table[table.epsilon == EPS], bench, {"moons": EPS})
    assert costs.missing.tolist() == [0] and costs.total.tolist() == [7.5]


def test_the_epsilon_figure_marks_auto(tmp_path):
    from sdfm.report.document import epsilon_study
    from sdfm.report.figures import plot_metric_vs_epsilon

    paths = plot_metric_vs_epsilon(epsilon_study(_table(EPS), "moons"), "moons", tmp_path, auto=EPS)
    assert all(p.stat().st_size > 0 for p in paths)


def test_the_study_ranks_auto_against_the_fixed_grid(auto_results):
    root, summary_path = auto_results
    comparison = auto_vs_fixed(_table(EPS), {"moons": EPS})
    assert comparison["rank"].tolist() == [1, 1] and comparison.best_fixed_epsilon.tolist() == [0.0, 0.0]
    assert comparison.best_fixed.tolist() == [1.0, 4.0] and comparison.fm.tolist() == [9.0, 9.0]
    assert comparison.auto.tolist() == [0.5, 2.0]
    metrics = root / "metrics.csv"
    _table(EPS).to_csv(metrics, index=False)
    reports = root / "reports"
    adaptive_epsilon_study(metrics, [summary_path], reports / "figures" / "study_adaptive_epsilon.png",
                           root / "section.md", reports)
    section = (root / "section.md").read_text()
    assert (reports / "figures" / "study_adaptive_epsilon.png").stat().st_size > 0
    assert "auto chose epsilon = 0.0123" in section and "](figures/study_adaptive_epsilon.png)" in section
    assert "best SD-FM variant in 2 of 2" in section and "| w2 | 1 | 1 | 2 | **0.5** | 9 | 1 of 3 |" in section
