"""The sdfm command line: subcommands exist, bad input exits non-zero with one line."""

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


def test_compare_prints_the_paper_table(tmp_path, capsys):
    rows = [("moons", m, 0.0, 64, s, "euler", n, "w2", v)
            for m, base in (("fm", 1.0), ("sdfm", 0.5)) for s in (0, 1) for n, v in ((1, base + s), (4, base / 2))]
    pd.DataFrame(rows, columns=["dataset", "method", "epsilon", "batch_size", "seed", "solver", "nfe", "metric",
                                "value"]).to_csv(tmp_path / "metrics.csv", index=False)
    assert main(["compare", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| SD-FM (semidiscrete), eps=0 | **1 ± 0.71** | **0.25 ± 0** |" in out
