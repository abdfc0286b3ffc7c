"""The fitted potential against exact references: separable product grids, and POT's solver.

Product grid. The target ``y_(i,k) = (a_i, c_k)`` with weights ``w_i v_k`` is the product of two
1-D measures, the source N(0, I_2) is the product of two N(0, 1) and the cost
``-<x, y> = -x_1 a_i - x_2 c_k`` is separable, so the optimal coupling is the product of the two
1-D couplings: ``g_(i,k) = g1_i + g2_k``, and cell (i, k) is the rectangle
``[q_(i-1), q_i] x [r_(k-1), r_k]`` between the Gaussian quantiles of the cumulative weights of
each axis (the 1-D map is monotone; see ``tests/ot/test_solver.py``).

Tolerances from the chi^2 reached. Masses: ``(m_j - b_j)^2 / b_j <= chi^2`` term by term, so
``|m_j - b_j| <= sqrt(chi^2 b_j)``. Potential: to first order ``m(g) - b = L (g - g*)``, with L
the Laplacian of the cell adjacency graph of the exact solution, whose edge weight is the source
mass density on the shared face over the distance of the two points,
``phi(q_i) v_k / (a_(i+1) - a_i)`` for the face ``x_1 = q_i`` of row k (and likewise along x_2).
Hence, up to the constant (the kernel of L),
``|g - g*|_2 <= |m - b|_2 / lambda_2(L) <= sqrt(chi^2 max_j b_j) / lambda_2(L)``; the test
allows twice that for the higher-order terms and the Monte Carlo error of the chi^2 estimate.
"""

import numpy as np
import pytest
import torch
from scipy.stats import norm

from sdfm.ot import SemidiscretePotential, SolverConfig, fit_potential
from sdfm.ot.solver import epsilon_at

N_EVAL = 400_000


def exact_1d(points: np.ndarray, weights: np.ndarray):
    """Exact 1-D potential (mean not fixed) and the sorted cell boundaries ``q = Phi^-1(cumsum w)``.

    Cell of the j-th smallest point: ``[q_(j-1), q_j]``; neighbouring lines ``x p_j + g_j`` cross at
    q_j, so ``g_(j+1) - g_j = -q_j (p_(j+1) - p_j)`` in sorted order.
    """
    order = np.argsort(points)
    q = norm.ppf(np.cumsum(weights[order])[:-1])
    g_sorted = np.concatenate([[0.0], np.cumsum(-q * np.diff(points[order]))])
    g = np.empty_like(g_sorted)
    g[order] = g_sorted
    return g, q


def product_grid(a, wa, c, wc):
    """Points, weights, exact potential and first-order Laplacian of the product problem (row-major (i, k))."""
    wa, wc = wa / wa.sum(), wc / wc.sum()
    ga, qa = exact_1d(a, wa)
    gc, qc = exact_1d(c, wc)
    y = np.stack(np.meshgrid(a, c, indexing="ij"), axis=-1).reshape(-1, 2)
    g = (ga[:, None] + gc[None, :]).reshape(-1)
    b = (wa[:, None] * wc[None, :]).reshape(-1)
    n1, n2 = len(a), len(c)
    lap = np.zeros((n1 * n2, n1 * n2))

    def edge(j, k, weight):
        lap[[j, k], [j, k]] += weight
        lap[j, k] -= weight
        lap[k, j] -= weight

    sa, sc = np.argsort(a), np.argsort(c)
    for r in range(n1 - 1):  # face x_1 = qa[r] between the r-th and (r+1)-th smallest a, in every row k
        i, i2 = sa[r], sa[r + 1]
        for k in range(n2):
            edge(i * n2 + k, i2 * n2 + k, norm.pdf(qa[r]) * wc[k] / (a[i2] - a[i]))
    for r in range(n2 - 1):
        k, k2 = sc[r], sc[r + 1]
        for i in range(n1):
            edge(i * n2 + k, i * n2 + k2, norm.pdf(qc[r]) * wa[i] / (c[k2] - c[k]))
    return torch.tensor(y), torch.tensor(g), torch.tensor(b), lap


GRIDS = {
    "uniform 5x4": (np.array([-1.5, -0.4, 0.3, 1.2, 2.0]), np.ones(5), np.array([-1.0, 0.0, 0.8, 1.6]), np.ones(4)),
    "weighted 5x4": (np.array([2.0, -0.4, 1.2, -1.5, 0.3]), np.array([1.0, 2, 3, 2, 1]),
                     np.array([0.8, -1.0, 1.6, 0.0]), np.array([1.0, 1, 2, 2])),
}


