"""Super-resolution as conditional generation: pooling, the augmented cost, pairing, the model, config, jobs."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from sdfm.config import validate_config
from sdfm.data import DataError
from sdfm.errors import ConfigError
from sdfm.fm.couplings import make_coupling
from sdfm.fm.superres import (ConditionedVelocity, baseline_scores, low_res, low_res_shape, sample_superres,
                           superres_problem, upsample)
from sdfm.models import build_model
from sdfm.ot import SemidiscretePotential, batch_ot_pairing, fit_potential
from sdfm.ot.problem import augment_with_condition, condition_source


# ----------------------------------------------------------------------------------- pooling

def test_low_res_is_the_block_average_and_flat():
    images = torch.randn(3, 2, 28, 28, generator=torch.Generator().manual_seed(0))
    z = low_res(images, 4)
    assert z.shape == (3, 2 * 7 * 7)
    blocks = images.reshape(3, 2, 7, 4, 7, 4).mean(dim=(3, 5))  # exact reference
    torch.testing.assert_close(z, blocks.reshape(3, -1))
    assert low_res_shape((1, 8, 8), 2) == (1, 4, 4)


def test_nearest_upsampling_inverts_pooling_of_block_constant_images():
    low = torch.rand(2, 3, 4, 4) * 2 - 1
    images = low.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    torch.testing.assert_close(upsample(low_res(images, 2), (3, 4, 4), (8, 8), "nearest"), images)
    scores = baseline_scores(images, 2)
    assert scores["nearest"]["psnr"] == float("inf") and scores["nearest"]["ssim"] == pytest.approx(1.0)


def test_bicubic_upsampling_is_clamped_to_the_data_range():
    # bicubic interpolation overshoots next to sharp edges; the baseline images stay in [-1, 1]
    low = torch.tensor([[1.0, -1.0, 1.0, -1.0]]).repeat(4, 1).reshape(1, 1, 4, 4)
    raw = torch.nn.functional.interpolate(low, size=(8, 8), mode="bicubic", align_corners=False)
    assert float(raw.abs().max()) > 1.05  # the overshoot the clamp removes
    up = upsample(low.flatten(1), (1, 4, 4), (8, 8), "bicubic")
    torch.testing.assert_close(up, raw.clamp(-1, 1))


@pytest.mark.parametrize("factor", [1, 3])
def test_a_factor_that_does_not_divide_the_side_is_refused(factor):
    with pytest.raises(DataError, match="factor"):
        low_res(torch.zeros(1, 1, 8, 8), factor)


# ------------------------------------------------------------------------------ augmented cost

def test_augmented_inner_product_is_half_the_augmented_cost_up_to_query_and_key_terms():
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(5, 6, generator=gen, dtype=torch.float64), torch.randn(7, 6, generator=gen, dtype=torch.float64)
    z, zp = torch.randn(5, 3, generator=gen, dtype=torch.float64), torch.randn(7, 3, generator=gen, dtype=torch.float64)
    beta = 2.5
    q, k = augment_with_condition(x, z, beta), augment_with_condition(y, zp, beta)
    cost = 0.5 * (torch.cdist(x, y).square() + beta * torch.cdist(z, zp).square())
    expected = cost - 0.5 * q.square().sum(1, keepdim=True) - 0.5 * k.square().sum(1)[None, :]
    torch.testing.assert_close(-(q @ k.T), expected)


def test_batch_ot_coupling_is_optimal_for_the_augmented_cost():
    """The OT-FM batch pairs minimise sum |x - y|^2 + beta |z - z'(y)|^2 over permutations (scipy)."""
    gen = torch.Generator().manual_seed(0)
    data = torch.randn(40, 8, generator=gen, dtype=torch.float64)
    conditions = torch.randn(40, 2, generator=gen, dtype=torch.float64)
    beta = 3.0
    coupling = make_coupling("otfm", data, beta=beta, conditions=conditions)
    batch = coupling.sample(16, torch.Generator().manual_seed(5))
    y, zp = batch.x1, conditions[batch.index]
    cost = torch.cdist(batch.x0, y).square() + beta * torch.cdist(batch.condition, zp).square()
    rows, cols = linear_sum_assignment(cost.numpy())
    assert float(cost.diagonal().sum()) == pytest.approx(float(cost[rows, cols].sum()), rel=1e-10)
    assert not torch.equal(batch.condition, zp)  # the query's z, not the paired point's own


