"""The benchmarks' core functions on tiny inputs (seconds): tidy columns, skipping, power-law fits."""

import math
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_pairing  # noqa: E402
import bench_train_step  # noqa: E402
from common import budgeted_medians, extrapolate, fit_power_law  # noqa: E402

TINY_PAIRING = {"n": [24, 48], "d": [2], "N": 300, "N_sweep": [100, 200], "n_fixed": 16, "sinkhorn_eps": [0.1],
                "sdfm_eps": 0.1, "budget": 5.0, "repeats": 1}


def test_fit_power_law_recovers_a_and_b():
    x = [10.0, 100.0, 1e3, 1e4]
    a, b = fit_power_law(x, [3 * v**2 for v in x])
    assert a == pytest.approx(3.0, rel=1e-9) and b == pytest.approx(2.0, abs=1e-12)
    # skipped cells (NaN) are left out; a single usable point gives no fit
    assert fit_power_law(x + [1e5], [3 * v**2 for v in x] + [math.nan])[1] == pytest.approx(2.0)
    assert all(math.isnan(v) for v in fit_power_law([1.0, 2.0], [1.0, math.nan]))


def test_extrapolate_never_below_the_theoretical_exponent():
    assert extrapolate([10, 20], [1.0, 2.0], 40, exponent=3.0) == pytest.approx(16.0)  # fitted b = 1 < 3
    assert extrapolate([10, 20], [1.0, 8.0], 40, exponent=1.0) == pytest.approx(64.0)  # fitted b = 3
    assert extrapolate([], [], 40, exponent=2.0) == 0.0


def test_budgeted_medians_keeps_the_first_call_when_over_budget():
    calls = []
    seconds, rounds = budgeted_medians([lambda: calls.append(1)], [10.0], repeats=5, budget=1.0)
    assert (seconds, rounds, calls) == ([10.0], 1, [])
    seconds, rounds = budgeted_medians([lambda: calls.append(1)], [1e-6], repeats=3, budget=1.0)
    assert rounds == 3 and len(calls) == 3 and seconds[0] >= 0
    _, rounds = budgeted_medians([lambda: None], [0.01], repeats=2, budget=1.0, min_seconds=0.05)
    assert rounds == 5  # short calls: more rounds, up to min_seconds


