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
        train=lambda wc: settings(wc.dataset, "train"),
        potential=lambda wc, input: f"--potential {input.potential}" if wc.method == "sdfm" else "",
        conditional=lambda wc: conditional_flag(wc.dataset),
        checkpoint=f"{RUN_DIR}/checkpoint.pt",
    log:
        f"{R}/logs/train/{{dataset}}/{{method}}-eps{{epsilon}}-seed{{seed}}.log",
    benchmark:
        f"{R}/benchmarks/train/{{dataset}}/{{method}}-eps{{epsilon}}-seed{{seed}}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=240,
        gpu=GPU,
    shell:
        "sdfm train {JOB_ARGS} --threads {threads} --data {input.data} --dataset {wildcards.dataset} "
        "--method {wildcards.method} --epsilon {wildcards.epsilon} --seed {wildcards.seed} "
        "--model '{params.model}' --train '{params.train}' {params.potential} {params.conditional} "
        "--out {output.model} --checkpoint {params.checkpoint} > {log} 2>&1"
