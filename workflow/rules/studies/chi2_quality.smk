# Sample quality vs chi^2 study (config key `studies.chi2_quality`; sdfm/studies/chi2_quality.py): per data
# set of the study and chi^2 level, a potential fitted with the data set's settings until the upper confidence
# bound of its chi^2 reaches the level; an SD-FM model trained on it per seed and scored as the grid's runs
# (the data set's prepared data, FeatureNet and FID statistics); then a table, figure and report section.
# Does nothing without the key.
if "chi2_quality" in config.get("studies", {}):
    import re
    from types import SimpleNamespace

    from sdfm.studies import registry as _study_registry
    from sdfm.studies.chi2_quality import level_label, run_label, study_settings

    CHI2_STUDY = {**_study_registry()["chi2_quality"].defaults, **config["studies"]["chi2_quality"]}
    CHI2_DIR = f"{R}/studies/chi2_quality"
    CHI2_RUN = CHI2_DIR + "/{chi2set}/chi2-{level}"
    CHI2_LEVELS = {level_label(level): level for level in CHI2_STUDY["levels"]}
    CHI2_EPSILON = epsilon_label(CHI2_STUDY["epsilon"])

    wildcard_constraints:
        chi2set="|".join(CHI2_STUDY["datasets"]),
        level="|".join(re.escape(label) for label in CHI2_LEVELS),

    def chi2_fit_settings(wc):
        return json.dumps(study_settings(json.loads(potential_settings(wc.chi2set)), CHI2_STUDY, CHI2_LEVELS[wc.level]))

    rule chi2_quality_potential:
        input:
            data=f"{R}/data/{{chi2set}}.npz",
        output:
            potential=f"{CHI2_RUN}/potential.pt",
            summary=f"{CHI2_RUN}/potential.json",
        params:
            settings=chi2_fit_settings,
            arguments=lambda wc: potential_arguments(wc.chi2set),
            launcher=lambda wc: potential_launcher(wc.chi2set),
            distributed=lambda wc: "--distributed" if potential_processes(wc.chi2set) > 1 else "",
            conditional=lambda wc: conditional_flag(wc.chi2set),
            label=lambda wc: run_label(wc.chi2set, wc.level),
        log:
            f"{R}/logs/studies/chi2_quality/{{chi2set}}/chi2-{{level}}/potential.log",
        benchmark:
            f"{R}/benchmarks/studies/chi2_quality/{{chi2set}}/chi2-{{level}}/potential.tsv"
        threads: lambda wc: potential_processes(wc.chi2set)
        resources:
            mem_mb=rule_resource("chi2_quality_potential", "mem_mb"),
            runtime=rule_resource("chi2_quality_potential", "runtime"),
            gpu=lambda wc: rule_gpus("chi2_quality_potential", potential_processes(wc.chi2set)),
        shell:
            "{params.launcher} fit-potential {JOB_ARGS} --threads 1 --data {input.data:q} --dataset {params.label} "
            "--epsilon {CHI2_EPSILON} --settings {params.settings:q} {params.arguments}{params.conditional} "
            "{params.distributed} --out {output.potential:q} --summary {output.summary:q} > {log:q} 2>&1"

    rule chi2_quality_train:
        input:
            data=f"{R}/data/{{chi2set}}.npz",
            potential=f"{CHI2_RUN}/potential.pt",
        output:
            model=f"{CHI2_RUN}/seed{{seed}}/model.pt",
            summary=f"{CHI2_RUN}/seed{{seed}}/model.json",
        params:
            model=lambda wc: settings(wc.chi2set, "model"),
            train=lambda wc: train_settings(wc.chi2set),
            launcher=lambda wc: train_launcher(wc.chi2set),
            distributed=lambda wc: "--distributed" if train_processes(wc.chi2set) > 1 else "",
            conditional=lambda wc: conditional_flag(wc.chi2set),
            label=lambda wc: run_label(wc.chi2set, wc.level),
            checkpoint=f"{CHI2_RUN}/seed{{seed}}/checkpoint.pt",
        log:
            f"{R}/logs/studies/chi2_quality/{{chi2set}}/chi2-{{level}}/train-seed{{seed}}.log",
        benchmark:
            f"{R}/benchmarks/studies/chi2_quality/{{chi2set}}/chi2-{{level}}/train-seed{{seed}}.tsv"
        threads: 1
        resources:
            mem_mb=rule_resource("chi2_quality_train", "mem_mb"),
            runtime=rule_resource("chi2_quality_train", "runtime"),
            gpu=lambda wc: rule_gpus("chi2_quality_train", train_processes(wc.chi2set)),
        shell:
            "{params.launcher} train {JOB_ARGS} {params.distributed} --threads {threads} --data {input.data:q} "
            "--dataset {params.label} --method sdfm --epsilon {CHI2_EPSILON} --seed {wildcards.seed} "
            "--model {params.model:q} --train {params.train:q} --potential {input.potential:q} {params.conditional} "
            "--out {output.model:q} --checkpoint {params.checkpoint:q} > {log:q} 2>&1"

    def chi2_evaluate_inputs(wc):
        """The run's model, and what the grid's evaluate jobs of the data set read (data, FeatureNet, FID)."""
        inputs = evaluate_inputs(SimpleNamespace(dataset=wc.chi2set, method="sdfm", epsilon=CHI2_EPSILON, seed=wc.seed))
        inputs["model"] = CHI2_RUN.format(chi2set=wc.chi2set, level=wc.level) + f"/seed{wc.seed}/model.pt"
        return inputs

    rule chi2_quality_evaluate:
        input:
            unpack(chi2_evaluate_inputs),
        output:
            f"{CHI2_RUN}/seed{{seed}}/metrics.csv",
        params:
            settings=lambda wc: settings(wc.chi2set, "evaluate"),
            feature_net=input_flag("--feature-net", "feature_net"),
            fid_reference=input_flag("--fid-reference", "fid_reference"),
            batch_size=lambda wc: dataset_settings(config, wc.chi2set)["train"]["batch_size"],
            label=lambda wc: run_label(wc.chi2set, wc.level),
        log:
            f"{R}/logs/studies/chi2_quality/{{chi2set}}/chi2-{{level}}/evaluate-seed{{seed}}.log",
        benchmark:
            f"{R}/benchmarks/studies/chi2_quality/{{chi2set}}/chi2-{{level}}/evaluate-seed{{seed}}.tsv"
        threads: 1
        resources:
            mem_mb=rule_resource("chi2_quality_evaluate", "mem_mb"),
            runtime=rule_resource("chi2_quality_evaluate", "runtime"),
            gpu=rule_gpus("chi2_quality_evaluate"),
        shell:
            "sdfm evaluate {JOB_ARGS} --threads {threads} --data {input.data:q} --model {input.model:q} "
            "--dataset {params.label} --method sdfm --epsilon {CHI2_EPSILON} --seed {wildcards.seed} "
            "--batch-size {params.batch_size} --settings {params.settings:q} {params.feature_net} "
            "{params.fid_reference} --out {output:q} > {log:q} 2>&1"

    def chi2_runs():
        """``{dataset: {level: {"summary", "metrics": [one per seed]}}}``, as `sdfm chi2-quality-study --runs` reads it."""
        runs = {}
        for dataset in CHI2_STUDY["datasets"]:
            for label in CHI2_LEVELS:
                run = CHI2_RUN.format(chi2set=dataset, level=label)
                runs.setdefault(dataset, {})[label] = {
                    "summary": f"{run}/potential.json",
                    "metrics": [f"{run}/seed{seed}/metrics.csv" for seed in config["seeds"]]}
        return runs

    # the grid's metrics.csv gives the FM and SD-FM reference lines when the grid trains the study's data sets
    CHI2_GRID = any(job["dataset"] in CHI2_STUDY["datasets"] for job in JOBS)

    CHI2_RUNS = chi2_runs()

    rule chi2_quality_study:
        input:
            summaries=[run["summary"] for levels in CHI2_RUNS.values() for run in levels.values()],
            metrics=[path for levels in CHI2_RUNS.values() for run in levels.values() for path in run["metrics"]],
            grid=[f"{R}/metrics.csv"] if CHI2_GRID else [],
        output:
            figure=report(f"{REPORTS}/figures/study_chi2_quality.png", caption="../../report/study_chi2_quality.rst",
                          category="6. Studies", subcategory="Quality vs chi^2"),
            pdf=f"{REPORTS}/figures/study_chi2_quality.pdf",
            tables=[f"{CHI2_DIR}/{d}.csv" for d in CHI2_STUDY["datasets"]],
            section=f"{CHI2_DIR}/section.md",
        params:
            runs=json.dumps(CHI2_RUNS),
            grid=lambda wc, input: f"--metrics {shlex.quote(input.grid[0])}" if input.grid else "",
        log:
            f"{R}/logs/studies/chi2_quality/report.log",
        benchmark:
            f"{R}/benchmarks/studies/chi2_quality/report.tsv"
        threads: 1
        shell:
            "sdfm chi2-quality-study --runs {params.runs:q} {params.grid} --epsilon {CHI2_EPSILON} "
            "--tables-dir {CHI2_DIR:q} --figure {output.figure:q} --section {output.section:q} "
            "--reports-dir {REPORTS:q} > {log:q} 2>&1"

    localrules: chi2_quality_study

    STUDY_TARGETS += [f"{REPORTS}/figures/study_chi2_quality.png", f"{CHI2_DIR}/section.md"]
    STUDY_SECTIONS.append(f"{CHI2_DIR}/section.md")
