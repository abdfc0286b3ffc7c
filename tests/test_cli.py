"""The sdfm command line: subcommands exist, bad input exits non-zero with one line."""

import io
import re
import subprocess
import sys

import pandas as pd
import yaml

from sdfm.cli import main


def _sdfm(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "sdfm.cli", *args], capture_output=True, text=True, cwd=cwd)


def test_validate_config_accepts_the_default_config(capsys):
    assert main(["validate-config", "config.yaml"]) == 0
    assert "valid" in capsys.readouterr().out


def test_validate_config_rejects_a_typo_in_one_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"datasets": {"a": {"source": "moonz"}}}))
    result = _sdfm("validate-config", str(path))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "'datasets.a.source'" in result.stderr and "moons" in result.stderr


def test_missing_config_file_is_one_line(tmp_path):
    result = _sdfm("validate-config", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2 and "does not exist" in result.stderr


def test_prepare_data_with_a_bad_option_fails_cleanly(tmp_path):
    out = tmp_path / "d.npz"
    result = _sdfm("prepare-data", "--dataset", "m", "--source", "moons", "--options", '{"n_pts": 3}',
                   "--out", str(out), "--results-dir", str(tmp_path / "results"))
    assert result.returncode == 2 and "n_pts" in result.stderr
    assert not out.exists()


def test_bad_json_settings_are_refused(tmp_path):
    result = _sdfm("prepare-data", "--dataset", "m", "--source", "moons", "--options", "{n_train: 3",
                   "--out", str(tmp_path / "d.npz"))
    assert result.returncode == 2 and "JSON" in result.stderr


def _metrics(tmp_path):
    rows = [("moons", m, 0.0, 64, s, "euler", n, "w2", v)
            for m, base in (("fm", 1.0), ("sdfm", 0.5)) for s in (0, 1) for n, v in ((1, base + s), (4, base / 2))]
    pd.DataFrame(rows, columns=["dataset", "method", "epsilon", "batch_size", "seed", "solver", "nfe", "metric",
                                "value"]).to_csv(tmp_path / "metrics.csv", index=False)


def test_compare_prints_an_aligned_table_with_the_best_marked(tmp_path, capsys):
    _metrics(tmp_path)
    assert main(["compare", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    start = lines.index("moons — w2 (mean ± std over seeds; lower is better)")
    assert lines[start + 2:start + 7] == [
        "method                          euler 1    euler 4",
        "---------------------------------------------------",
        "FM (independent)             1.5 ± 0.71    0.5 ± 0",
        "SD-FM (semidiscrete), eps=0    1 ± 0.71*  0.25 ± 0*",
        "(* best in its column)",
    ]


def test_compare_as_markdown_csv_and_latex(tmp_path, capsys):
    _metrics(tmp_path)
    assert main(["compare", str(tmp_path), "--format", "markdown"]) == 0
    markdown = [line for line in capsys.readouterr().out.splitlines() if line.startswith("|")]
    assert markdown == [
        "| method                      |      euler 1 |      euler 4 |",
        "| --------------------------- | -----------: | -----------: |",
        "| FM (independent)            |   1.5 ± 0.71 |      0.5 ± 0 |",
        "| SD-FM (semidiscrete), eps=0 | **1 ± 0.71** | **0.25 ± 0** |",
    ]

    assert main(["compare", str(tmp_path), "--format", "csv"]) == 0
    table = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert list(table.columns) == ["dataset", "metric", "method", "column", "mean", "std", "best"]
    assert len(table) == 4 and table.best.tolist() == [0, 0, 1, 1]
    assert table.loc[0, "mean"] == 1.5 and abs(table.loc[0, "std"] - 0.5 ** 0.5) < 1e-12

    assert main(["compare", str(tmp_path), "--format", "latex", "--metric", "w2"]) == 0
    latex = capsys.readouterr().out
    assert r"\begin{tabular}{lrr}" in latex and r"\toprule" in latex and r"\bottomrule" in latex
    assert r"SD-FM (semidiscrete), eps=0 & $\mathbf{1} \pm 0.71$ & $\mathbf{0.25} \pm 0$ \\" in latex


def test_version_names_the_package_and_commit():
    result = _sdfm("--version")
    assert result.returncode == 0
    assert re.fullmatch(r"sdfm 0\.1\.0( \(git [0-9a-f]{12}(-dirty)?\))?\n", result.stdout), result.stdout
