"""The blocked log-domain Sinkhorn (:mod:`sdfm.ot.sinkhorn_blocks`): against POT's ``sinkhorn_log``,
invariant to the block size, sharded over 2 gloo ranks equal to one process, and its Gumbel-max
draws following the plan.

Tolerances: both solvers run to a column-marginal L1 error of 1e-12, where the (unique) entropic
plan is pinned down to about 1e-12 of its largest entry; we ask for 1e-9 of it (measured at most
9e-12). The sharded solve differs from one process only in the summation order of the row
logsumexp (a logsumexp of the two shards' logsumexps); we ask for 1e-12 of the potentials' range.

The draw tests compare per-row counts with the plan's row conditionals by Pearson's chi^2 (fixed
seeds; p > 1e-3 asked for); :func:`test_the_frequency_check_rejects_wrong_samplers` shows the
check fails for a uniform column draw and for a draw that ignores the potential g.
"""

import numpy as np
import ot
import pytest
import torch
from gloo_spawn import run_ranks
from scipy.stats import chi2 as chi2_distribution

from sdfm.ot.batch import batch_ot_pairing, inner_product_cost, reference_cost_std, relative_epsilon
from sdfm.ot.distributed import ShardedReducer
from sdfm.ot.sinkhorn_blocks import (BLOCKED_SINKHORN_MIN_N, blocked_sinkhorn, plan_log_entries, relative_ot_pairing,
                                     sample_plan_columns, sharded_ot_pairing, streamed_cost_std,
                                     streamed_relative_epsilon)

pytestmark = pytest.mark.timeout(180)

TIGHT = dict(tol=1e-12, max_iter=100_000)
PROBLEMS = {"30x45_d3": (30, 45, 3, 0), "60x50_d5": (60, 50, 5, 1)}
EPSILONS = (0.2, 1.0)