def test_large_beta_batch_ot_matches_the_low_res():
    """With equal multisets of conditions in the batch, a large beta pairs every z with a point of z' = z."""
    gen = torch.Generator().manual_seed(2)
    zp = torch.randn(12, 4, generator=gen)
    y, x = torch.randn(12, 16, generator=gen), torch.randn(12, 16, generator=gen)
    z = zp[torch.randperm(12, generator=gen)]
    pairing = batch_ot_pairing(augment_with_condition(x, z, 1e4), augment_with_condition(y, zp, 1e4))
    torch.testing.assert_close(zp[pairing], z)


def test_large_beta_sdfm_pairs_a_query_with_a_point_of_its_low_res():
    """SD-FM fitted from the source [x, sqrt(beta) z], z a training condition: the MIPS returns z' = z."""
    gen = torch.Generator().manual_seed(3)
    signs = torch.tensor([[1, 1, 1, 1], [1, -1, 1, -1], [-1, -1, 1, 1],
                          [1, 1, -1, -1], [-1, 1, -1, 1], [-1, -1, -1, -1.0]])
    low = 0.8 * signs.reshape(6, 1, 2, 2)  # distinct low-res images, |z - z'|^2 >= 2.56
    images = low.repeat_interleave(2, 2).repeat_interleave(2, 3) + 0.1 * torch.randn(6, 1, 4, 4, generator=gen)
    data = type("D", (), {})()  # the fields superres_problem reads, on a tiny set
    data.kind, data.sample_shape, data.train, data.dim = "images", (1, 4, 4), images, 16
    data.flat_train = lambda: images.reshape(6, 16)
    problem = superres_problem(data, "tiny", {"factor": 2, "beta": 50.0})
    keys, source = problem.keys, problem.source
    assert problem.defining_fields() == {"epsilon_rel": None, "superres": {"factor": 2, "beta": 50.0}}
    z_train = low_res(images, 2)
    torch.testing.assert_close(keys[:, 16:], 50.0**0.5 * z_train)
    potential = fit_potential(keys, epsilon=0.0, steps=1500, batch_size=256, eval_every=500, eval_batch=8192,
                              source=source, seed=0)
    coupling = make_coupling("sdfm", images.reshape(6, 16), potential=potential, beta=50.0, conditions=z_train)
    batch = coupling.sample(2000, torch.Generator().manual_seed(4))
    torch.testing.assert_close(z_train[batch.index], batch.condition)
    counts = torch.bincount(batch.index, minlength=6).float() / 2000
    assert float((counts - 1 / 6).abs().max()) < 0.05  # and the marginal on the points is uniform


@pytest.mark.parametrize("method", ["otfm", "sdfm"])
def test_small_beta_pairs_carry_the_querys_condition_not_the_matched_points(method):
    """At a small beta the pairs often cross conditions: the batch carries the query's z (the model's input)."""
    gen = torch.Generator().manual_seed(6)
    data = torch.randn(50, 6, generator=gen, dtype=torch.float64)
    conditions = torch.randn(50, 2, generator=gen, dtype=torch.float64)
    beta = 0.2
    keys = augment_with_condition(data, conditions, beta)
    g = 0.3 * torch.randn(50, generator=gen, dtype=torch.float64)
    potential = SemidiscretePotential(keys, g) if method == "sdfm" else None
    coupling = make_coupling(method, data, potential=potential, beta=beta, conditions=conditions)
    batch = coupling.sample(40, torch.Generator().manual_seed(7))
    replay = torch.Generator().manual_seed(7)  # the draws of sample(): noise, [data indices,] query conditions
    x0 = torch.randn(40, 6, generator=replay, dtype=torch.float64)
    if method == "otfm":
        torch.randint(50, (40,), generator=replay)
    z = conditions[torch.randint(50, (40,), generator=replay)]
    assert torch.equal(batch.x0, x0)
    assert torch.equal(batch.condition, z), "the pairs must carry the query's condition"
    if method == "sdfm":
        assert torch.equal(batch.index, (augment_with_condition(x0, z, beta) @ keys.T + g).argmax(dim=1))
    assert float((conditions[batch.index] != z).any(dim=1).float().mean()) > 0.5  # the case that tells them apart


def test_condition_source_draws_training_conditions():
    conditions = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    draws = condition_source(conditions, 4.0, dim=3)(500, torch.Generator().manual_seed(0))
    assert draws.shape == (500, 5)
    tails = {tuple(row) for row in (draws[:, 3:] / 2).tolist()}
    assert tails == {(1.0, 2.0), (3.0, 4.0)}


