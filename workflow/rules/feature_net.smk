rule train_feature_net:
    input:
        f"{R}/data/{{dataset}}.npz",
    output:
        f"{R}/feature_nets/{{dataset}}.pt",
    params:
        settings=lambda wc: settings(wc.dataset, "feature_net"),
    log:
        f"{R}/logs/feature_net/{{dataset}}.log",
    benchmark:
        f"{R}/benchmarks/feature_net/{{dataset}}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=GPU,
    shell:
        "sdfm train-feature-net {JOB_ARGS} --threads {threads} --data {input} --dataset {wildcards.dataset} "
        "--settings '{params.settings}' --out {output} > {log} 2>&1"
