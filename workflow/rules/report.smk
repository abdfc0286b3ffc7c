# Cheap jobs that read every run's outputs: on a cluster they run where Snakemake runs, unqueued.
localrules: aggregate, report


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


# The report's figures, <dataset>_<kind>.png (+ .pdf), each with a caption in workflow/report/.
FIGURE_CATEGORIES = {
    "metrics_vs_nfe": "1. Sample quality vs NFE",
    "metrics_vs_epsilon": "2. Effect of epsilon",
    "trajectories": "3. Trajectories and samples",
    "samples": "3. Trajectories and samples",
    "superres": "3. Trajectories and samples",
    "chi2": "4. Semidiscrete potential",
    "cost": "5. Compute cost",
    "guidance": "6. Classifier-free guidance",
}


def figure_kinds(dataset):
    """The figures drawn for `dataset` (the same choice as sdfm.report for a finished run)."""
    jobs = [j for j in JOBS if j["dataset"] == dataset]
    kinds = ["metrics_vs_nfe"]
    if len({j["epsilon"] for j in jobs if j["method"] != "fm"}) >= 2:
        kinds.append("metrics_vs_epsilon")
    merged = dataset_settings(config, dataset)
    if merged["conditional"] is not None and len({float(g) for g in merged["evaluate"].get("guidance", [1.0])}) >= 2:
        kinds.append("guidance")
    if potentials_of(dataset):
        kinds.append("chi2")
    kinds.append("cost")
    kinds.append("trajectories" if dataset_settings(config, dataset)["kind"] == "points" else "samples")
    if merged["superres"] is not None:  # low-res input | bicubic | methods | truth (sdfm.report_superres)
        kinds.append("superres")
    return kinds


FIGURES = [f"{d}_{k}" for d in config["datasets"] for k in figure_kinds(d)]
FIRST_SEED = min(config["seeds"])


def figure_output(name):
    dataset, kind = name, ""
    for k in FIGURE_CATEGORIES:
        if name.endswith("_" + k):
            dataset, kind = name[: -len(k) - 1], k
    return report(f"{REPORTS}/figures/{name}.png", caption=f"../report/{kind}.rst",
                  category=FIGURE_CATEGORIES[kind], subcategory=dataset,
                  labels={"data set": dataset, "figure": kind.replace("_", " ")})


rule report:
    input:
        metrics=f"{R}/metrics.csv",
        summaries=[f"{R}/potentials/{d}/eps{e}.json" for d in config["datasets"] for e in potentials_of(d)],
        train_summaries=[f"{RUN_DIR}/model.json".format(**j) for j in JOBS],
        # trajectories: the first seed's models of the 2-D data sets, drawn over their data
        models=[f"{RUN_DIR}/model.pt".format(**j) for j in JOBS
                if j["seed"] == FIRST_SEED and dataset_settings(config, j["dataset"])["kind"] == "points"],
        data=[f"{R}/data/{d}.npz" for d in config["datasets"] if dataset_settings(config, d)["kind"] == "points"],
        sections=STUDY_SECTIONS,
    output:
        report=f"{REPORTS}/report.md",
        figures=[figure_output(name) for name in FIGURES],
        pdfs=[f"{REPORTS}/figures/{name}.pdf" for name in FIGURES],
    params:
        figures=" ".join(FIGURES),
        benchmarks=f"{R}/benchmarks",
        config_json=json.dumps(config, default=str),
        repo=workflow.basedir,
    log:
        f"{R}/logs/report.log",
    benchmark:
        f"{R}/benchmarks/report.tsv"
    threads: 1
    shell:
        "sdfm report --experiment '{config[experiment_name]}' --metrics {input.metrics} "
        "--summaries {input.summaries} --train-summaries {input.train_summaries} --data {input.data} "
        "--benchmarks {params.benchmarks} --figures {params.figures} --config-json {params.config_json:q} "
        "--repo {params.repo:q} --sections {input.sections} --out-dir {REPORTS} > {log} 2>&1"
