"""The workflow on SLURM through workflow/profiles/slurm (snakemake-executor-plugin-slurm).

The dry run needs only the plugin. The real run needs a cluster that answers: `.ci/start-slurm`
starts a one-node one on a Debian machine (CI does it before `make test`); elsewhere it is
skipped with the reason.
"""

import os
import re
import shutil
import subprocess
from types import SimpleNamespace

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from conftest import REPO, TINY, TINY_JOBS_WITH_RUNS, job_runs, snakemake, write_config

pytest.importorskip("snakemake_executor_plugin_slurm", reason="snakemake-executor-plugin-slurm is not installed")

PROFILE = REPO / "workflow" / "profiles" / "slurm"


def _cluster_problem() -> str | None:
    """Why no job can run on SLURM here, or None when a node takes jobs."""
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return "SLURM is not installed (no sinfo/sbatch on PATH; .ci/start-slurm sets up a one-node cluster)"
    try:
        states = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return "the SLURM controller does not answer (sinfo timed out)"
    if states.returncode != 0:
        return f"the SLURM controller does not answer: {states.stderr.strip()[:300]}"
    usable = {"idle", "mixed", "allocated", "completing"}
    if not usable & {s.strip().rstrip("*~#") for s in states.stdout.split()}:
        return f"no SLURM node takes jobs (states: {states.stdout.split()})"
    config = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=20).stdout
    if "sdfm-ci" not in config.split() and os.environ.get("SDFM_TEST_SLURM") != "1":
        return ("a SLURM cluster answers, but not the one-node test cluster of .ci/start-slurm: set "
                "SDFM_TEST_SLURM=1 (and pytest --basetemp on a file system the nodes share) to run on it")
    return None


def _job_counts(out: str) -> dict:
    """The "Job stats" table Snakemake prints, as {rule: count}."""
    lines = out[out.index("Job stats:"):].splitlines()[3:]
    counts = {}
    for line in lines:
        rule, count = line.split()
        counts[rule] = int(count)
        if rule == "total":
            return counts
    raise AssertionError("no total in the job stats")


def test_profile_dry_run_plans_every_job(tmp_path):
    write_config(tmp_path, TINY)
    result = snakemake(tmp_path, "-n", "--profile", str(PROFILE))
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    # Snakemake names the profile (with the workflow-specific default profile beside it since profiles/default)
    assert re.search(r"Using profiles? \S*workflow/profiles/slurm\b", out), out[-3000:]
    counts = _job_counts(out)
    assert {rule: counts.get(rule) for rule in ("prepare_data", "fit_potential", "train", "evaluate", "aggregate")} == \
        {"prepare_data": 1, "fit_potential": 2, "train": 4, "evaluate": 4, "aggregate": 1}
    # Rules declare their own memory and time; the two that do not get the profile's defaults.
    assert "mem_mb=4000" in out and "runtime=240" in out and "gpu=0" in out
    aggregate = out[out.index("rule aggregate:"):].split("\n\n")[0]
    assert "mem_mb=2000" in aggregate and "runtime=30" in aggregate


def test_gpu_resource_becomes_an_sbatch_gpu_request():
    """The rules' ``gpu`` resource is what the plugin turns into ``--gpus`` (0: no GPU asked for)."""
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    class Resources(dict):
        __getattr__ = dict.__getitem__

    def job(**resources):
        return SimpleNamespace(resources=Resources(resources))

    assert set_gres_string(job(gpu=1, mem_mb=4000)).strip() == "--gpus=1"
    assert set_gres_string(job(gpu=1, gpu_model="a100")).strip() == "--gpus=a100:1"
    assert set_gres_string(job(gpu=0, mem_mb=4000)).strip() == ""


@pytest.mark.slow
def test_tiny_dag_runs_on_slurm(tmp_path):
    problem = _cluster_problem()
    if problem:
        pytest.skip(problem)
    write_config(tmp_path, TINY)
    # The test cluster keeps no accounting database: poll squeue (finished jobs stay listed for
    # MinJobAge=300 s). Each job takes 15-30 s here (two Snakemake starts, then the job); the executor
    # polls at 10 s, then 30 s, then backs off, and polls at 10 s again after a job finished.
    result = snakemake(tmp_path, "--profile", str(PROFILE), "--jobs", "4", "--retries", "0",
                       "--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "10",
                       "--seconds-between-status-checks", "10", "--latency-wait", "5")
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]
    submitted = dict(re.findall(r"Job \d+ has been submitted with SLURM jobid (\d+) \(log: .*/rule_(\w+)/", out))
    rules = list(submitted.values())
    assert {rule: rules.count(rule) for rule in ("prepare_data", "fit_potential", "train", "evaluate")} == \
        {"prepare_data": 1, "fit_potential": 2, "train": 4, "evaluate": 4}
    # The rules' resources reached sbatch: train asks for 1 CPU, 4000 MB and 240 minutes.
    train_ids = ",".join(job for job, rule in submitted.items() if rule == "train")
    queue = subprocess.run(["squeue", "--states=all", "--noheader", "-j", train_ids, "-o", "%C|%m|%l|%T"],
                           capture_output=True, text=True, timeout=20)
    assert queue.stdout.split() == ["1|4000M|4:00:00|COMPLETED"] * 4, queue.stdout + queue.stderr
    table = pd.read_csv(tmp_path / "results" / "metrics.csv")
    assert len(table) == 4 * 2 * 2 and table.value.notna().all()
    assert (tmp_path / "reports" / "report.md").exists()
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tiny")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    assert len(job_runs(runs)) == TINY_JOBS_WITH_RUNS
    assert {r.info.status for r in runs} == {"FINISHED"}
