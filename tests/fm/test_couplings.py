"""Tests of the pair samplers (sdfm.fm.couplings)."""

from __future__ import annotations

import pytest
import torch
from scipy.optimize import linear_sum_assignment

from sdfm.fm.couplings import (
    BatchOTCoupling,
    IndependentCoupling,
    SemidiscreteCoupling,
    make_coupling,
)
from sdfm.ot import SemidiscretePotential, fit_potential
from sdfm.ot.problem import augment_with_labels


def _data(n=200, d=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=gen) * 2 + 1


def test_independent_shapes_and_uniform_coverage():
    data = _data(10, 3)
    labels = torch.arange(10) % 3
    coupling = make_coupling("fm", data, labels=labels)
    assert coupling.name == "fm"
    batch = coupling.sample(20_000, torch.Generator().manual_seed(1))
    assert batch.x0.shape == batch.x1.shape == (20_000, 3)
    assert torch.equal(batch.x1, data[batch.index])
    assert torch.equal(batch.labels, labels[batch.index])
    counts = torch.bincount(batch.index, minlength=10).float()
    assert counts.min() > 0
    chi2 = ((counts - 2000) ** 2 / 2000).sum()  # 9 degrees of freedom: P(chi2 > 40) < 1e-5
    assert chi2 < 40
    assert abs(float(batch.x0.mean())) < 0.05 and abs(float(batch.x0.std()) - 1) < 0.05
    assert batch.pairing_seconds >= 0


def test_same_generator_state_same_batch():
    coupling = IndependentCoupling(_data())
    a = coupling.sample(8, torch.Generator().manual_seed(3))
    b = coupling.sample(8, torch.Generator().manual_seed(3))
    assert torch.equal(a.x0, b.x0) and torch.equal(a.index, b.index)


def test_otfm_exact_pairing_minimises_total_cost():
    data = _data(100, 2)
    coupling = BatchOTCoupling(data, epsilon_rel=0.0)
    batch = coupling.sample(64, torch.Generator().manual_seed(5))
    # Replay the draws: the same generator state yields the same noise and the same unpaired indices.
    replay = torch.Generator().manual_seed(5)
    x0 = torch.randn(64, 2, generator=replay)
    index = torch.randint(100, (64,), generator=replay)
    assert torch.equal(batch.x0, x0)
    assert sorted(batch.index.tolist()) == sorted(index.tolist())
    cost = -(x0.double() @ data[index].double().T)
    rows, cols = linear_sum_assignment(cost.numpy())
    best = float(cost[rows, cols].sum())
    ours = float(-(batch.x0.double() * batch.x1.double()).sum())
    assert ours == pytest.approx(best, rel=1e-9, abs=1e-9)
    independent = float(-(x0.double() * data[index].double()).sum())
    assert ours < independent - 1.0


def test_otfm_entropic_records_absolute_epsilon():
    coupling = make_coupling("otfm", _data(), epsilon_rel=0.1)
    batch = coupling.sample(32, torch.Generator().manual_seed(0))
    assert torch.equal(batch.x1, coupling.data[batch.index])
    # eps = eps_rel * std(C) of this batch's cost C_ij = -<x0_i, x1_j> (replayed: noise, then the indices)
    replay = torch.Generator().manual_seed(0)
    x0 = torch.randn(32, 2, generator=replay).double()
    cost = -(x0 @ coupling.data[torch.randint(200, (32,), generator=replay)].double().T)
    assert torch.equal(batch.x0.double(), x0)
    assert coupling.last_epsilon == pytest.approx(0.1 * float(cost.std()), rel=1e-5)  # float32 batch


def test_otfm_conditional_large_beta_maximises_label_matches():
    data = _data(120, 2)
    labels = torch.arange(120) % 3
    coupling = make_coupling("otfm", data, labels=labels, beta=1e4)
    batch = coupling.sample(48, torch.Generator().manual_seed(2))
    data_labels = labels[batch.index]
    matched = int((batch.labels == data_labels).sum())
    # Noise and data label counts differ by chance; a dominant beta leaves only the forced mismatches.
    most = int(torch.minimum(torch.bincount(batch.labels, minlength=3), torch.bincount(data_labels, minlength=3)).sum())
    assert matched == most
    assert most > 30


def test_augment_with_labels_carries_beta_mismatch_cost():
    x, y = torch.randn(4, 2), torch.randn(4, 2)
    zx, zy = torch.tensor([0, 1, 2, 0]), torch.tensor([0, 2, 2, 1])
    beta = 3.0
    ax, ay = augment_with_labels(x, zx, 3, beta), augment_with_labels(y, zy, 3, beta)
    cost = -(ax @ ay.T)
    expected = -(x @ y.T) + beta * (zx[:, None] != zy[None, :]).float() - beta
    torch.testing.assert_close(cost, expected)


