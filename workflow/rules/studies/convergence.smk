# Convergence-rate study (config key `studies.convergence`): chi^2 of the averaged potential after K SGD
# steps (log-spaced K) for each N, batch size, relative epsilon, solver settings and seed, and the fitted
# exponent b of chi^2 ~ K^b against the -1/2 of the quoted rate (sdfm/studies/convergence.py).
# Does nothing without the key.
if "convergence" in config.get("studies", {}):
    CONVERGENCE = config["studies"]["convergence"]
    CONVERGENCE_DIR = f"{R}/studies/convergence"
    CONVERGENCE_SETTINGS = json.dumps({k: v for k, v in CONVERGENCE.items() if k != "dataset"})

    rule convergence_study:
        input:
            f"{R}/data/{CONVERGENCE['dataset']}.npz",
        output:
            f"{CONVERGENCE_DIR}/chi2.csv",
        params:
            dataset=CONVERGENCE["dataset"],
            settings=CONVERGENCE_SETTINGS,
        log:
            f"{R}/logs/studies/convergence/study.log",
        benchmark:
            f"{R}/benchmarks/studies/convergence/study.tsv"
        threads: 1
        resources:
            mem_mb=rule_resource("convergence_study", "mem_mb"),
            runtime=rule_resource("convergence_study", "runtime"),
            gpu=rule_gpus("convergence_study"),
        shell:
            "sdfm convergence-study {JOB_ARGS} --threads {threads} --data {input:q} --dataset {params.dataset:q} "
            "--settings {params.settings:q} --out {output:q} > {log:q} 2>&1"

    rule convergence_report:
        input:
            f"{CONVERGENCE_DIR}/chi2.csv",
        output:
            figure=report(f"{REPORTS}/figures/study_convergence.png", caption="../../report/study_convergence.rst",
                          category="6. Studies", subcategory="Convergence rate"),
            pdf=f"{REPORTS}/figures/study_convergence.pdf",
            fits=f"{CONVERGENCE_DIR}/exponents.csv",
            section=f"{CONVERGENCE_DIR}/section.md",
        params:
            settings=CONVERGENCE_SETTINGS,
        log:
            f"{R}/logs/studies/convergence/report.log",
        benchmark:
            f"{R}/benchmarks/studies/convergence/report.tsv"
        threads: 1
        shell:
            "sdfm convergence-report --input {input:q} --settings {params.settings:q} --figure {output.figure:q} "
            "--fits {output.fits:q} --section {output.section:q} --reports-dir {REPORTS:q} > {log:q} 2>&1"

    localrules: convergence_report

    STUDY_TARGETS += [f"{REPORTS}/figures/study_convergence.png", f"{CONVERGENCE_DIR}/section.md"]
    STUDY_SECTIONS.append(f"{CONVERGENCE_DIR}/section.md")
