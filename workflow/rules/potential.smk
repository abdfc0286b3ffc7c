rule fit_potential:
    input:
        f"{R}/data/{{dataset}}.npz",
    output:
        potential=f"{R}/potentials/{{dataset}}/eps{{epsilon}}.pt",
        summary=f"{R}/potentials/{{dataset}}/eps{{epsilon}}.json",
    params:
        settings=lambda wc: settings(wc.dataset, "potential"),
        conditional=lambda wc: conditional_flag(wc.dataset),
    log:
        f"{R}/logs/potential/{{dataset}}/eps{{epsilon}}.log",
    benchmark:
        f"{R}/benchmarks/potential/{{dataset}}/eps{{epsilon}}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
        gpu=GPU,
    shell:
        "sdfm fit-potential {JOB_ARGS} --threads {threads} --data {input} --dataset {wildcards.dataset} "
        "--epsilon {wildcards.epsilon} --settings '{params.settings}' {params.conditional} "
        "--out {output.potential} --summary {output.summary} > {log} 2>&1"
