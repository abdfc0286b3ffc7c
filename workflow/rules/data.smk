rule prepare_data:
    output:
        f"{R}/data/{{dataset}}.npz",
    params:
        source=lambda wc: config["datasets"][wc.dataset]["source"],
        options=lambda wc: json.dumps(config["datasets"][wc.dataset].get("options", {})),
    log:
        f"{R}/logs/prepare/{{dataset}}.log",
    benchmark:
        f"{R}/benchmarks/prepare/{{dataset}}.tsv"
    threads: 1
    resources:
        mem_mb=rule_resource("prepare_data", "mem_mb"),
        runtime=rule_resource("prepare_data", "runtime"),
    shell:
        "sdfm prepare-data {JOB_ARGS} --threads {threads} --dataset {wildcards.dataset} "
        "--source {params.source:q} --options {params.options:q} --out {output:q} > {log:q} 2>&1"