def _eval_samples(seed=1):
    return torch.randn(N_EVAL, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _check_against_exact(g: torch.Tensor, y, g_exact, b, lap, x) -> float:
    """Assert the mass and potential bounds of the module docstring for the potential g; return chi^2."""
    pot = SemidiscretePotential(y, g, weights=b)
    mass, _ = pot.marginal_counts(x)
    m = (mass / x.shape[0]).numpy()
    chi2 = pot.chi2(x)
    # Monte Carlo slack: the estimate's std is about sqrt(2 N) / n at the optimum, m_j's is sqrt(b_j / n).
    chi2_bound = max(chi2, 0.0) + 4 * np.sqrt(2 * len(b)) / x.shape[0]
    bn = b.numpy()
    assert np.all(np.abs(m - bn) <= np.sqrt(chi2_bound * bn) + 4 * np.sqrt(bn / x.shape[0]))
    lam2 = np.linalg.eigvalsh(lap)[1]
    diff = (g - g.mean()).numpy() - (g_exact - g_exact.mean()).numpy()
    assert np.linalg.norm(diff) <= 2 * np.sqrt(chi2_bound * bn.max()) / lam2
    return chi2


@pytest.mark.parametrize("grid", GRIDS)
def test_product_grid_potential_and_masses_match_the_exact_solution(grid):
    y, g_exact, b, lap = product_grid(*GRIDS[grid])
    x = _eval_samples()
    # The reference itself: its cells carry the target masses up to Monte Carlo noise.
    assert abs(_check_against_exact(g_exact, y, g_exact, b, lap, x)) < 2e-4
    pot = fit_potential(y, weights=b, steps=3000, batch_size=512, progress=False)
    chi2 = _check_against_exact(pot.g.double(), y, g_exact, b, lap, x)
    assert chi2 < 2e-3
    # The bound above is loose (about 10x on these grids); the fit is also close in absolute terms.
    diff = (pot.g - pot.g.mean()) - (g_exact - g_exact.mean())
    assert diff.abs().max() < 0.02 * float(g_exact.max() - g_exact.min())


def test_drag_schedule_reaches_the_exact_solution_with_hard_assignments_at_the_end():
    y, g_exact, b, lap = product_grid(*GRIDS["weighted 5x4"])
    x = _eval_samples()
    seen = {}
    options = dict(weights=b, steps=3000, batch_size=512, eval_every=100, progress=False)
    drag = fit_potential(y, epsilon_schedule="drag", drag_eps0=1.0, drag_hard_below=0.05, **options,
                         callback=lambda step, info: seen.update({step: info["epsilon_step"]}))
    # soft steps first (eps_t = delta / sqrt(t) until t = (1 / 0.05)^2 = 400), hard ones at the end
    assert seen[100] > 0 and seen[500] == seen[3000] == 0.0
    assert drag.history["epsilon_last_step"] == 0.0 and drag.epsilon == 0.0
    chi2_drag = _check_against_exact(drag.g.double(), y, g_exact, b, lap, x)
    chi2_constant = fit_potential(y, epsilon_schedule="constant", **options).chi2(x)
    assert chi2_drag < 2e-3 and chi2_drag < chi2_constant + 1e-3  # comparable to the constant schedule


def test_drag_schedule_formula():
    delta = 0.2
    drag = SolverConfig(epsilon_schedule="drag", drag_eps0=2.0, drag_exponent=0.5, drag_hard_below=0.1)
    assert epsilon_at(SolverConfig(), 7, 0.3, delta) == 0.3  # constant: the target at every step
    assert epsilon_at(drag, 1, 0.0, delta) == pytest.approx(0.4)
    assert epsilon_at(drag, 100, 0.0, delta) == pytest.approx(0.04)  # eps_0 / sqrt(t)
    assert epsilon_at(drag, 400, 0.0, delta) == pytest.approx(0.02)  # = 0.1 delta: still soft
    assert epsilon_at(drag, 401, 0.0, delta) == 0.0  # below 0.1 delta: hard from t = (2 / 0.1)^2 + 1
    assert epsilon_at(drag, 100, 0.1, delta) == 0.1  # never below a positive target
    assert epsilon_at(drag, 4, 0.1, delta) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="epsilon_schedule"):
        SolverConfig(epsilon_schedule="linear")


