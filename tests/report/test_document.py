"""Tables and figures of sdfm.report.document on small synthetic inputs (metrics, benchmarks, tiny models)."""

import json
import subprocess

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from sdfm.data import prepare_dataset
from sdfm.io import atomic_torch_save
from sdfm.models import build_model
from sdfm.report.document import (
    cost_table, epsilon_study, format_paper_table, git_state, pairing_table, paper_table, read_benchmark,
    split_figure_name, write_report,
)
from sdfm.report.figures import choose_nfes

VARIANTS = [("fm", 0.0), ("otfm", 0.0), ("otfm", 0.5), ("sdfm", 0.0), ("sdfm", 0.5)]
NFES = [1, 2, 4, 8, 16]


def _value(method, epsilon, seed, nfe, metric):
    """A known value: method and epsilon set the level, NFE the decay, the seed a +-1% wiggle."""
    level = {"fm": 4.0, "otfm": 2.0, "sdfm": 1.0}[method] * (1 + epsilon)
    return level / nfe * (1.01 if seed else 0.99) * (2.0 if metric == "energy" else 1.0)


def _table(dataset="toy", dopri5=False):
    rows = []
    for (method, epsilon), seed, nfe, metric in (
            (v, s, n, m) for v in VARIANTS for s in (0, 1) for n in NFES for m in ("w2", "energy")):
        rows.append([dataset, method, epsilon, 64, seed, "euler", nfe, metric, _value(method, epsilon, seed, nfe, metric)])
    if dopri5:
        for (method, epsilon), seed in ((v, s) for v in VARIANTS for s in (0, 1)):
            rows.append([dataset, method, epsilon, 64, seed, "dopri5", 20 + 6 * seed, "w2",
                         _value(method, epsilon, 0, 100, "w2") + 0.1 + seed])
    return pd.DataFrame(rows, columns=["dataset", "method", "epsilon", "batch_size", "seed", "solver", "nfe",
                                       "metric", "value"])


def test_choose_nfes_spreads_on_a_log_scale():
    assert choose_nfes([1, 2, 4, 8, 16]) == [1, 4, 16]
    assert choose_nfes([4, 1]) == [1, 4]
    assert choose_nfes([1, 2, 4, 8, 16, 32, 64], k=4) == [1, 4, 16, 64]


def test_split_figure_name_keeps_underscores_of_the_data_set():
    assert split_figure_name("eight_gaussians_metrics_vs_nfe") == ("eight_gaussians", "metrics_vs_nfe")
    assert split_figure_name("a_b_metrics_vs_epsilon") == ("a_b", "metrics_vs_epsilon")
    with pytest.raises(ValueError):
        split_figure_name("toy_histogram")


def test_epsilon_study_uses_the_seed_means_at_the_chosen_nfe():
    study = epsilon_study(_table(), "toy")
    assert sorted(study.nfe.unique()) == [1, 4, 16]
    row = study[(study.method == "sdfm") & (study.epsilon == 0.5) & (study.nfe == 4) & (study.metric == "w2")]
    expected = np.mean([_value("sdfm", 0.5, s, 4, "w2") for s in (0, 1)])
    assert row["mean"].item() == pytest.approx(expected)
    assert row["count"].item() == 2
    assert row["std"].item() == pytest.approx(np.std([_value("sdfm", 0.5, s, 4, "w2") for s in (0, 1)], ddof=1))


def test_paper_table_pools_dopri5_seeds_whatever_nfe_they_used():
    means, stds = paper_table(_table(dopri5=True), "toy", "w2")
    assert list(means.columns) == [f"euler {n}" for n in NFES] + ["dopri5"]
    assert list(means.index)[0] == "FM (independent)" and list(means.index)[-1].startswith("SD-FM")
    fm = _value("fm", 0.0, 0, 100, "w2")
    assert means.at["FM (independent)", "dopri5"] == pytest.approx(fm + 0.6)
    assert stds.at["FM (independent)", "dopri5"] == pytest.approx(np.std([0.1, 1.1], ddof=1))
    text = format_paper_table(means, stds)
    assert text.count("**") == 2 * len(means.columns)  # one best per column
    assert all(line.startswith("| SD-FM (semidiscrete), eps=0 | **") for line in text.splitlines()
               if "eps=0 |" in line and "SD-FM" in line)