def test_fm_pairs_carry_their_own_condition_and_labels_exclude_conditions():
    data, conditions = torch.randn(10, 4), torch.randn(10, 2)
    batch = make_coupling("fm", data, conditions=conditions).sample(8, torch.Generator().manual_seed(0))
    torch.testing.assert_close(batch.condition, conditions[batch.index])
    with pytest.raises(ValueError, match="not both"):
        make_coupling("fm", data, labels=torch.zeros(10, dtype=torch.long), conditions=conditions)


# ------------------------------------------------------------------------------------- model

def test_unet_takes_the_low_res_image_as_channels():
    model = build_model("unet", (1, 8, 8), base_channels=8, channel_mults=(1, 2), cond_channels=1, cond_size=(4, 4))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(0)))
    x, cond = torch.randn(3, 1, 8, 8), torch.randn(3, 16)
    with torch.no_grad():
        out = model(x, torch.rand(3), cond=cond)
        other = model(x, torch.rand(3) * 0 + 0.5, cond=cond + 1)
    assert out.shape == x.shape and not torch.allclose(out, other)
    with pytest.raises(ValueError, match="needs cond"):
        model(x, 0.5)
    samples, nfe = sample_superres(model, cond, (1, 8, 8), solver="euler", nfe=2)
    assert samples.shape == (3, 1, 8, 8) and nfe == 2
    assert ConditionedVelocity(model, cond)(x, 0.5).shape == x.shape


