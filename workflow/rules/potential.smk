def potential_processes(dataset):
    """Processes of one potential fit: ``potential.processes`` ranks, each holding a shard of the points."""
    return dataset_settings(config, dataset)["potential"].get("processes", 1)


def potential_settings(dataset):
    """The solver settings of `dataset` as JSON (``processes`` picks the launcher instead)."""
    solver = {k: v for k, v in dataset_settings(config, dataset)["potential"].items() if k != "processes"}
    return json.dumps(solver)


def potential_launcher(dataset):
    """``sdfm``, or ``torchrun`` with one rank per shard and ``--distributed`` when ``processes > 1``."""
    k = potential_processes(dataset)
    return "sdfm" if k == 1 else f"torchrun --standalone --nproc-per-node {k} -m sdfm.cli"


rule fit_potential:
    input:
        f"{R}/data/{{dataset}}.npz",
    output:
        potential=f"{R}/potentials/{{dataset}}/eps{{epsilon}}.pt",
        summary=f"{R}/potentials/{{dataset}}/eps{{epsilon}}.json",
    params:
        settings=lambda wc: potential_settings(wc.dataset),
        launcher=lambda wc: potential_launcher(wc.dataset),
        distributed=lambda wc: "--distributed" if potential_processes(wc.dataset) > 1 else "",
        conditional=lambda wc: conditional_flag(wc.dataset),
    log:
        f"{R}/logs/potential/{{dataset}}/eps{{epsilon}}.log",
    benchmark:
        f"{R}/benchmarks/potential/{{dataset}}/eps{{epsilon}}.tsv"
    threads: lambda wc: potential_processes(wc.dataset)
    resources:
        mem_mb=4000,
        runtime=120,
        gpu=lambda wc: GPU * potential_processes(wc.dataset),
    shell:
        "{params.launcher} fit-potential {JOB_ARGS} --threads 1 --data {input} --dataset {wildcards.dataset} "
        "--epsilon {wildcards.epsilon} --settings '{params.settings}' {params.conditional} "
        "{params.distributed} --out {output.potential} --summary {output.summary} > {log} 2>&1"