def _write_tsv(path, seconds):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("s\th:m:s\tmax_rss\tcpu_time\n" + "".join(f"{s}\t0:00:01\t10.0\t1.0\n" for s in seconds))


def _benchmarks(root, table):
    """Benchmark files with seconds that encode their job, so sums can be checked by hand."""
    seconds = {}
    runs = table[["dataset", "method", "epsilon", "seed"]].drop_duplicates()
    for dataset, method, epsilon, seed in runs.itertuples(index=False):
        for k, stage in enumerate(("train", "evaluate")):
            s = 10.0 * (k + 1) + seed + epsilon
            _write_tsv(root / stage / dataset / f"{method}-eps{epsilon:g}-seed{seed}.tsv", [s])
            seconds[(stage, method, epsilon, seed)] = s
    for epsilon in (0.0, 0.5):
        _write_tsv(root / "potential" / "toy" / f"eps{epsilon:g}.tsv", [100.0 + epsilon, 102.0 + epsilon])
    _write_tsv(root / "prepare" / "toy.tsv", [3.0])
    return seconds


def test_cost_table_sums_the_benchmark_files(tmp_path):
    table = _table()
    seconds = _benchmarks(tmp_path, table)
    costs = cost_table(table, tmp_path).set_index(["method", "epsilon"])
    assert len(costs) == len(VARIANTS) and (costs.missing == 0).all()
    for method, epsilon in VARIANTS:
        row = costs.loc[(method, epsilon)]
        assert row.train == pytest.approx(sum(seconds[("train", method, epsilon, s)] for s in (0, 1)))
        assert row.evaluate == pytest.approx(sum(seconds[("evaluate", method, epsilon, s)] for s in (0, 1)))
        assert row.potential == pytest.approx(101.0 + epsilon if method == "sdfm" else 0.0)  # once, mean of repeats
        assert row.total == pytest.approx(row.potential + row.train + row.evaluate)
    assert np.isnan(read_benchmark(tmp_path / "nope.tsv"))
    (tmp_path / "train" / "toy" / "fm-eps0-seed1.tsv").unlink()
    assert cost_table(table, tmp_path).set_index(["method", "epsilon"]).at[("fm", 0.0), "missing"] == 1


def test_pairing_table_averages_the_seeds():
    summaries = [{"dataset": "toy", "method": "sdfm", "epsilon_rel": 0.0, "seed": s, "pairing_share": share,
                  "pairing_seconds": 2.0 * share, "step_seconds": 2.0 * (1 - share)} for s, share in ((0, 0.2), (1, 0.4))]
    out = pairing_table(summaries)
    assert len(out) == 1 and out.share_mean.item() == pytest.approx(0.3)
    assert out.share_std.item() == pytest.approx(np.std([0.2, 0.4], ddof=1))
    assert pairing_table([]).empty


def test_git_state_of_a_checkout_and_of_a_plain_folder(tmp_path):
    plain = git_state(tmp_path)
    assert plain["commit"] is None and plain["error"]
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "a.txt").write_text("1")
    subprocess.run([*git, "add", "a.txt"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "init"], check=True)
    clean = git_state(repo)
    assert len(clean["commit"]) == 40 and clean["dirty"] is False
    (repo / "untracked.txt").write_text("x")
    assert git_state(repo)["dirty"] is False
    (repo / "a.txt").write_text("2")
    assert git_state(repo)["dirty"] is True


def _run_dir(root, dataset, method, epsilon, seed):
    return root / "runs" / dataset / method / f"eps{epsilon:g}" / f"seed{seed}"