class _ConditionShift(torch.nn.Module):
    """v(x, t, cond) = the mean of each row's condition, everywhere: the Euler step adds it to the noise."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, x, t, cond=None, **kwargs):
        return self.scale * cond.mean(dim=1).reshape(-1, 1, 1, 1).expand_as(x)


def test_sample_superres_pairs_sample_i_with_condition_i_across_batches():
    cond = torch.arange(7, dtype=torch.float32)[:, None].repeat(1, 4)  # condition i has mean i
    samples, _ = sample_superres(_ConditionShift(), cond, (1, 2, 2), solver="euler", nfe=1, seed=5, batch_size=3)
    noise = torch.randn(1024, 1, 2, 2, generator=torch.Generator().manual_seed(5))[:7]
    torch.testing.assert_close(samples - noise, torch.arange(7.0).reshape(7, 1, 1, 1).expand(7, 1, 2, 2))


# ------------------------------------------------------------------------------------ config

BASE = {"datasets": {"d": {"source": "digits", "superres": {"factor": 2, "beta": 4.0},
                           "model": {"kind": "unet"}, "evaluate": {"metrics": ["psnr", "ssim"]}}}}


def _with(**entry):
    config = copy.deepcopy(BASE)
    config["datasets"]["d"].update(entry)
    return config


def test_a_superres_config_validates():
    assert validate_config(BASE)["datasets"]["d"]["superres"] == {"factor": 2, "beta": 4.0}


@pytest.mark.parametrize("config, key", [
    (_with(superres={"factor": 3, "beta": 1.0}), "datasets.d.superres.factor"),
    (_with(superres={"factor": 1, "beta": 1.0}), "datasets.d.superres.factor"),
    (_with(superres={"factor": 2}), "datasets.d.superres"),
    (_with(conditional={"beta": 1.0}), "datasets.d.superres"),
    ({"datasets": {"m": {"source": "moons", "superres": {"factor": 2, "beta": 1.0}}}}, "datasets.m.superres"),
    ({"datasets": {"d": {"source": "digits", "evaluate": {"metrics": ["psnr"]}}}}, "datasets.d.evaluate.metrics"),
])
def test_bad_superres_configs_fail_with_one_line_naming_the_key(config, key):
    with pytest.raises(ConfigError) as err:
        validate_config(config)
    message = str(err.value)
    assert "\n" not in message and f"'{key}" in message


# -------------------------------------------------------------------------------- jobs + report

def test_report_draws_the_superres_figure_and_table(tmp_path):
    """From what evaluate jobs leave (superres/, metrics.csv, model.json): the figure, PSNR/SSIM table, baselines."""
    import pandas as pd

    from sdfm.fm.superres import save_panel, save_reference
    from sdfm.report.document import write_report

    truth = torch.rand(10, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    rows, summaries = [], []
    for method, psnr, ssim in (("fm", 18.0, 0.40), ("otfm", 19.0, 0.42), ("sdfm", 21.0, 0.44)):
        run = tmp_path / "runs" / method
        save_reference(run / "superres", truth, 2)
        for nfe in (1, 4, 16):
            save_panel(run / "superres", f"euler_nfe{nfe}", truth + 0.1 * nfe)
            rows += [["d", method, 0.0, 16, 0, "euler", nfe, "psnr", psnr + nfe],
                     ["d", method, 0.0, 16, 0, "euler", nfe, "ssim", ssim]]
        summary = {"dataset": "d", "method": method, "epsilon_rel": 0.0, "seed": 0, "pairing_share": 0.1,
                   "pairing_seconds": 1.0, "step_seconds": 9.0}
        (run / "model.json").write_text(json.dumps(summary))
        summaries.append(run / "model.json")
    pd.DataFrame(rows, columns=["dataset", "method", "epsilon", "batch_size", "seed", "solver", "nfe", "metric",
                                "value"]).to_csv(tmp_path / "metrics.csv", index=False)
    report = write_report(tmp_path / "metrics.csv", [], tmp_path / "reports", {"commit": "x"},
                          train_summaries=summaries, figures_wanted=["d_superres"])
    assert (tmp_path / "reports" / "figures" / "d_superres.png").stat().st_size > 5000
    text = report.read_text()
    assert "at Euler NFE 4" in text and "| SD-FM (semidiscrete), eps=0 | **25** | **0.44** |" in text
    assert "| FM (independent) | 22 | 0.4 |" in text  # higher is better: the best (bold) is the largest
    baselines = baseline_scores(truth, 2)
    assert f"| bicubic upsampling | {baselines['bicubic']['psnr']:.4g} |" in text
    assert "(`psnr`; mean ± std over seeds; higher is better, best in bold)" in text


@pytest.mark.slow
def test_superres_jobs_and_report_figure(tmp_path):
    """fit-potential, train and evaluate a tiny SD-FM super-resolution run; the report draws its figure."""
    from sdfm.jobs.evaluate import evaluate_run
    from sdfm.jobs.potential import fit_potential_job
    from sdfm.jobs.prepare import prepare_data_job
    from sdfm.jobs.train import train_job
    from sdfm.report.document import write_report
    from sdfm.runtime import JobContext

    ctx = JobContext(experiment="sr", results_dir=str(tmp_path / "results"), progress=False)
    data, superres = tmp_path / "digits.npz", {"factor": 2, "beta": 4.0}
    prepare_data_job("digits", "digits", {}, data, ctx)
    fit_potential_job(data, "digits", 0.0, {"steps": 20, "batch_size": 128, "eval_every": 10, "eval_batch": 1024},
                      tmp_path / "pot.pt", tmp_path / "pot.json", ctx, superres=superres)
    run = tmp_path / "runs" / "digits" / "sdfm" / "eps0" / "seed0"
    train_job(data, "digits", "sdfm", 0.0, 0, {"kind": "unet", "base_channels": 8, "channel_mults": [1, 2]},
              {"steps": 3, "batch_size": 16}, run / "model.pt", run / "ck.pt", ctx, potential_path=tmp_path / "pot.pt",
              superres=superres)
    table = evaluate_run(data, run / "model.pt", "digits", "sdfm", 0.0, 0, 16,
                         {"solvers": ["euler"], "nfe": [1, 2], "n_samples": 20, "metrics": ["psnr", "ssim"]},
                         run / "metrics.csv", ctx)
    assert sorted(table.metric.unique()) == ["psnr", "ssim"] and len(table) == 4
    assert np.isfinite(table.value).all()
    baselines = json.loads((run / "superres" / "baselines.json").read_text())
    assert baselines["n_images"] == 20 and baselines["bicubic"]["psnr"] > 10
    assert (run / "superres" / "euler_nfe2.npy").is_file()
    report = write_report(run / "metrics.csv", [tmp_path / "pot.json"], tmp_path / "reports", {"commit": "x"},
                          train_summaries=[run / "model.json"], figures_wanted=["digits_superres"])
    assert (tmp_path / "reports" / "figures" / "digits_superres.png").stat().st_size > 5000
    text = report.read_text()
    assert "| bicubic upsampling |" in text and "SD-FM (semidiscrete), eps=0" in text
    assert "higher is better" in text
