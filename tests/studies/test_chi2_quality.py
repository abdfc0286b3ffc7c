"""The chi^2-vs-quality study: fits stopped at each level, its table, saturation point, figure, section and checks."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from sdfm.artifacts import METRIC_COLUMNS
from sdfm.cli import main
from sdfm.config import load_config_file, validate_config
from sdfm.errors import ConfigError
from sdfm.ot import fit_potential
from sdfm.studies.chi2_quality import (STUDY, chi2_quality_study, collect, run_label, saturation, shrink,
                                       study_settings)

# (level, reached chi^2, steps, stopped on its bound): fd improves down to chi^2 0.05; 0.02 is a hair better
LEVELS = [(1.0, 0.8, 40, True), (0.1, 0.09, 120, True), (0.05, 0.045, 200, True), (0.02, 0.03, 400, False)]
FD = {1.0: 9.0, 0.1: 4.0, 0.05: 2.0, 0.02: 1.9}
#: seed noise of every level; the 0.02 runs' own noise is (+0.2, -0.1) with ``spread``, else the others'
NOISE = (-0.1, 0.1)


def _runs(tmp_path, dataset="digits", spread=True):
    """Summaries and per-seed metrics.csv files as the study's fit and evaluate jobs write them."""
    metrics, summaries = {}, {}
    for level, chi2, steps, reached in LEVELS:
        label = run_label(dataset, level)
        folder = tmp_path / label
        folder.mkdir()
        summary = {"dataset": label, "final_chi2": chi2, "steps_run": steps, "stopped_by_threshold": reached,
                   "chi2_curve": {"step": [steps], "chi2": [chi2]}}
        (folder / "potential.json").write_text(json.dumps(summary))
        summaries[level] = folder / "potential.json"
        metrics[level] = []
        for seed, noise in enumerate((0.2, -0.1) if spread and level == 0.02 else NOISE):
            rows = [[label, "sdfm", 0.0, "0", 128, seed, "euler", nfe, f"fd_{label}", FD[level] * (2.0 / nfe) + noise]
                    for nfe in (1, 2)]
            rows.append([label, "sdfm", 0.0, "0", 128, seed, "dopri5", 40 + seed, f"fd_{label}", FD[level] + noise])
            path = folder / f"seed{seed}.csv"
            pd.DataFrame(rows, columns=METRIC_COLUMNS).to_csv(path, index=False)
            metrics[level].append(path)
    return metrics, summaries


def test_collect_names_metrics_by_the_data_set_and_keeps_the_fit(tmp_path):
    table = collect("digits", *_runs(tmp_path))
    assert set(table.metric) == {"fd_digits"} and set(table.dataset) == {"digits"}
    assert len(table) == 4 * 2 * 3
    row = table[(table.level == 0.02) & (table.seed == 1) & (table.solver == "euler") & (table.nfe == 1)].iloc[0]
    assert (row.chi2, row.steps_run, row.reached) == (0.03, 400, False)
    assert row.value == pytest.approx(1.9 * 2 - 0.1)


@pytest.mark.parametrize("spread, saturates_at", [(True, 0.045), (False, 0.03)])
def test_saturation_compares_levels_seed_by_seed(tmp_path, spread, saturates_at):
    """Best: chi^2 0.03. Level 0.05 is worse on average: within the paired noise when its seed-by-seed
    differences scatter (NFE 2: -0.2, 0.3; 2 se = 0.5), not when every seed is 0.1 worse.
    Level 0.1 (fd 4) is never within; the dopri5 runs (NFE 40, 41) are one column."""
    from sdfm.studies.chi2_quality import _stats

    table = collect("digits", *_runs(tmp_path, spread=spread))
    assert set(_stats(table)[lambda t: t.solver == "dopri5"].nfe) == {0}
    plateau = saturation(table).set_index(["solver", "nfe"])
    assert set(plateau.best_chi2) == {0.03}
    assert plateau.loc[("euler", 2), "best"] == pytest.approx(1.9 + (0.05 if spread else 0.0))
    assert plateau.saturates_at.tolist() == [saturates_at] * 3


