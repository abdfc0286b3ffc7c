"""OT-FM with an OT batch n independent of the training batch (sdfm.fm.couplings.PlanOTCoupling)."""

from __future__ import annotations

import numpy as np
import ot
import pytest
import torch
from gloo_spawn import run_ranks
from scipy.optimize import linear_sum_assignment

from sdfm.fm.couplings import BatchOTCoupling, PairBatch, PlanOTCoupling, make_coupling
from sdfm.fm.data_parallel import batch_rows
from sdfm.fm.train import TrainConfig, train
from sdfm.models import MLPVelocity


def _data(n=64, d=5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=gen) * 1.5 + 0.5


def _plan_batches(coupling, batch_size, count, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [coupling.sample(batch_size, gen) for _ in range(count)]


def test_full_data_set_plan_at_eps0_is_a_permutation_solving_the_assignment():
    data = _data(64, 5)
    coupling = make_coupling("otfm", data, ot_batch_size=64)
    assert isinstance(coupling, PlanOTCoupling)
    batches = _plan_batches(coupling, 16, 4)
    index = torch.cat([b.index for b in batches])
    x0 = torch.cat([b.x0 for b in batches]).double()
    assert sorted(index.tolist()) == list(range(64))  # every data point exactly once: a permutation
    assert coupling.plans_solved == 1
    cost = -(x0 @ data.double().T)
    rows, cols = linear_sum_assignment(cost.numpy())
    best = float(cost[rows, cols].sum())
    ours = float(cost[torch.arange(64), index].sum())
    assert ours == pytest.approx(best, rel=1e-10, abs=1e-10)
    # POT's exact solver on the squared Euclidean cost finds the same optimal value for the same pairs
    sq = torch.cdist(x0, data.double()).square().numpy()
    uniform = np.full(64, 1 / 64)
    assert float((ot.emd(uniform, uniform, sq) * sq).sum()) * 64 == pytest.approx(
        float(sq[np.arange(64), index.numpy()].sum()), rel=1e-9)
    for b in batches:
        assert torch.equal(b.x1, data[b.index])


def test_every_pair_of_a_plan_is_used_once_before_the_next_plan():
    data = _data(50, 3)
    coupling = PlanOTCoupling(data, ot_batch_size=100)  # n = 2 N: every point twice per plan
    gen = torch.Generator().manual_seed(1)
    first = [coupling.sample(20, gen) for _ in range(5)]
    assert coupling.plans_solved == 1
    counts = torch.bincount(torch.cat([b.index for b in first]), minlength=50)
    assert bool((counts == 2).all())
    assert first[0].pairing_seconds > 0 and all(b.pairing_seconds == 0 for b in first[1:])
    noise = torch.cat([b.x0 for b in first])
    assert torch.unique(noise, dim=0).shape[0] == 100  # no noise sample reused within the plan
    nxt = coupling.sample(20, gen)
    assert coupling.plans_solved == 2 and nxt.pairing_seconds > 0
    assert not any(torch.equal(nxt.x0[0], row) for row in noise)
    # n < N: the plan's data points are distinct
    small = PlanOTCoupling(_data(300, 3), ot_batch_size=40)
    idx = torch.cat([small.sample(10, gen).index for _ in range(4)])
    assert torch.unique(idx).numel() == 40


def test_plan_pairs_beat_independent_pairs_and_the_cost_per_pair_is_measured():
    data = _data(400, 8)
    coupling = PlanOTCoupling(data, ot_batch_size=256)
    batches = _plan_batches(coupling, 32, 8)
    x0 = torch.cat([b.x0 for b in batches])
    x1 = torch.cat([b.x1 for b in batches])
    paired = float((x0 - x1).square().sum(1).mean())
    shuffled = float((x0 - x1[torch.randperm(256, generator=torch.Generator().manual_seed(0))]).square().sum(1).mean())
    assert paired < 0.8 * shuffled
    assert coupling.plan_seconds == pytest.approx(sum(b.pairing_seconds for b in batches))
    assert coupling.plan_seconds / 256 > 0  # seconds per training pair


def test_same_seed_same_pairs_and_entropic_plans_draw_from_the_plan_generator():
    data = _data(80, 4)
    for eps in (0.0, 0.2):
        a = _plan_batches(PlanOTCoupling(data, ot_batch_size=64, epsilon_rel=eps), 16, 6, seed=3)
        b = _plan_batches(PlanOTCoupling(data, ot_batch_size=64, epsilon_rel=eps), 16, 6, seed=3)
        for x, y in zip(a, b):
            assert torch.equal(x.x0, y.x0) and torch.equal(x.index, y.index)
    # each plan consumes exactly one number of the training generator
    gen = torch.Generator().manual_seed(4)
    PlanOTCoupling(data, ot_batch_size=32).sample(16, gen)
    ref = torch.Generator().manual_seed(4)
    torch.randint(2**62, (1,), generator=ref)
    assert torch.equal(gen.get_state(), ref.get_state())


def test_rows_split_gives_every_rank_the_rows_of_one_process():
    data = _data(90, 4)
    for eps in (0.0, 0.3):
        whole = _plan_batches(PlanOTCoupling(data, ot_batch_size=48, epsilon_rel=eps), 16, 5, seed=2)
        halves = []
        for rows in (slice(0, 8), slice(8, 16)):
            coupling, gen = PlanOTCoupling(data, ot_batch_size=48, epsilon_rel=eps), torch.Generator().manual_seed(2)
            halves.append([coupling.sample(16, gen, rows=rows) for _ in range(5)])
        for k, batch in enumerate(whole):
            assert torch.equal(torch.cat([halves[0][k].x0, halves[1][k].x0]), batch.x0)
            assert torch.equal(torch.cat([halves[0][k].index, halves[1][k].index]), batch.index)


def test_state_dict_resumes_the_same_pairs_and_checks_n():
    data = _data(70, 3)
    straight = PlanOTCoupling(data, ot_batch_size=40, epsilon_rel=0.1)
    gen = torch.Generator().manual_seed(5)
    expected = [straight.sample(10, gen) for _ in range(7)]
    first, gen2 = PlanOTCoupling(data, ot_batch_size=40, epsilon_rel=0.1), torch.Generator().manual_seed(5)
    for _ in range(6):  # mid-way through the second plan
        first.sample(10, gen2)
    state = first.state_dict()
    resumed = PlanOTCoupling(data, ot_batch_size=40, epsilon_rel=0.1)
    resumed.load_state_dict(state)
    batch = resumed.sample(10, gen2)
    assert torch.equal(batch.x0, expected[6].x0) and torch.equal(batch.index, expected[6].index)
    with pytest.raises(ValueError, match="ot_batch_size 40"):
        PlanOTCoupling(data, ot_batch_size=80).load_state_dict(state)
    with pytest.raises(ValueError, match="multiple of the training batch"):
        PlanOTCoupling(data, ot_batch_size=40).sample(16, gen2)


def test_plan_training_resumes_bit_identically(tmp_path):
    data = _data(48, 2)
    config = TrainConfig(steps=12, batch_size=8, checkpoint_every=5, log_every=1, progress=False)

    def crash_at(step):
        def log_fn(k, _):
            if k == step:
                raise KeyboardInterrupt
        return log_fn

    torch.manual_seed(0)
    straight = train(MLPVelocity(2, hidden=16, depth=2), PlanOTCoupling(data, ot_batch_size=32), config,
                     sample_shape=(2,))
    path = tmp_path / "ckpt.pt"
    torch.manual_seed(0)
    with pytest.raises(KeyboardInterrupt):  # checkpoint at step 5: mid-way through the second plan of 4 batches
        train(MLPVelocity(2, hidden=16, depth=2), PlanOTCoupling(data, ot_batch_size=32), config, sample_shape=(2,),
              checkpoint_path=path, log_fn=crash_at(7))
    saved = torch.load(path, weights_only=False)
    assert saved["step"] == 5 and saved["coupling"]["cursor"] == 8 and saved["coupling"]["plans_solved"] == 2
    torch.manual_seed(0)
    resumed = train(MLPVelocity(2, hidden=16, depth=2), PlanOTCoupling(data, ot_batch_size=32), config,
                    sample_shape=(2,), checkpoint_path=path)
    assert straight.losses == resumed.losses
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key])
    # a checkpoint of a coupling without plans cannot resume a plan coupling
    other = tmp_path / "plain.pt"
    train(MLPVelocity(2, hidden=16, depth=2), BatchOTCoupling(data), TrainConfig(steps=2, batch_size=8, progress=False),
          sample_shape=(2,), checkpoint_path=other)
    with pytest.raises(ValueError, match="no state"):
        train(MLPVelocity(2, hidden=16, depth=2), PlanOTCoupling(data, ot_batch_size=32),
              TrainConfig(steps=3, batch_size=8, progress=False), sample_shape=(2,), checkpoint_path=other)