def test_otfm_conditional_pairs_carry_the_querys_drawn_label_at_small_beta():
    # A small beta lets the x cost outweigh a label mismatch, so a matched point's own label often differs
    # from the query's: the pair carries the label z drawn for the noise (the label the model is trained on).
    data = _data(120, 2)
    labels = torch.arange(120) % 3
    coupling = make_coupling("otfm", data, labels=labels, beta=0.5)
    batch = coupling.sample(48, torch.Generator().manual_seed(2))
    replay = torch.Generator().manual_seed(2)  # the draws of sample(): noise, data indices, query labels
    x0 = torch.randn(48, 2, generator=replay)
    index = torch.randint(120, (48,), generator=replay)
    z0 = labels[torch.randint(120, (48,), generator=replay)]
    assert torch.equal(batch.x0, x0) and sorted(batch.index.tolist()) == sorted(index.tolist())
    assert torch.equal(batch.labels, z0), "the pairs must carry the query's drawn labels"
    assert float((labels[batch.index] != z0).float().mean()) > 0.2  # the case that tells the two apart


@pytest.fixture(scope="module")
def potential_2d():
    y = _data(200, 2, seed=7)
    return y, fit_potential(y, steps=2000, progress=False, seed=0)


def test_sdfm_indices_are_the_argmax(potential_2d):
    y, potential = potential_2d
    coupling = make_coupling("sdfm", y, potential=potential)
    batch = coupling.sample(500, torch.Generator().manual_seed(11))
    scores = batch.x0 @ potential.y.T + potential.g[None, :]
    assert torch.equal(batch.index, scores.argmax(dim=1))
    assert torch.equal(batch.x1, y[batch.index])
    # A fitted potential spreads fresh noise over (nearly) all points.
    assert torch.unique(batch.index).numel() > 150


def test_sdfm_conditional_queries_are_augmented():
    y = _data(60, 2, seed=3)
    labels = torch.arange(60) % 2
    keys = augment_with_labels(y, labels, 2, 50.0)
    potential = fit_potential(keys, steps=200, progress=False)
    coupling = SemidiscreteCoupling(y, potential, labels, beta=50.0)
    batch = coupling.sample(200, torch.Generator().manual_seed(4))
    assert batch.x0.shape == (200, 2)
    query = augment_with_labels(batch.x0, batch.labels, 2, 50.0)
    assert torch.equal(batch.index, (query @ potential.y.T + potential.g).argmax(dim=1))
    assert bool((labels[batch.index] == batch.labels).all())  # beta = 50 dominates the x cost


def test_sdfm_conditional_pairs_carry_the_querys_drawn_label_at_small_beta():
    # As for OT-FM: at beta = 0.5 the MIPS often crosses labels, and the pair keeps the query's drawn z.
    y = _data(60, 2, seed=3).double()
    labels = torch.arange(60) % 3
    keys = augment_with_labels(y, labels, 3, 0.5)
    g = 0.3 * torch.randn(60, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    coupling = SemidiscreteCoupling(y, SemidiscretePotential(keys, g), labels, beta=0.5)
    batch = coupling.sample(400, torch.Generator().manual_seed(4))
    replay = torch.Generator().manual_seed(4)  # the draws of sample(): noise, then the query labels
    x0 = torch.randn(400, 2, generator=replay, dtype=torch.float64)
    z0 = labels[torch.randint(60, (400,), generator=replay)]
    assert torch.equal(batch.x0, x0)
    assert torch.equal(batch.labels, z0), "the pairs must carry the query's drawn labels"
    assert torch.equal(batch.index, (augment_with_labels(x0, z0, 3, 0.5) @ keys.T + g).argmax(dim=1))
    assert float((labels[batch.index] != z0).float().mean()) > 0.2  # the case that tells the two apart


def test_make_coupling_errors(potential_2d):
    y, potential = potential_2d
    with pytest.raises(ValueError, match="potential"):
        make_coupling("sdfm", y)
    with pytest.raises(ValueError, match="unknown"):
        make_coupling("nope", y)
    with pytest.raises(ValueError, match="does not match"):
        make_coupling("sdfm", y[:100], potential=potential)


def test_sdfm_entropic_draws_are_seeded():
    y = _data(50, 2, seed=1)
    potential = fit_potential(y, epsilon=0.5, steps=100, progress=False)
    coupling = make_coupling("sdfm", y, potential=potential)
    a = coupling.sample(400, torch.Generator().manual_seed(9))
    b = coupling.sample(400, torch.Generator().manual_seed(9))
    assert torch.equal(a.index, b.index) and torch.equal(a.x0, b.x0)
    argmax = (a.x0 @ potential.y.T + potential.g).argmax(dim=1)
    assert 0 < int((a.index != argmax).sum()) < 400  # a draw from pi(x), not the hard assignment
