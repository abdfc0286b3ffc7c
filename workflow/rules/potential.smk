def potential_processes(dataset):
    """Processes of one potential fit: ``potential.processes`` ranks, each holding a shard of the points."""
    return dataset_settings(config, dataset)["potential"].get("processes", 1)


#: potential.* keys that are not the solver's: each travels as its own argument of `sdfm fit-potential`.
JOB_KEYS = ("processes", "reference_batch", "pca_dim")


def potential_settings(dataset):
    """The solver settings of `dataset` as JSON (the JOB_KEYS travel as their own arguments)."""
    solver = {k: v for k, v in dataset_settings(config, dataset)["potential"].items() if k not in JOB_KEYS}
    return json.dumps(solver)


def potential_arguments(dataset):
    """``--reference-batch N``, ``--pca-dim k`` and ``--epsilon-reference`` (when set) of `dataset`'s fit."""
    potential = dataset_settings(config, dataset)["potential"]
    pca = f"--pca-dim {potential['pca_dim']} " if potential.get("pca_dim") is not None else ""
    return f"--reference-batch {potential['reference_batch']} {pca}{epsilon_reference_flag()}"


def epsilon_reference_flag():
    """``--epsilon-reference X`` when the config's ``epsilon_reference`` is not the default ``inner_product``."""
    reference = config.get("epsilon_reference", "inner_product")
    return "" if reference == "inner_product" else f"--epsilon-reference {reference} "


def potential_launcher(dataset):
    """``sdfm``, or ``torchrun`` with one rank per shard and ``--distributed`` when ``processes > 1``."""
    k = potential_processes(dataset)
    return "sdfm" if k == 1 else f"torchrun --standalone --nproc-per-node {k} -m sdfm.cli"


def pca_reference(dataset, epsilon):
    """A PCA fit (``potential.pca_dim``) is compared with the full-space potential at its epsilon of a data
    set with the same source, options and conditioning and no pca_dim, when the config has one."""
    mine = dataset_settings(config, dataset)
    if mine["potential"].get("pca_dim") is None:
        return []
    same = lambda s: (s["source"], s["options"], s["conditional"]) == (mine["source"], mine["options"],
                                                                      mine["conditional"])
    for other in config["datasets"]:
        theirs = dataset_settings(config, other)
        if theirs["potential"].get("pca_dim") is None and same(theirs) and epsilon in potentials_of(other):
            return [f"{R}/potentials/{other}/eps{epsilon}.pt"]
    return []


def fit_potential_inputs(wc):
    return {"data": f"{R}/data/{wc.dataset}.npz", "reference": pca_reference(wc.dataset, wc.epsilon)}


rule fit_potential:
    input:
        unpack(fit_potential_inputs),
    output:
        potential=f"{R}/potentials/{{dataset}}/eps{{epsilon}}.pt",
        summary=f"{R}/potentials/{{dataset}}/eps{{epsilon}}.json",
    params:
        settings=lambda wc: potential_settings(wc.dataset),
        arguments=lambda wc: potential_arguments(wc.dataset),
        launcher=lambda wc: potential_launcher(wc.dataset),
        distributed=lambda wc: "--distributed" if potential_processes(wc.dataset) > 1 else "",
        conditional=lambda wc: conditional_flag(wc.dataset),
        reference=lambda wc: "".join(f"--reference-potential {shlex.quote(p)} "
                                     for p in pca_reference(wc.dataset, wc.epsilon)),
        # epsilon `auto`: the rule that chooses it (methods.sdfm.auto_epsilon; sdfm.ot.auto_epsilon)
        auto=lambda wc: (f"--auto-epsilon {shlex.quote(json.dumps(config['methods']['sdfm'].get('auto_epsilon', {})))} "
                         if wc.epsilon == "auto" else ""),
    log:
        f"{R}/logs/potential/{{dataset}}/eps{{epsilon}}.log",
    benchmark:
        f"{R}/benchmarks/potential/{{dataset}}/eps{{epsilon}}.tsv"
    threads: lambda wc: potential_processes(wc.dataset)
    resources:
        mem_mb=rule_resource("fit_potential", "mem_mb"),
        runtime=rule_resource("fit_potential", "runtime"),
        gpu=lambda wc: rule_gpus("fit_potential", potential_processes(wc.dataset)),
    shell:
        "{params.launcher} fit-potential {JOB_ARGS} --threads 1 --data {input.data:q} --dataset {wildcards.dataset} "
        "--epsilon {wildcards.epsilon} --settings {params.settings:q} {params.arguments}{params.conditional} {params.reference}"
        "{params.auto}{params.distributed} --out {output.potential:q} --summary {output.summary:q} > {log:q} 2>&1"
