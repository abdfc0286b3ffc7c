"""The fused Triton kernels equal the dense float64 reductions (run in Triton's CPU interpreter).

The interpreter must be switched on before triton is imported, so the checks run in a fresh
subprocess with ``TRITON_INTERPRET=1``; they are skipped where triton is not installed.
"""

import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from sdfm.ot.kernel import _use_fused, augment_keys, augment_queries, reduce_scores

CHECKS = textwrap.dedent(
    """
    import torch
    from sdfm.ot.fused import fused_available, row_reduce
    from sdfm.ot.kernel import augment_keys, augment_queries, reduce_scores

    assert fused_available("cpu")
    gen = torch.Generator().manual_seed(0)
    # B and N not multiples of the tiles; d not a multiple of BLOCK_D; several column splits
    x = torch.randn(70, 37, generator=gen)
    y = torch.randn(301, 37, generator=gen)
    g = torch.randn(301, generator=gen, dtype=torch.float64) * 3
    log_b = torch.log_softmax(torch.randn(301, generator=gen, dtype=torch.float64), 0)
    queries = augment_queries(x)

    # eps = 0: max, FIRST argmax (ties planted across tiles and splits), counts
    # small integers: every score is exact in float32, so planted ties are exact ties
    x_int = torch.randint(-3, 4, (70, 37), generator=gen).float()
    y_ties = torch.randint(-3, 4, (301, 37), generator=gen).float()
    y_ties[200] = y_ties[5]; y_ties[64] = y_ties[5]  # the same key three times: index 5 must win
    g_ties = torch.randint(-5, 6, (301,), generator=gen).double()
    g_ties[[5, 64, 200]] = 500.0  # they win every row
    for xx, yy, gg in ((x, y, g), (x_int, y_ties, g_ties)):
        queries = augment_queries(xx)
        keys = augment_keys(yy, gg)
        dense = xx.double() @ yy.double().T + gg
        red = reduce_scores(queries, keys, 0.0, need_mass_cube=True, fused=True)
        ref = reduce_scores(queries, keys, 0.0, need_mass_cube=True, fused=False)
        assert torch.equal(red.index, dense.argmax(dim=1)), "argmax"
        assert torch.equal(red.index, ref.index)
        torch.testing.assert_close(red.value.double(), dense.amax(dim=1), rtol=1e-5, atol=1e-4)
        assert torch.equal(red.mass, ref.mass) and red.mass_sq is red.mass and red.mass_cube is red.mass
    assert (red.index == 5).all()
    queries = augment_queries(x)

    # eps > 0: eps logsumexp and the column sums of pi, pi^2, pi^3 against float64
    for eps in (0.05, 0.7):
        keys = augment_keys(y, g, eps, log_b)
        scores = (x.double() @ y.double().T + g) / eps + log_b
        probs = torch.softmax(scores, dim=1)
        red = reduce_scores(queries, keys, eps, need_mass_cube=True, fused=True)
        torch.testing.assert_close(red.value.double(), eps * torch.logsumexp(scores, dim=1), rtol=1e-5, atol=1e-4)
        for got, power in ((red.mass, 1), (red.mass_sq, 2), (red.mass_cube, 3)):
            torch.testing.assert_close(got, probs.pow(power).sum(dim=0), rtol=1e-4, atol=1e-6)
        only_mass = reduce_scores(queries, keys, eps, need_mass_sq=False, fused=True)
        assert only_mass.mass_sq is None and only_mass.index is None
        torch.testing.assert_close(only_mass.mass, red.mass, rtol=0, atol=0)
    # one column, one row
    best, index = row_reduce(queries[:1], augment_keys(y[:1], g[:1]), soft=False)
    assert index.tolist() == [0]
    print("fused ok")
    """
)


def test_fused_kernels_in_the_triton_interpreter():
    if importlib.util.find_spec("triton") is None:
        pytest.skip("triton is not installed")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run([sys.executable, "-c", CHECKS], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "fused ok" in done.stdout


def test_fused_path_is_chosen_on_cuda_only():
    q, k = augment_queries(torch.randn(4, 3)), augment_keys(torch.randn(5, 3), torch.zeros(5))
    assert not _use_fused(None, q, k, None, False)  # CPU tensors: the torch path, unchanged
    with pytest.raises(ValueError, match="margins"):
        _use_fused(True, q, k, None, True)


@pytest.mark.parametrize("block_elems", [50, 10**9])
def test_mass_cube_matches_dense(block_elems):
    gen = torch.Generator().manual_seed(2)
    x, y = torch.randn(31, 4, generator=gen, dtype=torch.float64), torch.randn(23, 4, generator=gen, dtype=torch.float64)
    g = torch.randn(23, generator=gen, dtype=torch.float64)
    probs = torch.softmax((x @ y.T + g) / 0.3, dim=1)
    red = reduce_scores(augment_queries(x), augment_keys(y, g), 0.3, need_mass_cube=True, block_elems=block_elems)
    torch.testing.assert_close(red.mass_cube, probs.pow(3).sum(dim=0))
    torch.testing.assert_close(red.mass_sq, probs.pow(2).sum(dim=0))
    plain = reduce_scores(augment_queries(x), augment_keys(y, g), 0.3, block_elems=block_elems)
    assert plain.mass_cube is None and torch.equal(plain.mass_sq, red.mass_sq)
