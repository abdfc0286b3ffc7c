"""MLflow tracking: one run per job key, reopened on re-runs; retries on a locked store."""

import json
import multiprocessing
import os
import time

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


# --- What a person browsing the UI sees: experiment kind, parents, factor params, inputs, sources ---

@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One SQLite store for the tests below (creating and migrating one takes seconds); each test
    uses its own experiment, named after the test."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        results = tmp_path_factory.mktemp("shared") / "results"
        open_client(results)
        yield results


@pytest.fixture
def exp(request):
    return request.node.name


def _prepared(tmp_path):
    from sdfm.data import prepare_dataset

    path = tmp_path / "moons.npz"
    return path, prepare_dataset("moons", path, n_train=64, n_test=32, seed=0)


def _train_tags(seed=0, **extra):
    return {"stage": "train", "dataset": "moons", "method": "sdfm", "epsilon_rel": 0.1, "seed": seed, **extra}


def test_experiment_is_a_model_training_experiment_and_a_chosen_kind_is_kept(store, exp):
    with job_run(exp, "a", {"k": 1}, None, store):
        pass
    client = open_client(store)
    assert client.get_experiment_by_name(exp).tags["mlflow.experimentKind"] == "custom_model_development"
    old = client.create_experiment(f"{exp}-old")  # a store from before: no kind yet
    client.set_experiment_tag(client.create_experiment(f"{exp}-chosen"), "mlflow.experimentKind", "genai_development")
    for name in (f"{exp}-old", f"{exp}-chosen"):
        with job_run(name, "a", {"k": 1}, None, store):
            pass
    assert client.get_experiment(old).tags["mlflow.experimentKind"] == "custom_model_development"
    assert client.get_experiment_by_name(f"{exp}-chosen").tags["mlflow.experimentKind"] == "genai_development"


def test_factor_params_name_the_epsilon_label_its_number_and_absolute_value():
    assert tracking.factor_params(_train_tags(epsilon_abs=0.37)) == {
        "stage": "train", "dataset": "moons", "method": "sdfm", "seed": 0, "epsilon": "0.1", "epsilon_rel": 0.1,
        "epsilon_abs": 0.37}
    auto = tracking.factor_params({"stage": "potential", "dataset": "d", "epsilon_rel": 0.0312, "epsilon_auto": "true"})
    assert auto == {"stage": "potential", "dataset": "d", "epsilon": "auto", "epsilon_rel": 0.0312}
    assert tracking.factor_params({"stage": "prepare", "dataset": "d"}) == {"stage": "prepare", "dataset": "d"}


def test_jobs_of_a_data_set_nest_under_one_parent_with_factors_inputs_and_sources(store, exp, tmp_path):
    data, sha256 = _prepared(tmp_path)
    with job_run(exp, "prepare/moons", {"k": 0}, {"stage": "prepare", "dataset": "moons"}, store) as run:
        run.log_data(data)
    for seed in (0, 1):
        with job_run(exp, f"train/{seed}", {"k": seed + 1}, _train_tags(seed), store, data):
            pass
    with job_run(exp, "train/other", {"k": 9}, {**_train_tags(), "dataset": "circles"}, store):
        pass
    runs = _runs(store, exp)
    parents = {r.info.run_name: r for r in runs if tracking.PARENT_KEY_TAG in r.data.tags}
    assert sorted(parents) == ["circles", "moons"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents["moons"].info.run_id]
    assert sorted(r.info.run_name for r in children) == ["prepare/moons", "train/0", "train/1"]
    assert {r.info.status for r in runs} == {"FINISHED"}
    commit = tracking.source_tags()["mlflow.source.git.commit"]
    assert len(commit) == 40
    for run in children:
        assert run.data.tags["mlflow.source.git.commit"] == commit
        assert run.data.tags["mlflow.source.name"] == f"sdfm {run.data.tags['stage']}"
        (given,) = run.inputs.dataset_inputs
        assert (given.dataset.name, given.dataset.digest) == ("moons", sha256[:tracking.DIGEST_CHARS])
        assert json.loads(given.dataset.source)["uri"] == data.resolve().as_uri()
    trained = next(r for r in children if r.info.run_name == "train/1")
    assert {k: trained.data.params[k] for k in ("dataset", "method", "epsilon", "epsilon_rel", "seed")} == {
        "dataset": "moons", "method": "sdfm", "epsilon": "0.1", "epsilon_rel": "0.1", "seed": "1"}
    assert [i.tags[0].value for i in trained.inputs.dataset_inputs] == ["training"]
    assert parents["moons"].inputs.dataset_inputs[0].dataset.digest == sha256[:tracking.DIGEST_CHARS]


def test_parent_status_follows_its_children_and_a_rerun_keeps_parent_and_run(store, exp):
    client = open_client(store)
    with pytest.raises(RuntimeError):
        with job_run(exp, "train/0", {"k": 1}, _train_tags(), store):
            raise RuntimeError("killed")
    with job_run(exp, "train/1", {"k": 2}, _train_tags(1), store) as other:
        parent = client.get_run(other.run_id).data.tags["mlflow.parentRunId"]
        assert client.get_run(parent).info.status == "RUNNING"  # a child is running
    assert client.get_run(parent).info.status == "FAILED"  # train/0 failed
    with job_run(exp, "train/0", {"k": 1}, _train_tags(), store) as rerun:  # resumed: same run, same parent
        assert client.get_run(rerun.run_id).data.tags["mlflow.parentRunId"] == parent
    assert client.get_run(parent).info.status == "FINISHED"
    assert len(_runs(store, exp)) == 3


def _parallel_job(store, exp, seed):
    with job_run(exp, f"train/{seed}", {"k": seed}, _train_tags(seed), store):
        time.sleep(0.2)


def test_parallel_processes_make_one_parent(store, exp):
    """Jobs started together in separate processes (snakemake --cores N) find or create one parent.

    The workers are spawned, as Snakemake's jobs are fresh processes: a fork of this process would
    inherit the MLflow client's threads and locks mid-use and can deadlock (it did, once in a run).
    """
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_parallel_job, args=(store, exp, seed)) for seed in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=300)
        if worker.exitcode is None:
            worker.kill()
    assert [w.exitcode for w in workers] == [0, 0, 0, 0]
    runs = _runs(store, exp)
    parents = [r for r in runs if tracking.PARENT_KEY_TAG in r.data.tags]
    assert len(parents) == 1 and len(runs) == 5
    assert {r.data.tags.get("mlflow.parentRunId") for r in runs if r not in parents} == {parents[0].info.run_id}
    assert parents[0].info.status == "FINISHED"


@pytest.mark.slow  # ~20 s on a shared machine: mlflow.pytorch saves, logs and loads the model
def test_log_torch_model_makes_a_loadable_logged_model_of_the_run(store, exp, monkeypatch):
    import mlflow.pytorch
    import torch

    model = torch.nn.Linear(3, 2)
    with job_run(exp, "train/0", {"k": 1}, _train_tags(), store) as run:
        run.log_torch_model(model)
    assert "MLFLOW_TRACKING_URI" not in os.environ  # the fluent API's URI was put back
    client = open_client(store)
    (logged,) = client.search_logged_models([client.get_experiment_by_name(exp).experiment_id])
    assert logged.source_run_id == run.run_id and logged.name == "model"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking.tracking_uri(store))
    loaded = mlflow.pytorch.load_model(logged.model_uri)
    x = torch.randn(4, 3)
    assert torch.equal(loaded(x), model(x))
