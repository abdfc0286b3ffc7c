"""MLflow tracking: one run per job key, reopened on re-runs; retries on a locked store."""

import pytest

from sdfm import tracking
from sdfm.tracking import job_run, open_client, run_key, with_retries


@pytest.fixture
def results(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path / "results"


def _runs(results, name="exp"):
    client = open_client(results)
    experiment = client.get_experiment_by_name(name)
    return client.search_runs([experiment.experiment_id])


def test_same_key_reopens_the_run_and_keeps_params_and_curves(results):
    key = {"stage": "train", "seed": 0}
    with job_run("exp", "train/a", key, {"stage": "train"}, results) as run:
        run.log_params({"lr": 0.001})
        run.log_metrics({"loss": 1.0}, step=1)
        first = run.run_id
    with job_run("exp", "train/a", key, {"stage": "train"}, results) as run:
        run.log_params({"lr": 0.001})
        run.log_metrics({"loss": 0.5}, step=2)
        assert run.run_id == first
    with job_run("exp", "train/b", {**key, "seed": 1}, {"stage": "train"}, results):
        pass
    runs = _runs(results)
    assert len(runs) == 2
    reopened = next(r for r in runs if r.info.run_id == first)
    assert reopened.info.status == "FINISHED" and reopened.data.params["lr"] == "0.001"
    history = open_client(results).get_metric_history(first, "loss")
    assert [m.step for m in history] == [1, 2]


def test_failed_job_marks_its_run_failed(results):
    with pytest.raises(RuntimeError):
        with job_run("exp", "boom", {"k": 1}, None, results):
            raise RuntimeError("boom")
    assert _runs(results)[0].info.status == "FAILED"


def test_default_store_lives_under_results(results):
    assert tracking.tracking_uri(results) == f"sqlite:///{results.resolve() / 'mlflow.db'}"
    assert run_key({"a": 1, "b": 2}) == run_key({"b": 2, "a": 1})


def test_env_overrides_the_store(monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert tracking.tracking_uri(tmp_path) == "http://127.0.0.1:5999"
    assert tracking.artifact_location(tmp_path) is None


def test_retries_transient_errors_then_gives_up(monkeypatch):
    monkeypatch.setattr(tracking.time, "sleep", lambda s: None)
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError("database is locked")
        return "ok"

    assert with_retries(flaky) == "ok" and len(calls) == 3
    with pytest.raises(RuntimeError, match="locked"):
        with_retries(lambda: (_ for _ in ()).throw(RuntimeError("database is locked")), attempts=2)
    with pytest.raises(ValueError):
        with_retries(lambda: (_ for _ in ()).throw(ValueError("bad param")))
