# Performance benchmarks (benchmarks/*.py), never part of `rule all`:
#   snakemake --cores 2 bench                     the quick grids (minutes on 2 cores)
#   SDFM_BENCH_FULL=1 snakemake --cores 2 bench   the full grids (hours on a CPU)
#   snakemake --cores 2 bench_pairing             one benchmark
# Each writes its CSV and PNG to <reports_dir>/bench/. A job takes every core given to Snakemake
# (threads above any --cores are capped to it),
# so no two benchmarks run (and disturb each other's timings) at once. Switching
# SDFM_BENCH_FULL changes the rules' params, which makes Snakemake rerun them.
import os

BENCH_FULL = os.environ.get("SDFM_BENCH_FULL", "").lower() in ("1", "true", "yes")
BENCH_FLAGS = "" if BENCH_FULL else "--quick"
BENCH_SRC = f"{workflow.basedir}/benchmarks"
BENCH_OUT = f"{REPORTS}/bench"
BENCHMARKS = ["kernel", "peers", "memory", "pairing", "train_step", "topk"]


def bench_shell(name):
    """One command: the benchmark script with this run's flags, its CSV path, its log."""
    return (f"OMP_NUM_THREADS={{threads}} python {shlex.quote(f'{BENCH_SRC}/bench_{name}.py')} {{params.flags}} "
            f"--out {{output.csv:q}} > {{log:q}} 2>&1")


rule bench:
    input:
        [f"{BENCH_OUT}/{name}.csv" for name in BENCHMARKS],


rule bench_kernel:
    output:
        csv=f"{BENCH_OUT}/kernel.csv",
        png=f"{BENCH_OUT}/kernel.png",
    params:
        flags=BENCH_FLAGS,
    log:
        f"{R}/logs/bench/kernel.log",
    benchmark:
        f"{R}/benchmarks/bench/kernel.tsv"
    threads: 1024  # capped at --cores: a benchmark gets every core, so none run side by side
    shell:
        bench_shell("kernel")


rule bench_peers:
    output:
        csv=f"{BENCH_OUT}/peers.csv",
        png=f"{BENCH_OUT}/peers.png",
    params:
        flags=BENCH_FLAGS,
    log:
        f"{R}/logs/bench/peers.log",
    benchmark:
        f"{R}/benchmarks/bench/peers.tsv"
    threads: 1024  # capped at --cores: a benchmark gets every core, so none run side by side
    shell:
        bench_shell("peers")


rule bench_memory:
    output:
        csv=f"{BENCH_OUT}/memory.csv",
        png=f"{BENCH_OUT}/memory.png",
    params:
        flags=BENCH_FLAGS,
    log:
        f"{R}/logs/bench/memory.log",
    benchmark:
        f"{R}/benchmarks/bench/memory.tsv"
    threads: 1024  # capped at --cores: a benchmark gets every core, so none run side by side
    shell:
        bench_shell("memory")


rule bench_pairing:
    output:
        csv=f"{BENCH_OUT}/pairing.csv",
        fit=f"{BENCH_OUT}/pairing_fit.csv",
        png=f"{BENCH_OUT}/pairing.png",
    params:
        flags=BENCH_FLAGS,
    log:
        f"{R}/logs/bench/pairing.log",
    benchmark:
        f"{R}/benchmarks/bench/pairing.tsv"
    threads: 1024  # capped at --cores: a benchmark gets every core, so none run side by side
    shell:
        bench_shell("pairing")


rule bench_train_step:
    output:
        csv=f"{BENCH_OUT}/train_step.csv",
        png=f"{BENCH_OUT}/train_step.png",
    params:
        flags=BENCH_FLAGS,
    log:
        f"{R}/logs/bench/train_step.log",
    benchmark:
        f"{R}/benchmarks/bench/train_step.tsv"
    threads: 1024  # capped at --cores: a benchmark gets every core, so none run side by side
    shell:
        bench_shell("train_step")


rule bench_topk:
    output:
        csv=f"{BENCH_OUT}/topk.csv",
        png=f"{BENCH_OUT}/topk.png",
    params:
        flags=BENCH_FLAGS,
    log:
        f"{R}/logs/bench/topk.log",
    benchmark:
        f"{R}/benchmarks/bench/topk.tsv"
    threads: 1024  # capped at --cores: a benchmark gets every core, so none run side by side
    shell:
        bench_shell("topk")