def test_the_study_writes_its_table_figure_and_section(tmp_path):
    metrics, summaries = _runs(tmp_path)
    grid = tmp_path / "metrics.csv"
    pd.DataFrame([["digits", method, 0.0, "0", 128, seed, "euler", nfe, "fd_digits", value]
                  for method, value in (("fm", 30.0), ("sdfm", 2.5)) for seed in (0, 1) for nfe in (1, 2)],
                 columns=METRIC_COLUMNS).to_csv(grid, index=False)
    reports = tmp_path / "reports"
    figure = reports / "figures" / "study_chi2_quality.png"
    table = chi2_quality_study({"digits": (metrics, summaries)}, figure, tmp_path / "section.md", reports,
                               tmp_path / "tables", grid_metrics=grid)
    assert figure.stat().st_size > 0 and figure.with_suffix(".pdf").stat().st_size > 0
    assert len(pd.read_csv(tmp_path / "tables" / "digits.csv")) == len(table) == 24
    section = (tmp_path / "section.md").read_text()
    assert "](figures/study_chi2_quality.png)" in section
    assert "| level | chi^2 | steps | euler 1 | euler 2 | dopri5 |" in section
    assert "| 0.05 | 0.045 | 200 | 4 ± 0.14 | 2 ± 0.14 | 2 ± 0.14 |" in section
    assert "| 0.02 | 0.03 | 400 (cap) | **3.85 ± 0.21** | **1.95 ± 0.21** | **1.95 ± 0.21** |" in section
    assert "(cap): the fit used all its steps" in section
    assert "| FM | | | 30 | 30 | – |" in section and "| SD-FM (grid fit) | | | 2.5 | 2.5 | – |" in section
    assert "2 standard errors) from chi^2 = 0.045 (dopri5), 0.045 (euler 1), 0.045 (euler 2) down" in section


def test_the_cli_reads_the_runs_as_json(tmp_path, capsys):
    metrics, summaries = _runs(tmp_path)
    runs = {"digits": {f"{level:g}": {"summary": str(summaries[level]), "metrics": [str(p) for p in metrics[level]]}
                       for level in metrics}}
    main(["chi2-quality-study", "--runs", json.dumps(runs), "--tables-dir", str(tmp_path / "t"),
          "--figure", str(tmp_path / "r" / "f.png"), "--section", str(tmp_path / "s.md"),
          "--reports-dir", str(tmp_path / "r")])
    assert "4 levels x 2 seeds of digits" in capsys.readouterr().out


def test_a_fit_stops_at_each_level_with_the_study_settings():
    """The study's settings make the solver stop on its bound: a lower level runs longer and reaches lower chi^2."""
    y = torch.randn(200, 2, generator=torch.Generator().manual_seed(0)) * 3.0
    fits = {}
    for level in (1.0, 0.05):
        settings = study_settings({"steps": 4000, "batch_size": 256, "eval_batch": 8192}, STUDY.defaults, level)
        assert settings["chi2_threshold"] == level and settings["eval_every"] == 25
        potential = fit_potential(y, **settings)
        history = potential.history
        assert history["stopped_by_threshold"] and history["steps_run"] < 4000
        assert history["chi2"][-1] + 2 * history["chi2_sd"][-1] <= level
        fits[level] = history["steps_run"]
    assert fits[0.05] > fits[1.0]
    assert study_settings({"steps": 10}, {**STUDY.defaults, "steps": 99}, 0.3)["steps"] == 99


def test_config_checks_and_shrink():
    config = load_config_file("workflow/configs/comparisons.yaml")
    assert validate_config(config)["studies"]["chi2_quality"]["datasets"] == ["digits"]
    for entry, where in (({"datasets": ["cifar"]}, "'cifar' is not a data set"),
                         ({"datasets": ["digits"], "levels": [0.1, 0.10]}, "repeats a level"),
                         ({"datasets": ["digits"], "levels": [0.0]}, "studies.chi2_quality.levels"),
                         ({}, "studies.chi2_quality")):
        with pytest.raises(ConfigError, match=where):
            validate_config({**config, "studies": {"chi2_quality": entry}})
    toy = shrink({"datasets": ["digits"], "levels": [0.3, 1.0, 0.02], "steps": 5000})
    assert toy == {"datasets": ["digits"], "levels": [1.0, 0.02], "eval_every": 10}
