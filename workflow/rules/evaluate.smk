rule evaluate:
    input:
        data=f"{R}/data/{{dataset}}.npz",
        model=f"{RUN_DIR}/model.pt",
    output:
        f"{RUN_DIR}/metrics.csv",
    params:
        settings=lambda wc: settings(wc.dataset, "evaluate"),
        batch_size=lambda wc: dataset_settings(config, wc.dataset)["train"]["batch_size"],
    log:
        f"{R}/logs/evaluate/{{dataset}}/{{method}}-eps{{epsilon}}-seed{{seed}}.log",
    benchmark:
        f"{R}/benchmarks/evaluate/{{dataset}}/{{method}}-eps{{epsilon}}-seed{{seed}}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
        gpu=GPU,
    shell:
        "sdfm evaluate {JOB_ARGS} --threads {threads} --data {input.data} --model {input.model} "
        "--dataset {wildcards.dataset} --method {wildcards.method} --epsilon {wildcards.epsilon} "
        "--seed {wildcards.seed} --batch-size {params.batch_size} --settings '{params.settings}' "
        "--out {output} > {log} 2>&1"
