"""Guidance in the report (figure, tables, higher-is-better metrics) and the config checks of precision / recall."""

import copy

import numpy as np
import pandas as pd
import pytest

from sdfm.config import validate_config
from sdfm.errors import ConfigError
from sdfm.report.document import (
    _applicable, format_paper_table, guidance_scale, guidance_study, guidance_table, paper_table,
    write_report,
)
from sdfm.report.figures import higher_is_better, plot_guidance
from sdfm.report.kinds import FIGURE_KINDS

VARIANTS = [("fm", 0.0), ("otfm", 0.0), ("sdfm", 0.0)]
SCALES = [1.0, 1.5, 2.0, 3.0]
LEVEL = {"fm": 3.0, "otfm": 2.0, "sdfm": 1.0}


def _value(method, seed, nfe, w, metric):
    """Known values: FD is lowest at w = 2 and for SD-FM; guidance trades recall for precision."""
    wiggle = 0.01 if seed else -0.01
    if metric == "fd_cond":
        return LEVEL[method] * (1 + (w - 2) ** 2) / nfe + wiggle
    if metric == "precision_cond":
        return 0.5 + 0.1 * w - 0.05 * LEVEL[method] + wiggle
    return 0.9 - 0.1 * w - 0.05 * LEVEL[method] + wiggle  # recall_cond


def _table(nfes=(2, 4, 8)):
    rows = []
    for (method, eps), seed, nfe, w, metric in (
            (v, s, n, w, m) for v in VARIANTS for s in (0, 1) for n in nfes for w in SCALES
            for m in ("fd_cond", "precision_cond", "recall_cond")):
        solver = "euler" if w == 1.0 else f"euler@g={w}"
        rows.append(["cond", method, eps, 64, seed, solver, nfe, metric, _value(method, seed, nfe, w, metric)])
    return pd.DataFrame(rows, columns=["dataset", "method", "epsilon", "batch_size", "seed", "solver", "nfe",
                                       "metric", "value"])


def test_guidance_scale_reads_the_solver_column():
    assert guidance_scale("euler") == ("euler", 1.0)
    assert guidance_scale("euler@g=2.0") == ("euler", 2.0)
    assert guidance_scale("dopri5@g=0.5") == ("dopri5", 0.5)
    assert higher_is_better("precision") and higher_is_better("recall_digits")
    assert not higher_is_better("fd_digits") and not higher_is_better("precisionx")


def test_guidance_study_takes_seed_means_at_nfe_4_or_the_nearest_nfe():
    stats, solver, nfe = guidance_study(_table(), "cond")
    assert (solver, nfe) == ("euler", 4) and sorted(stats.guidance.unique()) == SCALES
    row = stats[(stats.method == "sdfm") & (stats.guidance == 3.0) & (stats.metric == "fd_cond")]
    assert row["mean"].item() == pytest.approx(np.mean([_value("sdfm", s, 4, 3.0, "fd_cond") for s in (0, 1)]))
    assert row["std"].item() == pytest.approx(np.std([-0.01, 0.01], ddof=1)) and row["count"].item() == 2
    _, _, nearest = guidance_study(_table(nfes=(2, 16)), "cond")
    assert nearest == 2  # |log 2 - log 4| < |log 16 - log 4|


def test_guidance_table_bolds_the_lowest_fd_and_the_highest_precision():
    stats, solver, nfe = guidance_study(_table(), "cond")
    text = "\n".join(guidance_table(stats, solver, nfe))
    assert "at Euler NFE 4" in text and "| method | w = 1 | w = 1.5 | w = 2 | w = 3 |" in text
    blocks = {line.split("`")[1]: i for i, line in enumerate(text.splitlines()) if line.startswith("**")}
    lines = text.splitlines()
    sdfm_fd = lines[blocks["fd_cond"] + 6]  # title, blank, table header, rule, FM, OT-FM, then SD-FM
    assert sdfm_fd.startswith("| SD-FM") and sdfm_fd.count("**") == 2 * len(SCALES)  # lowest FD everywhere
    fm_precision = lines[blocks["precision_cond"] + 4]
    assert fm_precision.startswith("| FM") and fm_precision.count("**") == 0
    sdfm_precision = lines[blocks["precision_cond"] + 6]
    assert sdfm_precision.count("**") == 2 * len(SCALES)  # highest precision everywhere
    assert "higher is better" in lines[blocks["recall_cond"]]


def test_format_paper_table_bolds_the_maximum_when_higher_is_better():
    means, stds = paper_table(_table(), "cond", "recall_cond")
    text = format_paper_table(means, stds, lower_is_better=False)
    sdfm = next(line for line in text.splitlines() if line.startswith("| SD-FM"))
    assert sdfm.count("**") == 2 * len(means.columns)


def test_guidance_figure_is_drawn_from_a_metrics_table(tmp_path):
    stats, solver, nfe = guidance_study(_table(), "cond")
    paths = plot_guidance(stats, "cond", tmp_path, nfe, solver=solver)
    assert [p.name for p in paths] == ["cond_guidance.png", "cond_guidance.pdf"]
    assert all(p.stat().st_size > 1000 for p in paths)


def test_report_has_the_guidance_section_only_with_two_scales(tmp_path):
    table = _table()
    assert "guidance" in FIGURE_KINDS and "guidance" in _applicable("cond", table, [], None)
    unguided = table[table.solver == "euler"]
    assert "guidance" not in _applicable("cond", unguided, [], None)
    metrics = tmp_path / "metrics.csv"
    table.to_csv(metrics, index=False)
    report = write_report(metrics, [], tmp_path / "out", {"experiment": "g", "commit": "abc"},
                          figures_wanted=["cond_guidance"])
    text = report.read_text()
    assert (tmp_path / "out" / "figures" / "cond_guidance.png").is_file()
    assert "### Classifier-free guidance" in text and "(figures/cond_guidance.png)" in text
    assert "**precision in the cond FeatureNet** (`precision_cond`; mean ± std over seeds; higher is better" in text
    assert "**FD in the cond FeatureNet** (`fd_cond`; mean ± std over seeds; lower is better" in text


DIGITS = {"datasets": {"digits": {"source": "digits", "conditional": {"beta": 1.0},
                                  "evaluate": {"metrics": ["fd", "precision", "recall"], "guidance": [1.0, 2.0]}}},
          "methods": {"fm": {}}, "seeds": [0]}


def test_precision_and_recall_are_valid_image_metrics():
    config = validate_config(copy.deepcopy(DIGITS))
    assert config["datasets"]["digits"]["evaluate"]["metrics"] == ["fd", "precision", "recall"]


@pytest.mark.parametrize("entry, match", [
    ({"source": "moons", "evaluate": {"metrics": ["w2", "precision"]}},
     r"^config key 'datasets\.d\.evaluate\.metrics': 'precision' is for image data sets"),
    ({"source": "digits", "evaluate": {"metrics": ["energy", "recall"]}},
     r"^config key 'datasets\.d\.evaluate\.metrics': 'recall' is computed in the feature space of 'fd' or 'fid'"),
    ({"source": "digits", "evaluate": {"metrics": ["fd", "f1"]}},
     r"^config key 'datasets\.d\.evaluate\.metrics\.1': 'f1' is not allowed"),
])
def test_precision_and_recall_errors_are_one_line_naming_the_key(entry, match):
    with pytest.raises(ConfigError, match=match) as err:
        validate_config({"datasets": {"d": entry}, "methods": {"fm": {}}, "seeds": [0]})
    assert "\n" not in str(err.value)
