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
        mem_mb=rule_resource("train_feature_net", "mem_mb"),
        runtime=rule_resource("train_feature_net", "runtime"),
        gpu=rule_gpus("train_feature_net"),
    shell:
        "sdfm train-feature-net {JOB_ARGS} --threads {threads} --data {input:q} --dataset {wildcards.dataset} "
        "--settings {params.settings:q} --out {output:q} > {log:q} 2>&1"
