"""The report rule on the tiny DAG: every figure declared and drawn, report.md, `snakemake --report`."""

import re

from PIL import Image

from conftest import snakemake

FIGURES = ["moons_metrics_vs_nfe", "moons_metrics_vs_epsilon", "moons_chi2", "moons_cost", "moons_trajectories"]
CAPTIONS = ["metrics_vs_nfe", "metrics_vs_epsilon", "chi2", "cost", "trajectories"]


def test_report_rule_draws_every_figure_as_png_and_pdf(tiny_run):
    figures = tiny_run / "reports" / "figures"
    assert sorted(p.name for p in figures.iterdir()) == sorted(f"{f}{s}" for f in FIGURES for s in (".png", ".pdf"))
    for name in FIGURES:
        with Image.open(figures / f"{name}.png") as image:
            assert image.width >= 800, name  # 200 dpi: readable when printed
        assert (figures / f"{name}.pdf").read_bytes().startswith(b"%PDF")


def test_report_md_links_the_figures_and_records_config_and_commit(tiny_run):
    text = (tiny_run / "reports" / "report.md").read_text()
    for name in FIGURES:
        assert f"](figures/{name}.png)" in text
    assert re.search(r"Produced by commit `[0-9a-f]{40}` of `.+` \((clean|dirty: .+)\)|Commit unknown \(", text)
    assert "## Configuration" in text and "experiment_name: tiny" in text and "n_train: 400" in text
    assert "| SD-FM (semidiscrete), eps=0.1 | " in text  # paper table and cost table rows
    assert "pairing share of a step" in text and "Shared by every method: data preparation" in text


def test_snakemake_report_html_holds_the_figures_and_captions(tiny_run):
    html = tiny_run / "reports" / "report.html"
    result = snakemake(tiny_run, "--report", str(html))
    assert result.returncode == 0, result.stderr[-3000:]
    text = html.read_text(errors="replace")
    assert len(text) > 100_000
    for phrase in ("The epsilon study", "Generated trajectories of the 2-D models", "Compute cost of each method",
                   "Convergence of the semidiscrete dual potential", "Sample quality against the number"):
        assert phrase in text, phrase
    for name in FIGURES:
        assert f"{name}.png" in text, name