def _problem(n: int, m: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    y = torch.randn(m, d, generator=gen, dtype=torch.float64) * 0.8 + 0.3
    return x, y


def _pot_plan(x: torch.Tensor, y: torch.Tensor, epsilon: float) -> np.ndarray:
    n, m = x.shape[0], y.shape[0]
    cost = inner_product_cost(x, y).numpy()
    return ot.sinkhorn(np.full(n, 1 / n), np.full(m, 1 / m), cost, epsilon, method="sinkhorn_log",
                       stopThr=1e-13, numItermax=100_000)


@pytest.mark.parametrize("epsilon", EPSILONS)
@pytest.mark.parametrize("name", list(PROBLEMS))
def test_the_blocked_plan_is_pots_log_domain_plan(name, epsilon):
    x, y = _problem(*PROBLEMS[name])
    solution = blocked_sinkhorn(x, y, epsilon, block_elems=64, **TIGHT)  # 1-2 rows per block
    assert solution.converged and solution.marginal_error < 1e-12
    plan = plan_log_entries(x, y, solution).exp().numpy()
    reference = _pot_plan(x, y, epsilon)
    assert np.abs(plan - reference).max() <= 1e-9 * reference.max()
    np.testing.assert_allclose(plan.sum(axis=1), 1 / x.shape[0], rtol=1e-12)  # rows exact
    np.testing.assert_allclose(plan.sum(axis=0), 1 / y.shape[0], rtol=1e-9)


def test_the_block_size_does_not_change_the_solve():
    x, y = _problem(*PROBLEMS["60x50_d5"])
    whole = blocked_sinkhorn(x, y, 0.2, block_elems=1 << 20, **TIGHT)  # one block
    for block_elems in (1, 50, 333):
        blocked = blocked_sinkhorn(x, y, 0.2, block_elems=block_elems, **TIGHT)
        assert blocked.iterations == whole.iterations
        torch.testing.assert_close(blocked.f, whole.f, rtol=0, atol=1e-13)
        torch.testing.assert_close(blocked.g, whole.g, rtol=0, atol=1e-13)


def test_max_iter_stops_unconverged_and_reports_the_returned_state():
    x, y = _problem(*PROBLEMS["30x45_d3"])
    solution = blocked_sinkhorn(x, y, 0.2, tol=1e-12, max_iter=3)
    assert solution.iterations == 3 and not solution.converged
    plan = plan_log_entries(x, y, solution).exp()
    assert float((plan.sum(dim=0) - 1 / 45).abs().sum()) == pytest.approx(solution.marginal_error, rel=1e-10)
    with pytest.raises(ValueError, match="epsilon > 0"):
        blocked_sinkhorn(x, y, 0.0)


# --- draws from the plan ---

DRAW_ROWS = torch.tensor([0, 3, 7, 11])
DRAW_REPEATS = 5000
DRAW_EPS = 0.5


def _draw_problem():
    x, y = _problem(12, 9, 3, 5)
    return x, y, blocked_sinkhorn(x, y, DRAW_EPS, **TIGHT)


def _conditionals(x, y, solution) -> torch.Tensor:
    """(rows, m) the plan's row conditionals P(j | i) of DRAW_ROWS."""
    plan = plan_log_entries(x, y, solution).exp()[DRAW_ROWS]
    return plan / plan.sum(dim=1, keepdim=True)


def _frequency_p_value(draws: torch.Tensor, probs: torch.Tensor) -> float:
    """Pearson's chi^2 p-value of the per-row counts (DRAW_REPEATS draws per row) against ``probs``."""
    counts = torch.stack([torch.bincount(d, minlength=probs.shape[1]) for d in draws.view(len(probs), -1)])
    expected = DRAW_REPEATS * probs
    pearson = float(((counts - expected) ** 2 / expected).sum())
    return float(chi2_distribution.sf(pearson, df=probs.numel() - probs.shape[0]))


@pytest.mark.parametrize("block_elems", [1 << 20, 4])  # one block; one row at a time in column blocks of 4
def test_gumbel_max_draws_follow_the_plan(block_elems):
    x, y, solution = _draw_problem()
    rows = DRAW_ROWS.repeat_interleave(DRAW_REPEATS)
    draws = sample_plan_columns(x[rows], y, solution.g, DRAW_EPS, generator=torch.Generator().manual_seed(3),
                                block_elems=block_elems)
    assert _frequency_p_value(draws, _conditionals(x, y, solution)) > 1e-3
    again = sample_plan_columns(x[rows], y, solution.g, DRAW_EPS, generator=torch.Generator().manual_seed(3),
                                block_elems=block_elems)
    assert torch.equal(draws, again)  # reproducible from the generator


def test_the_frequency_check_rejects_wrong_samplers():
    """The check has power: uniform columns, or the softmax of <x, y> / eps without g, fail it."""
    x, y, solution = _draw_problem()
    gen = torch.Generator().manual_seed(3)
    uniform = torch.randint(y.shape[0], (len(DRAW_ROWS) * DRAW_REPEATS,), generator=gen)
    without_g = torch.multinomial(torch.softmax(x[DRAW_ROWS] @ y.T / DRAW_EPS, dim=1), DRAW_REPEATS,
                                  replacement=True, generator=gen).flatten()
    probs = _conditionals(x, y, solution)
    assert _frequency_p_value(uniform, probs) < 1e-6
    assert _frequency_p_value(without_g, probs) < 1e-6


# --- two gloo ranks, y split unevenly ---

SHARD_SIZES = (13, 37)  # of m = 50


def _sharded_rank(rank: int, world: int, out: str) -> dict:
    x, y = _problem(*PROBLEMS["60x50_d5"])
    start = sum(SHARD_SIZES[:rank])
    y_local = y[start:start + SHARD_SIZES[rank]]
    reducer = ShardedReducer(y_local.shape[0], "cpu")
    solution = blocked_sinkhorn(x, y_local, 0.2, block_elems=100, reducer=reducer, **TIGHT)
    dx, dy, _ = _draw_problem()
    lo, hi = (0, 4) if rank == 0 else (4, 9)  # 4 + 5 of the 9 draw columns
    draw_reducer = ShardedReducer(hi - lo, "cpu")
    draw_solution = blocked_sinkhorn(dx, dy[lo:hi], DRAW_EPS, reducer=draw_reducer, **TIGHT)
    rows = DRAW_ROWS.repeat_interleave(DRAW_REPEATS)
    draws = sample_plan_columns(dx[rows], dy[lo:hi], draw_solution.g, DRAW_EPS,
                                generator=torch.Generator().manual_seed(3), reducer=draw_reducer)
    pair_x, pair_y = _pairing_problem()
    pairing, epsilon = sharded_ot_pairing(pair_x, pair_y, PAIRING_EPS_REL, generator=torch.Generator().manual_seed(4),
                                          tol=1e-12, max_iter=100_000)
    routed, routed_epsilon = relative_ot_pairing(pair_x, pair_y, PAIRING_EPS_REL, generator=torch.Generator().manual_seed(4),
                                                 blocked_min_n=1, shard_over_ranks=True)
    return {"f": solution.f, "g": solution.g, "iterations": solution.iterations,
            "error": solution.marginal_error, "draws": draws, "pairing": pairing, "epsilon": epsilon,
            "routed": routed, "routed_epsilon": routed_epsilon}


PAIRING_EPS_REL = 0.3
PAIRING_REPEATS = 1000  # copies of each of 4 distinct noise rows: 1000 draws from each row's conditional


def _pairing_problem() -> tuple[torch.Tensor, torch.Tensor]:
    """(4000, 3) noise of 4 distinct rows repeated, (9, 3) data: identical rows share one plan conditional."""
    x, y = _problem(4, 9, 3, 7)
    return x.repeat_interleave(PAIRING_REPEATS, dim=0), y


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    return run_ranks(_sharded_rank, len(SHARD_SIZES), tmp_path_factory.mktemp("sinkhorn_blocks"))


def test_two_uneven_shards_solve_as_one_process(sharded):
    x, y = _problem(*PROBLEMS["60x50_d5"])
    one = blocked_sinkhorn(x, y, 0.2, **TIGHT)
    g = torch.cat([rank["g"] for rank in sharded])
    scale = float(one.g.max() - one.g.min())
    for rank in sharded:
        assert rank["iterations"] == one.iterations and rank["error"] == sharded[0]["error"]
        assert float((rank["f"] - one.f).abs().max()) <= 1e-12 * scale
    assert float((g - one.g).abs().max()) <= 1e-12 * scale
    assert sharded[0]["error"] == pytest.approx(one.marginal_error, rel=1e-6, abs=1e-14)


def test_sharded_draws_agree_across_ranks_and_follow_the_plan(sharded):
    assert torch.equal(sharded[0]["draws"], sharded[1]["draws"])
    x, y, solution = _draw_problem()
    draws = sharded[0]["draws"]
    assert _frequency_p_value(draws, _conditionals(x, y, solution)) > 1e-3
    assert (draws < 4).any() and (draws >= 4).any()  # both shards win draws


def test_sharded_pairing_agrees_across_ranks_and_draws_from_the_one_process_plan(sharded):
    """``sharded_ot_pairing`` (9 data columns split 5 + 4): the one-process epsilon, the same pairs on both
    ranks, and per distinct noise row counts that fit the one-process plan's conditional (Pearson, 4 x 8 df)."""
    x, y = _pairing_problem()
    epsilon = streamed_relative_epsilon(PAIRING_EPS_REL, x, y)
    for rank in sharded:
        assert rank["epsilon"] == pytest.approx(epsilon, rel=1e-12)
        assert rank["routed_epsilon"] == pytest.approx(epsilon, rel=1e-12)
    assert torch.equal(sharded[0]["pairing"], sharded[1]["pairing"])
    assert torch.equal(sharded[0]["routed"], sharded[1]["routed"])  # relative_ot_pairing took the sharded route
    one = blocked_sinkhorn(x, y, epsilon, **TIGHT)
    probs = torch.softmax((x[::PAIRING_REPEATS] @ y.T + one.g) / epsilon, dim=1)
    counts = torch.stack([torch.bincount(row, minlength=9) for row in sharded[0]["pairing"].view(4, -1)])
    pearson = float(((counts - PAIRING_REPEATS * probs) ** 2 / (PAIRING_REPEATS * probs)).sum())
    assert chi2_distribution.sf(pearson, df=4 * 8) > 1e-3
    assert (sharded[0]["pairing"] < 5).any() and (sharded[0]["pairing"] >= 5).any()  # both shards win pairs
    # the check has power: the uniform pairing fails it
    uniform = torch.full((4, 9), PAIRING_REPEATS / 9)
    assert chi2_distribution.sf(float(((uniform - PAIRING_REPEATS * probs) ** 2 / (PAIRING_REPEATS * probs)).sum()),
                                df=4 * 8) < 1e-6


# --- the relative epsilon without the matrix, and the routing of relative_ot_pairing ---

@pytest.mark.parametrize("reference", ["inner_product", "sq_euclidean"])
def test_the_streamed_cost_std_is_the_matrix_std(reference):
    x, y = _problem(*PROBLEMS["60x50_d5"])
    for block_elems in (1, 77, 1 << 20):
        assert streamed_cost_std(x, y, reference, block_elems) == pytest.approx(
            reference_cost_std(x, y, reference), rel=1e-12)
    assert streamed_relative_epsilon(0.3, x, y, reference) == pytest.approx(
        relative_epsilon(0.3, x, y, reference), rel=1e-12)


def test_relative_ot_pairing_is_the_dense_pairing_below_blocked_min_n():
    x, y = _problem(40, 40, 3, 2)
    for epsilon_rel in (0.0, 0.3):
        dense = batch_ot_pairing(x, y, relative_epsilon(epsilon_rel, x, y) if epsilon_rel else 0.0,
                                 torch.Generator().manual_seed(1))
        for blocked_min_n in (None, 41):
            pairing, epsilon = relative_ot_pairing(x, y, epsilon_rel, generator=torch.Generator().manual_seed(1),
                                                   blocked_min_n=blocked_min_n)
            assert torch.equal(pairing, dense)
    pairing, epsilon = relative_ot_pairing(x, y, 0.3, generator=torch.Generator().manual_seed(1), blocked_min_n=40)
    assert epsilon == pytest.approx(relative_epsilon(0.3, x, y), rel=1e-12)
    assert pairing.shape == (40,) and int(pairing.min()) >= 0 and int(pairing.max()) < 40
    assert BLOCKED_SINKHORN_MIN_N > 4096  # the configs' plans (n <= 4096) keep the dense solve