def _tiny_model(run_dir, dataset, method, epsilon, seed, share):
    """A model.pt / model.json pair as the train job writes them, with an untrained tiny MLP."""
    torch.manual_seed(seed)
    settings = {"kind": "mlp", "hidden": 16, "depth": 2, "time_embed_dim": 8}
    model = build_model("mlp", (2,), hidden=16, depth=2, time_embed_dim=8)
    atomic_torch_save({"model": model.state_dict(), "model_settings": settings, "model_extra": {},
                       "sample_shape": [2], "num_classes": None}, run_dir / "model.pt")
    summary = {"dataset": dataset, "method": method, "epsilon_rel": epsilon, "seed": seed, "pairing_share": share,
               "pairing_seconds": share, "step_seconds": 1 - share}
    (run_dir / "model.json").write_text(json.dumps(summary))
    return run_dir / "model.json"


def _potential_summary(path, dataset, epsilon):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"dataset": dataset, "epsilon_rel": epsilon, "epsilon_abs": 0.3 * epsilon,
                                "steps_run": 200, "fit_seconds": 1.5, "final_chi2": 0.01,
                                "chi2_curve": {"step": [100, 200], "chi2": [0.2, 0.01]}}))
    return path


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A fake finished run: a 2-D set with models and data, an image set with sample grids."""
    root = tmp_path_factory.mktemp("results")
    table = pd.concat([_table("toy"), _table("pics", dopri5=True)])
    table.to_csv(root / "metrics.csv", index=False)
    _benchmarks(root / "benchmarks", table)
    prepare_dataset("moons", root / "data" / "toy.npz", n_train=200, n_test=300, seed=0)
    train, rng = [], np.random.default_rng(0)
    for (method, epsilon), seed in ((v, s) for v in VARIANTS for s in (0, 1)):
        for dataset in ("toy", "pics"):
            run = _run_dir(root, dataset, method, epsilon, seed)
            run.mkdir(parents=True)
            train.append(_tiny_model(run, dataset, method, epsilon, seed, 0.1 + 0.2 * (method == "otfm")))
            if dataset == "pics":
                (run / "samples").mkdir()
                for name in (*(f"euler_nfe{n}" for n in NFES), f"dopri5_nfe{30 + seed}"):
                    pixels = rng.integers(0, 255, size=(66, 66, 3), dtype=np.uint8)
                    Image.fromarray(pixels).save(run / "samples" / f"{name}.png")
    summaries = [_potential_summary(root / "potentials" / d / f"eps{e:g}.json", d, e)
                 for d in ("toy", "pics") for e in (0.0, 0.5)]
    return {"root": root, "train": train, "summaries": summaries, "table": table}


KINDS = {"toy": ["metrics_vs_nfe", "metrics_vs_epsilon", "chi2", "cost", "trajectories"],
         "pics": ["metrics_vs_nfe", "metrics_vs_epsilon", "chi2", "cost", "samples"]}


def test_write_report_draws_every_figure_and_records_config_and_commit(finished, tmp_path):
    root = finished["root"]
    config = {"experiment_name": "unit", "seeds": [0, 1], "datasets": {"toy": {"source": "moons"}}}
    report = write_report(root / "metrics.csv", finished["summaries"], tmp_path, {"experiment": "unit",
                          "repo": str(tmp_path), "config": json.dumps(config)}, train_summaries=finished["train"],
                          data=[root / "data" / "toy.npz"], benchmarks=root / "benchmarks")
    names = {p.name for p in (tmp_path / "figures").iterdir()}
    expected = {f"{d}_{k}{s}" for d, kinds in KINDS.items() for k in kinds for s in (".png", ".pdf")}
    assert names == expected
    for name in expected:
        assert (tmp_path / "figures" / name).stat().st_size > 8_000, name
    with Image.open(tmp_path / "figures" / "pics_samples.png") as image:
        assert image.width > 800 and image.height > 800  # 5 rows x 4 columns of readable grids
    text = report.read_text()
    for d, kinds in KINDS.items():
        for k in kinds:
            assert f"](figures/{d}_{k}.png)" in text
    assert "| SD-FM (semidiscrete), eps=0.5 |" in text
    assert "Commit unknown (" in text  # tmp_path is no git checkout
    assert "```yaml\nexperiment_name: unit\n" in text
    # the cost table sums the benchmark files: FM trains 10+11 s and evaluates 20+21 s over two seeds
    assert "| FM (independent) | 0.0 | 21.0 | 41.0 | 62.0 | 10.0% ± 0.0 |" in text
    assert "Shared by every method: data preparation 3.0 s." in text


def test_write_report_draws_only_the_figures_asked_for_with_placeholders(finished, tmp_path):
    root = finished["root"]
    report = write_report(root / "metrics.csv", [], tmp_path, {"experiment": "unit", "commit": "abc123"},
                          figures_wanted=["toy_metrics_vs_nfe", "toy_trajectories", "toy_chi2"])
    names = sorted(p.name for p in (tmp_path / "figures").iterdir())
    assert names == ["toy_chi2.pdf", "toy_chi2.png", "toy_metrics_vs_nfe.pdf", "toy_metrics_vs_nfe.png",
                     "toy_trajectories.pdf", "toy_trajectories.png"]
    text = report.read_text()
    assert "commit `abc123`" in text
    assert "## pics" in text and "figures/pics_" not in text  # tables of every data set, only the figures asked for


def test_study_sections_are_appended_in_order_before_the_config(finished, tmp_path):
    root = finished["root"]
    first, second = tmp_path / "a.md", tmp_path / "b.md"
    first.write_text("### Convergence\n\n![rate](figures/study_a.png)\n")
    second.write_text("### PCA cost\n")
    report = write_report(root / "metrics.csv", [], tmp_path / "out", {"experiment": "unit", "commit": "abc",
                          "config": {"experiment_name": "unit"}}, figures_wanted=["toy_metrics_vs_nfe"],
                          sections=[first, second])
    text = report.read_text()
    assert text.index("## Studies") < text.index("### Convergence") < text.index("### PCA cost") < text.index("```yaml")
    assert "![rate](figures/study_a.png)" in text


def test_trajectories_of_the_same_noise_start_at_the_same_points(finished):
    from sdfm.report.document import trajectory_panels

    root = finished["root"]
    models = {v: _run_dir(root, "toy", *v, 0) / "model.pt" for v in VARIANTS[:2]}
    panels = trajectory_panels(models, nfe=4, n_paths=5)
    assert [p["paths"].shape for p in panels] == [(5, 5, 2)] * 2
    np.testing.assert_array_equal(panels[0]["paths"][0], panels[1]["paths"][0])
    assert all(p["curvature"] >= 0 for p in panels)


def test_report_states_the_epsilon_reference_and_the_ot_batch(finished, tmp_path):
    root = finished["root"]
    config = {"epsilon_reference": "sq_euclidean", "methods": {"otfm": {"epsilons": [0.0], "ot_batch_size": 4096}}}
    text = write_report(root / "metrics.csv", finished["summaries"], tmp_path, {"experiment": "unit", "commit": "abc",
                        "config": json.dumps(config)}, figures_wanted=[]).read_text()
    assert "relative to the std of the cost |x - y|^2 (OTT-JAX's convention) on a reference batch" in text
    assert "OT-FM solves OT on 4096 noise x 4096 data points" in text
    assert "best in bold); eps relative to the std of the cost |x - y|^2" in text
    plain = write_report(root / "metrics.csv", finished["summaries"], tmp_path / "plain", {"experiment": "unit",
                         "commit": "abc"}, figures_wanted=[]).read_text()
    assert "(`epsilon_reference: inner_product`)" in plain and "OT-FM solves" not in plain
    assert "best in bold); eps relative to the std of the cost -<x, y>" in plain