def test_a_killed_drag_fit_resumes_bit_identically(tmp_path):
    # the schedule depends on the step alone: the resumed run rebuilds the keys at the right eps_t
    y = torch.randn(300, 3, generator=torch.Generator().manual_seed(9))
    options = dict(steps=400, batch_size=128, eval_every=100, eval_batch=2048, progress=False,
                   epsilon_schedule="drag", drag_eps0=1.0, drag_hard_below=0.06)  # hard from step 278
    straight = fit_potential(y, **options)
    fit_potential(y, checkpoint=tmp_path / "ckpt.pt", **{**options, "steps": 200})
    resumed = fit_potential(y, checkpoint=tmp_path / "ckpt.pt", **options)
    assert torch.equal(resumed.g, straight.g) and resumed.history["chi2"] == straight.history["chi2"]


def test_config_schema_accepts_the_drag_keys_and_passes_them_to_the_solver():
    from dataclasses import fields

    from sdfm.config import dataset_settings, validate_config
    from sdfm.errors import ConfigError

    drag = {"epsilon_schedule": "drag", "drag_eps0": 2.0, "drag_exponent": 0.5, "drag_hard_below": 0.1}
    config = validate_config({"datasets": {"moons": {"source": "moons"}}, "potential": drag})
    settings = dataset_settings(config, "moons")["potential"]
    assert SolverConfig(**{k: settings[k] for k in drag}).epsilon_schedule == "drag"
    with pytest.raises(ConfigError, match="epsilon_schedule"):
        validate_config({"datasets": {"moons": {"source": "moons"}}, "potential": {"epsilon_schedule": "sqrt"}})
    import yaml

    from sdfm.config import DEFAULT_SCHEMA

    keys = set(yaml.safe_load(DEFAULT_SCHEMA.read_text())["definitions"]["potential"]["properties"])
    assert keys - {"reference_batch", "processes", "pca_dim"} <= {f.name for f in fields(SolverConfig)}


POT_METRICS = {"dot": lambda u, v: -(u @ v.T), "sqeuclidean": None}


def pot_to_ours(g_pot: torch.Tensor, y: torch.Tensor, metric: str) -> torch.Tensor:
    """POT's potential g' (score ``g'_j - C(x, y_j)``) in our form ``<x, y_j> + g_j``.

    ``C = -<x, y>``: ``g = g'``. POT's ``sqeuclidean`` is ``|x - y|^2`` (no 1/2), so
    ``g'_j - |x|^2 - |y_j|^2 + 2 <x, y_j>`` is twice ``<x, y_j> + (g'_j - |y_j|^2) / 2`` up to a
    term in x alone: ``g = (g' - |y|^2) / 2`` (for the cost ``|x - y|^2 / 2`` it would be
    ``g' - |y|^2 / 2``).
    """
    return g_pot if metric == "dot" else (g_pot - y.square().sum(dim=1)) / 2


@pytest.mark.parametrize("metric, steps", [("dot", 6000), ("sqeuclidean", 4000)])
def test_pot_semidiscrete_solver_agrees_with_ours(metric, steps):
    semidiscrete = pytest.importorskip("ot.semidiscrete", reason="this POT has no ot.semidiscrete (needs POT >= 0.9.6)")
    y, g_exact, b, lap = product_grid(*GRIDS["weighted 5x4"])
    gen = torch.Generator().manual_seed(5)
    g_pot = semidiscrete.solve_semidiscrete(y, lambda n: torch.randn(n, 2, generator=gen, dtype=torch.float64),
                                            a_target=b, metric=POT_METRICS[metric], max_iter=steps, batch_size=128)
    theirs = SemidiscretePotential(y, pot_to_ours(g_pot, y, metric), weights=b)
    ours = fit_potential(y, weights=b, steps=3000, batch_size=512, progress=False)
    x = _eval_samples()
    queries = x[:20_000]
    # The conversion: POT's own hard assignment is the argmax of ours with the converted potential.
    own = semidiscrete.semidiscrete_atom_weights(y, queries, g_pot, a_target=b, metric=POT_METRICS[metric]).argmax(1)
    assert (own == theirs.assign(queries)).double().mean() > 0.999
    assert (theirs.assign(queries) == ours.assign(queries)).double().mean() >= 0.95
    chi2_theirs, chi2_ours = theirs.chi2(x), ours.chi2(x)
    assert chi2_theirs < 5e-3 and abs(chi2_theirs - chi2_ours) < 5e-3
    _check_against_exact(theirs.g, y, g_exact, b, lap, x)  # POT meets the same bounds
