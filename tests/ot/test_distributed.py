"""The sharded potential (2 gloo ranks on this machine) against the one-process solver.

One spawn of two ranks runs every sharded computation (module fixture); the tests compare its
results with the single-process ones.

Tolerance of the fits: the sharded fit runs the solver's own loop on the same source draws, so it
differs from the one-process fit only by floating-point reduction order (the cross-shard
logsumexp, the global sums for <b, g> and the weight normalisation, the moments of the Gaussian
initial potential). On float64 points these differences are ~1e-16 relative per step and stay
tiny through a few hundred SGD steps: we ask for 1e-12 of the potential's range. (They are not
bit-identical, because the summation orders differ; measured: 8e-16 of the range at eps = 0,
2e-16 at eps > 0.)
"""

import os

import numpy as np
import pytest
import torch
import torch.distributed as dist
from gloo_spawn import free_port, run_ranks
from scipy.stats import chi2 as chi2_distribution

from sdfm.ot import SemidiscretePotential, fit_potential
from sdfm.ot.distributed import ShardedPotential, ShardedReducer, fit_potential_sharded, shard_bounds
from sdfm.ot.solver_init import initial_potential

pytestmark = pytest.mark.timeout(180)

WORLD = 2
N, D = 1201, 3  # odd: the shards have 601 and 600 points
FIT = dict(steps=300, batch_size=256, eval_every=100, eval_batch=2048, seed=0, progress=False)
EPS = 0.3
DRAW_REPEATS = 25_000  # draws per query in the distribution test


def _points():
    gen = torch.Generator().manual_seed(0)
    y = torch.randn(N, D, generator=gen, dtype=torch.float64) * torch.tensor([1.5, 1.0, 0.5], dtype=torch.float64)
    weights = torch.rand(N, generator=gen, dtype=torch.float64) + 0.5
    queries = torch.randn(500, D, generator=gen, dtype=torch.float64)
    return y, weights, queries


def _tiny():
    """6 points, 3 per rank, a fixed potential, 4 queries: the softmax draw is checked on it."""
    gen = torch.Generator().manual_seed(3)
    return (torch.randn(6, 2, generator=gen, dtype=torch.float64), torch.randn(6, generator=gen, dtype=torch.float64),
            torch.randn(4, 2, generator=gen, dtype=torch.float64))


def _ties():
    """Points 1, 2, 4 and 5 tie for the query (5, 5); points 1 and 4 coincide (one on each rank)."""
    y = torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 0.0], [-1.0, -1.0], [1.0, 1.0], [0.0, 2.0]], dtype=torch.float64)
    x = torch.tensor([[5.0, 5.0], [1.0, 0.0], [0.0, 1.0], [-1.0, -1.0], [1.0, 1.0]], dtype=torch.float64)
    return y, x


