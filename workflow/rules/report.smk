from sdfm.report.kinds import FIGURE_KINDS, applicable_kinds, split_figure_name


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
        "sdfm aggregate --inputs {input:q} --out {output:q} > {log:q} 2>&1"


# The report's figures, <dataset>_<kind>.png (+ .pdf): the kinds of sdfm.report.kinds that apply to each data
# set (its facts taken from the config here, from the results in sdfm.report.document), each with its caption
# workflow/report/<kind>.rst and its category.
def figure_kinds(dataset):
    """The figures drawn for `dataset` (the same table and rule as sdfm.report.document for a finished run)."""
    jobs = [j for j in JOBS if j["dataset"] == dataset]
    merged = dataset_settings(config, dataset)
    guidance = {float(g) for g in merged["evaluate"].get("guidance", [1.0])} if merged["conditional"] else {1.0}
    facts = {"epsilons": len({j["epsilon"] for j in jobs if j["method"] != "fm"}), "guidance_scales": len(guidance),
             "potentials": bool(potentials_of(dataset)), "kind": merged["kind"],
             "superres": merged["superres"] is not None}
    return applicable_kinds(facts)


FIGURES = [f"{d}_{k}" for d in config["datasets"] for k in figure_kinds(d)]
FIRST_SEED = min(config["seeds"])


def figure_output(name):
    dataset, kind = split_figure_name(name)
    return report(f"{REPORTS}/figures/{name}.png", caption=f"../report/{FIGURE_KINDS[kind].caption}",
                  category=FIGURE_KINDS[kind].category, subcategory=dataset,
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
        experiment=config["experiment_name"],
        config_json=json.dumps(config, default=str),
        repo=workflow.basedir,
    log:
        f"{R}/logs/report.log",
    benchmark:
        f"{R}/benchmarks/report.tsv"
    threads: 1
    shell:
        "sdfm report --experiment {params.experiment:q} --metrics {input.metrics:q} "
        "--summaries {input.summaries:q} --train-summaries {input.train_summaries:q} --data {input.data:q} "
        "--benchmarks {params.benchmarks:q} --figures {params.figures} --config-json {params.config_json:q} "
        "--repo {params.repo:q} --sections {input.sections:q} --out-dir {REPORTS:q} > {log:q} 2>&1"
