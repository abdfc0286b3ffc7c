"""fit_potential against exact references: the 1-D monotone map, exact discrete OT, 2-D defaults."""

import numpy as np
import ot
import pytest
import torch
from scipy.stats import norm

from sdfm.ot import SemidiscretePotential, SolverConfig, fit_potential


def _exact_1d_potential(y_sorted: np.ndarray) -> np.ndarray:
    # Cell j is [q_{j-1}, q_j] with q_j = Phi^{-1}(j / N); lines x y_j + g_j cross at q_j.
    n = len(y_sorted)
    q = norm.ppf(np.arange(1, n) / n)
    g = np.concatenate([[0.0], np.cumsum(-q * np.diff(y_sorted))])
    return g - g.mean()


def test_one_dimensional_potential_matches_gaussian_quantiles():
    y = torch.sort(torch.randn(12, generator=torch.Generator().manual_seed(0)) * 2).values[:, None]
    pot = fit_potential(y, steps=4000, batch_size=512, progress=False)
    exact = _exact_1d_potential(y[:, 0].double().numpy())
    fitted = (pot.g - pot.g.mean()).double().numpy()
    assert np.abs(fitted - exact).max() < 0.03 * np.ptp(exact)
    assert pot.chi2(torch.randn(200_000, 1)) < 0.01


def test_assignments_match_exact_ot_of_a_discretised_source():
    gen = torch.Generator().manual_seed(2)
    y = torch.randn(15, 3, generator=gen, dtype=torch.float64) * 1.5
    pot = fit_potential(y, steps=3000, batch_size=512, progress=False)
    x = torch.randn(3000, 3, generator=gen, dtype=torch.float64)
    plan = ot.emd(np.full(3000, 1 / 3000), np.full(15, 1 / 15), -(x @ y.T).numpy(), numItermax=10**7)
    exact = plan.argmax(axis=1)
    agree = (pot.assign(x).numpy() == exact).mean()
    assert agree > 0.95


def test_defaults_reach_chi2_005_on_5000_points_in_2d():
    gen = torch.Generator().manual_seed(0)
    pts = torch.rand(20000, 2, generator=gen) * 4 - 2
    board = pts[((pts[:, 0].floor() + pts[:, 1].floor()) % 2 == 0)][:5000]
    pot = fit_potential(board, progress=False)
    assert pot.chi2(torch.randn(400_000, 2, generator=gen)) <= 0.05


def test_eps_positive_potential_satisfies_the_marginal_condition():
    gen = torch.Generator().manual_seed(4)
    y = torch.randn(40, 2, generator=gen, dtype=torch.float64)
    pot = fit_potential(y, epsilon=0.2, steps=3000, batch_size=512, progress=False)
    mass, _ = pot.marginal_counts(torch.randn(400_000, 2, generator=gen, dtype=torch.float64))
    assert ((mass / 400_000 - pot.weights).abs() / pot.weights).max() < 0.1
    assert pot.chi2(torch.randn(200_000, 2, generator=gen, dtype=torch.float64)) < 0.01


def test_weighted_targets_get_their_mass():
    gen = torch.Generator().manual_seed(5)
    y = torch.randn(10, 2, generator=gen)
    weights = torch.arange(1, 11, dtype=torch.float64)
    pot = fit_potential(y, weights=weights, steps=3000, batch_size=512, progress=False)
    mass, _ = pot.marginal_counts(torch.randn(200_000, 2, generator=gen))
    torch.testing.assert_close(mass / 200_000, weights / weights.sum(), atol=0.01, rtol=0.1)


def test_save_load_round_trip_and_fingerprint(tmp_path):
    y = torch.randn(30, 2)
    pot = fit_potential(y, steps=50, progress=False)
    pot.save(tmp_path / "p.pt")
    back = SemidiscretePotential.load(tmp_path / "p.pt")
    assert torch.equal(back.g, pot.g) and back.history["chi2"] == pot.history["chi2"]
    pot.save(tmp_path / "light.pt", include_data=False)
    with pytest.raises(ValueError, match="pass y="):
        SemidiscretePotential.load(tmp_path / "light.pt")
    with pytest.raises(ValueError, match="fingerprint"):
        SemidiscretePotential.load(tmp_path / "light.pt", y=y + 1)
    x = torch.randn(100, 2)
    assert torch.equal(SemidiscretePotential.load(tmp_path / "light.pt", y=y).assign(x), pot.assign(x))


@pytest.mark.parametrize("bad", [dict(epsilon=-1.0), dict(epsilon=float("nan"))])
def test_invalid_epsilon_is_refused(bad):
    with pytest.raises(ValueError, match="epsilon"):
        fit_potential(torch.randn(5, 2), progress=False, **bad)


def test_nan_data_is_refused():
    y = torch.randn(5, 2)
    y[1, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        fit_potential(y, progress=False)


def test_killed_fit_resumes_bit_identically_from_its_checkpoint(tmp_path):
    y = torch.randn(300, 3, generator=torch.Generator().manual_seed(9))
    options = dict(steps=400, batch_size=128, eval_every=100, eval_batch=2048, progress=False)
    straight = fit_potential(y, **options)
    # "Kill" after the second evaluation: run a shorter fit that checkpoints, then resume to the end.
    fit_potential(y, checkpoint=tmp_path / "ckpt.pt", **{**options, "steps": 200})
    saved = torch.load(tmp_path / "ckpt.pt", weights_only=False)
    assert saved["step"] == 200
    resumed = fit_potential(y, checkpoint=tmp_path / "ckpt.pt", **options)
    assert torch.equal(resumed.g, straight.g)
    assert resumed.history["chi2"] == straight.history["chi2"]


@pytest.mark.parametrize("change", [{"batch_size": 64}, {"epsilon": 0.5}, {"seed": 3}, {"points": 301}])
def test_a_checkpoint_of_another_problem_is_refused(tmp_path, change):
    y = torch.randn(302, 3, generator=torch.Generator().manual_seed(9))
    options = dict(steps=100, batch_size=128, eval_every=100, eval_batch=1024, progress=False)
    fit_potential(y[:300], checkpoint=tmp_path / "ckpt.pt", **options)
    points = change.pop("points", 300)
    with pytest.raises(ValueError, match="ckpt.pt was written with other .*delete it"):
        fit_potential(y[:points], checkpoint=tmp_path / "ckpt.pt", **{**options, "steps": 200, **change})


def test_auto_defaults_follow_the_dimension():
    from sdfm.ot.solver import resolve_auto

    low, high = resolve_auto(SolverConfig(), 2), resolve_auto(SolverConfig(), 64)
    assert (low.init, low.epsilon_schedule, low.drag_hard_below) == ("multiscale", "drag", 0.0)
    assert (high.init, high.epsilon_schedule, high.drag_hard_below) == ("gaussian", "constant", 0.05)
    assert resolve_auto(SolverConfig(init="zero", epsilon_schedule="constant"), 2).init == "zero"
    y = torch.randn(300, 8, generator=torch.Generator().manual_seed(0))
    options = dict(steps=20, batch_size=64, eval_every=10, eval_batch=1024, progress=False)
    auto = fit_potential(y, **options)
    previous = fit_potential(y, init="gaussian", epsilon_schedule="constant", **options)
    assert torch.equal(auto.g, previous.g)  # above 3 dimensions the defaults are the previous ones, bit for bit
    assert fit_potential(y[:, :2], **options).history["config"]["epsilon_schedule"] == "drag"