def test_conditional_plans_keep_the_drawn_labels():
    data = _data(60, 3)
    labels = torch.arange(60) % 3
    coupling = make_coupling("otfm", data, labels=labels, beta=1e4, ot_batch_size=30)
    batches = _plan_batches(coupling, 10, 3)
    drawn, paired = torch.cat([b.labels for b in batches]), labels[torch.cat([b.index for b in batches])]
    # at a dominant beta the plan matches as many labels as the two label counts allow
    most = int(torch.minimum(torch.bincount(drawn, minlength=3), torch.bincount(paired, minlength=3)).sum())
    assert int((drawn == paired).sum()) == most


def test_large_entropic_plans_take_the_blocked_solve_and_follow_the_dense_plan():
    """From ``blocked_min_n`` pairs (here lowered to 256) an eps > 0 plan is solved without the n x n
    matrix: the same epsilon as the dense solve, reproducible and resumable from the seed, and pairs
    as close as the dense plan's (mean squared distance over 16 plans within 3% of it, far below independent pairs)."""
    data = _data(300, 3)

    def blocked():
        coupling = PlanOTCoupling(data, ot_batch_size=256, epsilon_rel=0.2)
        coupling.blocked_min_n = 256
        return coupling

    dense = PlanOTCoupling(data, ot_batch_size=256, epsilon_rel=0.2)
    dense_batches = _plan_batches(dense, 64, 4, seed=5)
    coupling = blocked()
    batches = _plan_batches(coupling, 64, 4, seed=5)
    again = _plan_batches(blocked(), 64, 4, seed=5)
    assert all(torch.equal(a.index, b.index) for a, b in zip(batches, again))
    assert all(torch.equal(a.x0, b.x0) for a, b in zip(batches, dense_batches))  # the same noise and data
    assert not all(torch.equal(a.index, b.index) for a, b in zip(batches, dense_batches))  # another draw
    # the same plan data; the dense std is taken in float32 (the data dtype), the streamed one in float64
    assert coupling.last_epsilon == pytest.approx(dense.last_epsilon, rel=1e-6)
    x0 = torch.cat([b.x0 for b in batches]).double()
    x1 = torch.cat([b.x1 for b in batches]).double()

    def mean_sq(bs):
        return float(torch.cat([(b.x0 - b.x1).square().sum(1) for b in bs]).mean())

    independent = float((x0 - x1[torch.randperm(256, generator=torch.Generator().manual_seed(0))]).square().sum(1).mean())
    assert mean_sq(batches) < 0.5 * independent
    # over 16 plans (the same noise and data each way), the mean squared distance of the drawn pairs
    many_dense = _plan_batches(PlanOTCoupling(data, ot_batch_size=256, epsilon_rel=0.2), 256, 16, seed=6)
    many_blocked = _plan_batches(blocked(), 256, 16, seed=6)
    assert mean_sq(many_blocked) == pytest.approx(mean_sq(many_dense), rel=0.03)
    state = coupling.state_dict()
    state["cursor"] = 128
    resumed = blocked()
    resumed.load_state_dict(state)
    assert torch.equal(resumed.sample(64, torch.Generator()).index, batches[2].index)


