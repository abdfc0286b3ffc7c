rule aggregate:
    input:
        [f"{R}/runs/{j['dataset']}/{j['method']}/eps{j['epsilon']}/seed{j['seed']}/metrics.csv" for j in JOBS],
    output:
        f"{R}/metrics.csv",
    log:
        f"{R}/logs/aggregate.log",
    benchmark:
        f"{R}/benchmarks/aggregate.tsv"
    threads: 1
    shell:
        "sdfm aggregate --inputs {input} --out {output} > {log} 2>&1"


rule report:
    input:
        metrics=f"{R}/metrics.csv",
        summaries=[f"{R}/potentials/{d}/eps{e}.json" for d in config["datasets"] for e in potentials_of(d)],
    output:
        f"{REPORTS}/report.md",
    log:
        f"{R}/logs/report.log",
    benchmark:
        f"{R}/benchmarks/report.tsv"
    threads: 1
    shell:
        "sdfm report --experiment '{config[experiment_name]}' --metrics {input.metrics} "
        "--summaries {input.summaries} --out-dir {REPORTS} > {log} 2>&1"
