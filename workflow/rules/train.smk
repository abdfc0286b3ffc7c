def train_processes(dataset):
    """Data-parallel ranks of one train job (``train.processes``)."""
    return dataset_settings(config, dataset)["train"].get("processes", 1)


def train_settings(dataset):
    """The train settings of `dataset` as JSON (``processes`` picks the launcher instead)."""
    return json.dumps({k: v for k, v in dataset_settings(config, dataset)["train"].items() if k != "processes"})


def train_launcher(dataset):
    """``sdfm``, or ``torchrun`` with one rank per process and ``--distributed`` when ``train.processes > 1``."""
    k = train_processes(dataset)
    return "sdfm" if k == 1 else f"torchrun --standalone --nproc-per-node {k} -m sdfm.cli"


def otfm_flags(method, dataset):
    """OT-FM's ``--ot-batch-size n`` (the data set's, else methods.otfm.ot_batch_size) and ``--epsilon-reference``, when set."""
    if method != "otfm":
        return ""
    n = dataset_settings(config, dataset)["ot_batch_size"]
    return (f"--ot-batch-size {n} " if n is not None else "") + epsilon_reference_flag()


def train_inputs(wc):
    inputs = {"data": f"{R}/data/{wc.dataset}.npz"}
    if wc.method == "sdfm":
        inputs["potential"] = f"{R}/potentials/{wc.dataset}/eps{wc.epsilon}.pt"
    return inputs


rule train:
    input:
        unpack(train_inputs),
    output:
        model=f"{RUN_DIR}/model.pt",
        summary=f"{RUN_DIR}/model.json",
    params:
        model=lambda wc: settings(wc.dataset, "model"),
        train=lambda wc: train_settings(wc.dataset),
        launcher=lambda wc: train_launcher(wc.dataset),
        distributed=lambda wc: "--distributed" if train_processes(wc.dataset) > 1 else "",
        potential=lambda wc, input: f"--potential {shlex.quote(input.potential)}" if wc.method == "sdfm" else "",
        conditional=lambda wc: conditional_flag(wc.dataset),
        otfm=lambda wc: otfm_flags(wc.method, wc.dataset),
        checkpoint=f"{RUN_DIR}/checkpoint.pt",
    log:
        f"{R}/logs/train/{{dataset}}/{{method}}-eps{{epsilon}}-seed{{seed}}.log",
    benchmark:
        f"{R}/benchmarks/train/{{dataset}}/{{method}}-eps{{epsilon}}-seed{{seed}}.tsv"
    threads: 1
    resources:
        mem_mb=rule_resource("train", "mem_mb"),
        runtime=rule_resource("train", "runtime"),
        gpu=lambda wc: rule_gpus("train", train_processes(wc.dataset)),
    shell:
        "{params.launcher} train {JOB_ARGS} {params.distributed} --threads {threads} --data {input.data:q} "
        "--dataset {wildcards.dataset} "
        "--method {wildcards.method} --epsilon {wildcards.epsilon} --seed {wildcards.seed} "
        "--model {params.model:q} --train {params.train:q} {params.potential} {params.conditional} {params.otfm}"
        "--out {output.model:q} --checkpoint {params.checkpoint:q} > {log:q} 2>&1"