# --- two gloo ranks sharing a blocked plan ---

def _sharded_plan_rank(rank: int, world: int, out: str) -> dict:
    """Each rank trains on its rows of 16 plans of 256 pairs (blocked from 256, so the ranks share every solve)."""
    coupling = PlanOTCoupling(_data(300, 3), ot_batch_size=256, epsilon_rel=0.2)
    coupling.blocked_min_n = 256
    gen = torch.Generator().manual_seed(6)
    rows = batch_rows(256, rank, world)
    batches = [coupling.sample(256, gen, rows=rows) for _ in range(16)]
    return {"plan_index": coupling._plan.index, "batches": batches, "epsilon": coupling.last_epsilon}


def test_two_ranks_share_the_blocked_solve_and_train_on_one_plan(tmp_path):
    """With 2 gloo ranks a blocked eps > 0 plan is solved sharded: both ranks hold the same plan (its pairs
    differ from one process's draw, which shows the sharded route ran), their rows are one process's
    noise and data, the epsilon is one process's, and the pairs are as close as one process's (16 plans)."""
    ranks = run_ranks(_sharded_plan_rank, 2, tmp_path)
    assert torch.equal(ranks[0]["plan_index"], ranks[1]["plan_index"])
    one = PlanOTCoupling(_data(300, 3), ot_batch_size=256, epsilon_rel=0.2)
    one.blocked_min_n = 256
    single = _plan_batches(one, 256, 16, seed=6)
    joined = [PairBatch(torch.cat([a.x0, b.x0]), torch.cat([a.x1, b.x1]), None, torch.cat([a.index, b.index]))
              for a, b in zip(ranks[0]["batches"], ranks[1]["batches"])]
    assert all(torch.equal(a.x0, b.x0) for a, b in zip(joined, single))  # the same noise, in the same rows
    assert torch.equal(joined[-1].index, ranks[0]["plan_index"])
    assert not all(torch.equal(a.index, b.index) for a, b in zip(joined, single))  # another draw: sharded
    assert ranks[0]["epsilon"] == pytest.approx(one.last_epsilon, rel=1e-12)

    def mean_sq(bs):
        return float(torch.cat([(b.x0 - b.x1).square().sum(1) for b in bs]).mean())

    assert mean_sq(joined) == pytest.approx(mean_sq(single), rel=0.03)
