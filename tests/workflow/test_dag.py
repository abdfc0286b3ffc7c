"""The whole DAG on a tiny config: outputs, reports, MLflow runs, no rerun, early config errors."""

import copy

import pandas as pd
from mlflow.tracking import MlflowClient

from conftest import TINY, TINY_JOBS_WITH_RUNS, job_runs, snakemake, write_config

from sdfm.artifacts import METRIC_COLUMNS


def _runs(workdir, parents=False):
    """The job runs (with ``parents``: the parent runs of the data sets)."""
    client = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'results' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tiny")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    jobs = job_runs(runs)
    return [r for r in runs if r not in jobs] if parents else jobs


def test_dag_writes_the_tidy_table_and_the_report(tiny_run):
    table = pd.read_csv(tiny_run / "results" / "metrics.csv")
    assert list(table.columns) == METRIC_COLUMNS and "epsilon_label" in METRIC_COLUMNS
    labels = pd.read_csv(tiny_run / "results" / "metrics.csv", dtype={"epsilon_label": str}).epsilon_label
    assert set(labels) <= {"0", "0.1", "0.5", "1", "auto"} and (labels == "0").any()  # the path spelling, never "0.0"
    assert len(table) == 4 * 2 * 2  # variants x NFE x metrics
    assert set(table.method) == {"fm", "otfm", "sdfm"}
    assert table.value.notna().all() and (table.value[table.metric == "w2"] > 0).all()
    report = (tiny_run / "reports" / "report.md").read_text()
    assert "| SD-FM (semidiscrete), eps=0 |" in report
    assert (tiny_run / "reports" / "figures" / "moons_metrics_vs_nfe.png").stat().st_size > 10_000
    assert (tiny_run / "reports" / "figures" / "moons_chi2.pdf").exists()
    for rule in ("prepare", "potential", "train", "evaluate"):
        assert list((tiny_run / "results" / "benchmarks" / rule).rglob("*.tsv")), rule


def test_mlflow_holds_one_finished_run_per_job_with_params_and_curves(tiny_run):
    runs = _runs(tiny_run)
    assert len(runs) == TINY_JOBS_WITH_RUNS
    assert {r.info.status for r in runs} == {"FINISHED"}
    sdfm_train = [r for r in runs if r.data.tags.get("stage") == "train" and r.data.tags.get("method") == "sdfm"]
    assert len(sdfm_train) == 2
    assert all(r.data.tags.get("potential_mlflow_run_id") for r in sdfm_train)
    potential = next(r for r in runs if r.data.tags.get("stage") == "potential")
    assert "epsilon_abs" in potential.data.params and "chi2" in potential.data.metrics


def test_second_run_has_nothing_to_do_and_reruns_add_no_run(tiny_run):
    dry = snakemake(tiny_run, "--cores", "2", "-n")
    assert dry.returncode == 0
    assert "Nothing to be done" in dry.stdout + dry.stderr
    again = snakemake(tiny_run, "--cores", "2", "--forcerun", "evaluate")
    assert again.returncode == 0, again.stderr[-2000:]
    assert len(_runs(tiny_run)) == TINY_JOBS_WITH_RUNS
    (parent,) = _runs(tiny_run, parents=True)  # resumed and forced jobs keep their one parent
    assert {r.data.tags["mlflow.parentRunId"] for r in _runs(tiny_run)} == {parent.info.run_id}


def test_invalid_config_stops_before_any_job(tmp_path):
    config = copy.deepcopy(TINY)
    config["methods"]["sdfm"]["epsilons"] = [-0.5]
    write_config(tmp_path, config)
    result = snakemake(tmp_path, "--cores", "1")
    assert result.returncode != 0
    lines = [l for l in result.stderr.splitlines() if "invalid config" in l]
    assert len(lines) == 1 and "'methods.sdfm.epsilons.0'" in lines[0]
    assert not (tmp_path / "results").exists()
