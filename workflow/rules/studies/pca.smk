# PCA cost study (config key `studies.pca`): per data set, the potential fitted and queried in the top-k
# principal subspace for each k and in the full space; fit-step and pairing times side by side, chi^2
# and the full-space cost of the pairs (sdfm/studies/pca.py). With data sets of the run fitted with
# `potential.pca_dim`, the section also tabulates their fd per k. Does nothing without the key.
if "pca" in config.get("studies", {}):
    from sdfm.config import data_dimension

    PCA_STUDY = config["studies"]["pca"]
    PCA_DIR = f"{R}/studies/pca"
    PCA_SETTINGS = json.dumps({k: v for k, v in PCA_STUDY.items() if k != "sets"})

    def _pca_set_source(name):
        """(source, options) of a study set: its own, or those of the config's data set of that name."""
        entry = PCA_STUDY["sets"][name]
        if "source" in entry:
            return entry["source"], entry.get("options", {})
        if name not in config["datasets"]:
            sys.stderr.write(f"sdfm: invalid config: config key 'studies.pca.sets.{name}' names no data set of "
                             f"'datasets' and has no 'source'; add one\n")
            sys.exit(1)
        return config["datasets"][name]["source"], config["datasets"][name].get("options", {})

    for _name, _entry in PCA_STUDY["sets"].items():
        _dim = data_dimension(*_pca_set_source(_name))
        if _dim is not None and max(_entry["dims"]) > _dim:
            sys.stderr.write(f"sdfm: invalid config: config key 'studies.pca.sets.{_name}.dims': "
                             f"{max(_entry['dims'])} is above the data dimension {_dim}; use k <= {_dim}\n")
            sys.exit(1)

    def pca_study_data(wc):
        own = "source" in PCA_STUDY["sets"][wc.pcaset]
        return f"{PCA_DIR}/data/{wc.pcaset}.npz" if own else f"{R}/data/{wc.pcaset}.npz"

    # the run's data sets fitted with potential.pca_dim, and the full-space data sets they are compared with
    PCA_RUN = [d for d in config["datasets"] if dataset_settings(config, d)["potential"].get("pca_dim") is not None]
    PCA_RUN_SUMMARIES = sorted({f"{R}/potentials/{d}/eps{e}.json" for d in PCA_RUN for e in potentials_of(d)}
                               | {p.replace(".pt", ".json") for d in PCA_RUN for e in potentials_of(d)
                                  for p in pca_reference(d, e)})

    wildcard_constraints:
        pcaset="[A-Za-z0-9][A-Za-z0-9_-]*",

    rule pca_study_data:
        output:
            f"{PCA_DIR}/data/{{pcaset}}.npz",
        params:
            source=lambda wc: _pca_set_source(wc.pcaset)[0],
            options=lambda wc: json.dumps(_pca_set_source(wc.pcaset)[1]),
        log:
            f"{R}/logs/studies/pca/prepare-{{pcaset}}.log",
        benchmark:
            f"{R}/benchmarks/studies/pca/prepare-{{pcaset}}.tsv"
        threads: 1
        resources:
            mem_mb=rule_resource("pca_study_data", "mem_mb"),
            runtime=rule_resource("pca_study_data", "runtime"),
        shell:
            "sdfm prepare-data {JOB_ARGS} --threads {threads} --dataset {wildcards.pcaset} "
            "--source {params.source:q} --options {params.options:q} --out {output:q} > {log:q} 2>&1"

    rule pca_study:
        input:
            pca_study_data,
        output:
            f"{PCA_DIR}/{{pcaset}}.csv",
        params:
            dims=lambda wc: " ".join(str(k) for k in PCA_STUDY["sets"][wc.pcaset]["dims"]),
            settings=PCA_SETTINGS,
        log:
            f"{R}/logs/studies/pca/{{pcaset}}.log",
        benchmark:
            f"{R}/benchmarks/studies/pca/{{pcaset}}.tsv"
        threads: 1
        resources:
            mem_mb=rule_resource("pca_study", "mem_mb"),
            runtime=rule_resource("pca_study", "runtime"),
            gpu=rule_gpus("pca_study"),
        shell:
            "sdfm pca-study {JOB_ARGS} --threads {threads} --data {input:q} --dataset {wildcards.pcaset} "
            "--dims {params.dims} --settings {params.settings:q} --out {output:q} > {log:q} 2>&1"

    rule pca_study_report:
        input:
            csvs=[f"{PCA_DIR}/{name}.csv" for name in PCA_STUDY["sets"]],
            metrics=[f"{R}/metrics.csv"] if PCA_RUN else [],
            summaries=PCA_RUN_SUMMARIES,
        output:
            figure=report(f"{REPORTS}/figures/study_pca.png", caption="../../report/study_pca.rst",
                          category="6. Studies", subcategory="PCA cost"),
            pdf=f"{REPORTS}/figures/study_pca.pdf",
            section=f"{R}/studies/pca/section.md",
        params:
            metrics=lambda wc, input: f"--metrics {shlex.quote(input.metrics[0])}" if input.metrics else "",
        log:
            f"{R}/logs/studies/pca/report.log",
        benchmark:
            f"{R}/benchmarks/studies/pca/report.tsv"
        threads: 1
        shell:
            "sdfm pca-study-report --inputs {input.csvs:q} {params.metrics} --summaries {input.summaries:q} "
            "--figure {output.figure:q} --section {output.section:q} --reports-dir {REPORTS:q} > {log:q} 2>&1"

    localrules: pca_study_report

    STUDY_TARGETS += [f"{REPORTS}/figures/study_pca.png", f"{R}/studies/pca/section.md"]
    STUDY_SECTIONS.append(f"{R}/studies/pca/section.md")