def test_pairing_rows_fits_and_plot(tmp_path):
    torch.manual_seed(0)
    frame = bench_pairing.write_csv(bench_pairing.run(TINY_PAIRING, log=lambda *_: None), tmp_path / "p.csv",
                                    bench_pairing.COLUMNS)
    assert list(frame.columns) == bench_pairing.COLUMNS
    with_peer = bench_pairing.torchcfm_sampler_class() is not None
    per_n = 2 + 2 * (2 if with_peer else 1)  # sdfm x 2, otfm exact and one Sinkhorn, ours (+ torchcfm)
    assert len(frame) == 2 * per_n + 2 * 2  # n sweep + N sweep (sdfm only)
    ours = frame[frame["impl"] == "ours"]
    assert ours["seconds"].notna().all() and (ours["seconds"] > 0).all()
    if with_peer:
        assert frame.loc[(frame["method"] == "otfm") & (frame["impl"] == "ours"), "ratio_vs_torchcfm"].notna().all()
    exact = frame[(frame["solver"] == "exact")]
    assert exact["pair_sqdist"].notna().all()
    fits = bench_pairing.write_csv(bench_pairing.fits(frame), tmp_path / "p_fit.csv", bench_pairing.FIT_COLUMNS)
    assert list(fits.columns) == bench_pairing.FIT_COLUMNS
    assert set(fits["sweep"]) == {"n", "N"} and fits["b"].notna().all()
    bench_pairing.plot(frame, fits, tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 0


def test_pairing_skips_cells_over_budget():
    grid = {**TINY_PAIRING, "n": [16, 32, 64], "N_sweep": [100], "budget": 1e-7}
    frame = pd.DataFrame(bench_pairing.run(grid, with_torchcfm=False, log=lambda *_: None),
                         columns=bench_pairing.COLUMNS)
    n_sweep = frame[frame["sweep"] == "n"]
    first, later = n_sweep[n_sweep["n"] == 16], n_sweep[n_sweep["n"] > 16]
    assert first["seconds"].notna().all()  # nothing to predict from: measured
    assert later["seconds"].isna().all() and later["note"].str.startswith("skipped").all()


def test_train_step_rows_profile_and_plot(tmp_path):
    case = bench_train_step.Case(
        model="mlp", dataset="tiny", data=torch.randn(200, 2), sample_shape=(2,),
        model_settings={"kind": "mlp", "hidden": 16, "depth": 1},
        train_settings={"batch_size": 32, "lr": 1e-3},
        methods=[("fm", 0.0), ("otfm", 0.0), ("sdfm", 0.0), ("sdfm", 0.1)])
    rows = bench_train_step.measure(case, steps=2, rounds=1, log=lambda *_: None)
    frame = pd.DataFrame(rows)
    assert list(frame.columns) == bench_train_step.COLUMNS
    assert len(frame) == 4 and (frame["total_s"] > 0).all()
    fm = frame[frame["method"] == "fm"].iloc[0]
    assert fm["added_vs_fm"] == 0 and fm["overhead_vs_fm"] == 0
    sdfm = frame[frame["method"] == "sdfm"]
    assert sdfm["target_met"].isin([True, False]).all() and (sdfm["pairing_s"] > 0).all()
    bench_train_step.plot(frame, tmp_path / "t.png", "cpu")
    assert (tmp_path / "t.png").stat().st_size > 0
    profile = bench_train_step.profile(case, "sdfm", 0.0, steps=2, top=5)
    assert [set(r) for r in profile][0] == set(bench_train_step.PROFILE_COLUMNS)
    assert any(r["op"] == "coupling.sample (inclusive)" for r in profile)


def test_train_step_cases_follow_config_yaml():
    mlp, unet = bench_train_step.config_cases()
    assert (mlp.dataset, mlp.model_settings["depth"], mlp.model_settings["hidden"], mlp.train_settings["batch_size"]) \
        == ("checkerboard", 3, 256, 256)
    assert unet.dataset == "digits" and unet.train_settings["batch_size"] == 128
    assert {k: unet.model_settings[k] for k in ("base_channels", "channel_mults", "num_res_blocks")} \
        == {"base_channels": 16, "channel_mults": [1, 2], "num_res_blocks": 1}
    assert ("sdfm", 0.1) in mlp.methods and ("otfm", 0.0) in mlp.methods


@pytest.mark.slow
def test_gpu_benchmark_runs_at_toy_size_on_cpu(tmp_path):
    import bench_gpu

    frames = bench_gpu.main(["--quick", "--device", "cpu", "--out-dir", str(tmp_path)])
    for section in bench_gpu.SECTIONS:
        frame = pd.read_csv(tmp_path / f"{section}_cpu.csv")
        assert len(frame) == len(frames[section]) > 0
    assert (tmp_path / "gpu_cpu.png").stat().st_size > 0 and (tmp_path / "peers_ratio_cpu.csv").exists()
    kernel = frames["kernel"]
    assert set(kernel["path"]) == {"torch"} and (kernel["ratio"] > 0).all()  # no fused path off CUDA
    pairing = frames["pairing"]
    assert set(pairing["method"]) == {"exact-fp32", "screened-bf16"}
    assert (pairing.loc[pairing["epsilon_rel"] == 0, "identical"] == 1.0).all()
    assert list(frames["ddp"]["ranks"]) == [1, 2]
    assert (pairing[["fm_step_fp32_s", "fm_step_tf32_s", "fm_step_bf16_s"]] > 0).all().all()
    train_ddp = frames["train_ddp"]
    assert list(train_ddp["ranks"]) == [1, 2] and (train_ddp["step_s"] > 0).all()


def test_gpu_benchmark_time_to_target():
    import bench_gpu

    frame = pd.DataFrame([dict(problem="p", method="sdfm", seconds=2.0, chi2=0.04),
                          dict(problem="p", method="pot", seconds=3.0, chi2=0.2),
                          dict(problem="p", method="pot", seconds=7.0, chi2=0.045),
                          dict(problem="q", method="sdfm", seconds=1.0, chi2=0.03),
                          dict(problem="q", method="pot", seconds=9.0, chi2=0.3)])
    rows = {r["problem"]: r for r in bench_gpu.time_to_target(frame)}
    assert rows["p"]["ratio"] == pytest.approx(3.5) and rows["q"]["ratio"] == math.inf


def test_otfm_large_batch_benchmark_rows_skips_and_plot(tmp_path):
    import bench_otfm_large_batch as bench

    rows = bench.run([64], [32, 64], epsilons=(0.0,), repeats=1, budget=1e-9, log=lambda *_: None)
    frame = bench.write_csv(rows, tmp_path / "o.csv", bench.COLUMNS)
    assert list(frame.columns) == bench.COLUMNS
    ot = frame[frame.method == "otfm"].set_index("n")
    assert ot.loc[32, "seconds_per_pair"] > 0 and ot.loc[32, "ratio_vs_sdfm"] > 0
    assert ot.loc[32, "pair_sqdist"] < ot.loc[32, "indep_sqdist"]  # OT pairs are closer than independent ones
    assert math.isnan(ot.loc[64, "seconds_per_pair"]) and "predicted" in ot.loc[64, "note"]  # over the budget
    assert bench._skip(None, 20_000, 3.0, 1e9, 4e9).startswith("n x n float64")
    assert bench._skip(None, 20_000, 2.0, 1e9, 4e9, blocked=True) == ""  # no n x n matrix to hold
    bench.plot(frame, tmp_path / "o.png")
    assert (tmp_path / "o.png").stat().st_size > 10_000


@pytest.mark.timeout(300)
def test_otfm_large_batch_benchmark_times_the_blocked_and_sharded_solves(tmp_path):
    import bench_otfm_large_batch as bench

    rows = bench.run([64], [32, 64], epsilons=(0.0, 0.1), repeats=1, blocked_from=64, ranks=2, log=lambda *_: None)
    frame = bench.write_csv(rows, tmp_path / "o.csv", bench.COLUMNS)
    ot = frame[frame.method == "otfm"]
    sharded = ot[ot.ranks == 2]
    assert list(sharded.n) == [64] and list(sharded.epsilon) == [0.1]  # only the blocked eps > 0 cell
    assert "sharded over 2" in sharded.note.iloc[0] and sharded.seconds_per_plan.iloc[0] > 0
    one = ot[(ot.ranks == 1) & (ot.n == 64) & (ot.epsilon == 0.1)].iloc[0]
    assert one.note == "blocked" and ot[(ot.n == 32) & (ot.epsilon == 0.1)].note.iloc[0] == ""
    # pairs drawn from the same plan as one process's: as close as its pairs, closer than independent ones
    assert sharded.pair_sqdist.iloc[0] == pytest.approx(one.pair_sqdist, rel=0.05)
    assert sharded.pair_sqdist.iloc[0] < 0.95 * one.indep_sqdist
    bench.plot(frame, tmp_path / "o.png")