def _rank_main(rank: int, world: int, out: str) -> dict:
    y, weights, queries = _points()
    start, stop = shard_bounds(N, world, rank)
    results = {}
    hard = fit_potential_sharded(y[start:stop], **FIT)
    soft = fit_potential_sharded(y[start:stop], epsilon=EPS, weights=weights[start:stop], **FIT)
    x_chi2 = torch.randn(4096, D, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    for name, pot in (("hard", hard), ("soft", soft)):
        full = pot.gather()  # rank 0: the whole potential (points gathered too); None elsewhere
        results[name] = {"g": None if full is None else full.g, "y": None if full is None else full.y,
                         "weights": None if full is None else full.weights, "history": pot.history,
                         "chi2": pot.chi2(x_chi2), "offset": pot.offset}
    results["hard"]["assign"] = hard.assign(queries)

    # stopped after 200 steps (each rank checkpoints to its own file), then resumed to 300
    checkpoint = os.path.join(out, "ckpt.pt")
    fit_potential_sharded(y[start:stop], checkpoint=checkpoint, **{**FIT, "steps": 200})
    resumed = fit_potential_sharded(y[start:stop], checkpoint=checkpoint, **FIT)
    results["resumed_equal"] = (torch.equal(resumed.local.g, hard.local.g)
                                and resumed.history["chi2"] == hard.history["chi2"])

    # exact ties across and within shards: the lowest global index wins, as in one process
    ty, tx = _ties()
    lo, hi = shard_bounds(6, world, rank)
    shard = SemidiscretePotential(ty[lo:hi], torch.zeros(hi - lo, dtype=torch.float64), 0.0,
                                  torch.full((hi - lo,), 1 / 6, dtype=torch.float64))
    results["ties"] = ShardedPotential(shard).assign(tx)

    # the eps > 0 draw over shards, on a fixed potential: every query repeated DRAW_REPEATS times
    ty, tg, tx = _tiny()
    lo, hi = shard_bounds(6, world, rank)
    shard = SemidiscretePotential(ty[lo:hi], tg[lo:hi], 0.5, torch.full((hi - lo,), 1 / 6, dtype=torch.float64))
    draws = ShardedPotential(shard).assign(tx.repeat_interleave(DRAW_REPEATS, 0),
                                           generator=torch.Generator().manual_seed(11))
    results["draws"] = draws
    everyone = [torch.empty_like(draws) for _ in range(world)]
    dist.all_gather(everyone, draws)
    results["draws_agree"] = all(torch.equal(d, draws) for d in everyone)
    return results


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    out = tmp_path_factory.mktemp("sharded")
    results = run_ranks(_rank_main, WORLD, out)
    results[0]["files"] = sorted(path.name for path in out.iterdir())
    return results


@pytest.fixture(scope="module")
def single():
    y, weights, _ = _points()
    return {"hard": fit_potential(y, **FIT), "soft": fit_potential(y, epsilon=EPS, weights=weights, **FIT)}


@pytest.mark.parametrize("name", ["hard", "soft"])
def test_two_ranks_fit_the_same_potential_as_one_process(sharded, single, name):
    one, two = single[name], sharded[0][name]
    y, _, _ = _points()
    assert torch.equal(two["y"], y)  # the gathered shards are the data set, in order
    assert [r[name]["offset"] for r in sharded] == [0, 601]
    torch.testing.assert_close(two["weights"], one.weights, rtol=1e-14, atol=0)
    scale = float(one.g.max() - one.g.min())
    assert float((two["g"] - one.g).abs().max()) <= 1e-12 * scale
    assert two["history"]["step"] == one.history["step"]
    np.testing.assert_allclose(two["history"]["chi2"], one.history["chi2"], rtol=1e-7, atol=1e-9)
    assert two["history"]["lr0"] == pytest.approx(one.history["lr0"], rel=1e-12)
    # every rank sees the same curve (the stopping rule must agree across ranks)
    assert sharded[1][name]["history"]["chi2"] == two["history"]["chi2"]


@pytest.mark.parametrize("name", ["hard", "soft"])
def test_sharded_chi2_equals_the_one_process_estimate(sharded, name):
    two = sharded[0][name]
    full = SemidiscretePotential(two["y"], two["g"], two["history"]["epsilon"], two["weights"])
    x = torch.randn(4096, D, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    assert sharded[1][name]["chi2"] == two["chi2"]
    assert two["chi2"] == pytest.approx(full.chi2(x), rel=1e-9, abs=1e-12)


def test_eps0_assignments_match_one_process(sharded, single):
    _, _, queries = _points()
    hard = sharded[0]["hard"]
    assert torch.equal(sharded[1]["hard"]["assign"], hard["assign"])  # every rank gets the answer
    full = SemidiscretePotential(hard["y"], hard["g"], 0.0, hard["weights"])
    assert torch.equal(hard["assign"], full.assign(queries))  # same potential: the exact argmax
    assert torch.equal(hard["assign"], single["hard"].assign(queries))  # the one-process fit


def test_eps0_ties_go_to_the_lowest_global_index_as_in_one_process(sharded):
    y, x = _ties()
    one = SemidiscretePotential(y, torch.zeros(6, dtype=torch.float64)).assign(x)
    assert one.tolist() == [1, 2, 5, 3, 1]
    assert torch.equal(sharded[0]["ties"], one) and torch.equal(sharded[1]["ties"], one)


def test_a_sharded_fit_resumes_bit_identically_from_its_rank_checkpoints(sharded):
    assert {"ckpt.rank0of2.pt", "ckpt.rank1of2.pt"} <= set(sharded[0]["files"])
    assert all(rank["resumed_equal"] for rank in sharded)


def test_eps_positive_sharded_draw_follows_the_global_softmax(sharded):
    """Empirical frequencies of 4 x 25,000 draws against pi(x) = softmax((<x, y> + g) / eps).

    Pearson's statistic over the 4 queries x 6 points has 4 x 5 = 20 degrees of freedom; we ask
    for a p-value above 1e-3 and, as a plainer check, every frequency within 0.015 of its
    probability (5 standard deviations sqrt(1/4 / 25,000) = 0.0032 of a frequency).
    """
    assert sharded[0]["draws_agree"] and torch.equal(sharded[1]["draws"], sharded[0]["draws"])
    ty, tg, tx = _tiny()
    probs = torch.softmax((tx @ ty.T + tg) / 0.5, dim=1)
    counts = torch.stack([torch.bincount(row, minlength=6) for row in sharded[0]["draws"].view(4, DRAW_REPEATS)])
    expected = probs * DRAW_REPEATS
    pearson = float(((counts - expected).square() / expected).sum())
    assert chi2_distribution.sf(pearson, df=20) > 1e-3, pearson
    assert float((counts / DRAW_REPEATS - probs).abs().max()) < 0.015
    assert counts[:, :3].sum() > 0 and counts[:, 3:].sum() > 0  # both shards win some draws


FEW = {"even": (12, 20), "uneven": (13, 20)}  # N <= d: shards of 6 + 6 and of 7 + 6 points


def _few_points(n: int, d: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(n)
    return torch.randn(n, d, generator=gen, dtype=torch.float64) * torch.linspace(2.0, 0.5, d, dtype=torch.float64) + 1


def _gaussian_start_rank(rank: int, world: int, out: str) -> dict:
    import sdfm.ot.shards as shards

    def no_d_by_d(*args):
        raise AssertionError("the d x d covariance route ran with N <= d")

    shards.gaussian_conjugate = no_d_by_d  # this spawned process only
    starts = {}
    for name, (n, d) in FEW.items():
        start, stop = shard_bounds(n, world, rank)
        starts[name] = ShardedReducer(stop - start, "cpu").initial_potential(_few_points(n, d)[start:stop], "gaussian")
    return starts


def test_the_sharded_gaussian_start_with_few_points_is_the_one_process_start(tmp_path):
    """N <= d: the ranks gather the centred shards and take the Gram route, as one process does.

    They differ from the one-process start only by the summation order of the mean (an all-reduce
    of shard sums), which the Gram matrix's near-zero eigenvalue (centred points span N - 1
    dimensions) carries into g: measured 2e-15 (even) and 4e-14 (uneven) of the start's range; we
    ask for 1e-12. The ranks' d x d covariance route is replaced by a failure, so it cannot run."""
    ranks = run_ranks(_gaussian_start_rank, WORLD, tmp_path)
    for name, (n, d) in FEW.items():
        one = initial_potential(_few_points(n, d), "gaussian")
        two = torch.cat([rank[name] for rank in ranks])
        assert two.shape == (n,) and two.dtype == torch.float64
        assert float((two - one).abs().max()) <= 1e-12 * float(one.max() - one.min())


def _three_rank_draws(rank: int, world: int, out: str) -> torch.Tensor:
    ty, tg, tx = _tiny()
    lo, hi = shard_bounds(6, world, rank)
    shard = SemidiscretePotential(ty[lo:hi], tg[lo:hi], 0.5, torch.full((hi - lo,), 1 / 6, dtype=torch.float64))
    draws = ShardedPotential(shard).assign(tx.repeat_interleave(DRAW_REPEATS, 0),
                                           generator=torch.Generator().manual_seed(5))
    return draws


@pytest.mark.slow
def test_three_shards_draw_from_the_global_softmax(tmp_path):
    """The shard is picked by Gumbel-max, ``argmax_r l_r + G_r``. With two ranks that cannot be told from
    its mirror ``argmax_r l_r - G_r`` (the difference of two Gumbels is symmetric), so the two-rank draw
    test above passes with either sign; with three shards of 2 points it cannot. Pearson's statistic over
    4 queries x 6 points (20 degrees of freedom) must stay below its 1 - 1e-6 quantile."""
    draws = run_ranks(_three_rank_draws, 3, tmp_path)
    assert all(torch.equal(d, draws[0]) for d in draws)
    ty, tg, tx = _tiny()
    probs = torch.softmax((tx @ ty.T + tg) / 0.5, dim=1)
    counts = torch.stack([torch.bincount(row, minlength=6) for row in draws[0].view(4, DRAW_REPEATS)]).double()
    expected = probs * DRAW_REPEATS
    pearson = float(((counts - expected).square() / expected).sum())
    assert pearson < chi2_distribution.isf(1e-6, 20), pearson


def test_torchrun_cli_writes_the_potential_file_of_the_one_process_fit(tmp_path, monkeypatch):
    """``torchrun --nproc-per-node 2 -m sdfm.cli fit-potential ... --distributed`` on float32 data at
    eps > 0: rank 0 writes the file format of the one-process job (loadable against the data's
    fingerprint), with the one-process potential up to float32 reduction order (measured 6e-8 of its
    range; we ask for 1e-5), and the rank checkpoints are gone."""
    import json
    import subprocess
    import sys

    from sdfm.data import load_prepared
    from sdfm.ot.problem import absolute_epsilon
    from sdfm.jobs.prepare import prepare_data_job
    from sdfm.runtime import JobContext

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    ctx = JobContext(experiment="sharded", results_dir=str(tmp_path / "results"), progress=False)
    prepare_data_job("moons", "moons", {"n_train": 1000, "n_test": 100}, tmp_path / "moons.npz", ctx)
    settings = {"steps": 200, "batch_size": 256, "eval_every": 100, "eval_batch": 2048}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
           "--master-addr", "127.0.0.1", "--master-port", str(free_port()), "-m", "sdfm.cli", "fit-potential",
           "--data", str(tmp_path / "moons.npz"), "--dataset", "moons", "--epsilon", "0.1",
           "--settings", json.dumps(settings), "--out", str(tmp_path / "p.pt"), "--summary", str(tmp_path / "p.json"),
           "--experiment", "sharded", "--results-dir", ctx.results_dir, "--device", "cpu", "--threads", "1",
           "--no-progress", "--distributed"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=150, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("p.pt: chi2") == 1  # rank 0 reports

    y = load_prepared(tmp_path / "moons.npz").flat_train()
    two = SemidiscretePotential.load(tmp_path / "p.pt", y=y)  # the fingerprint of the whole data set
    one = fit_potential(y, epsilon=absolute_epsilon(0.1, y, 4096, 0), seed=0, progress=False, **settings)
    assert two.epsilon == one.epsilon and torch.equal(two.weights, one.weights)
    assert float((two.g - one.g).abs().max()) <= 1e-5 * float(one.g.max() - one.g.min())
    assert two.history["step"] == one.history["step"] == [100, 200]
    np.testing.assert_allclose(two.history["chi2"], one.history["chi2"], rtol=1e-3, atol=1e-6)
    stored = torch.load(tmp_path / "p.pt", weights_only=False)
    assert set(stored) == {"g", "epsilon", "weights", "history", "fingerprint", "y"} and stored["y"] is None
    summary = json.loads((tmp_path / "p.json").read_text())
    assert summary["world_size"] == 2 and summary["steps_run"] == 200 and summary["mlflow_run_id"]
    assert not list(tmp_path.glob(".p.*.ckpt"))
