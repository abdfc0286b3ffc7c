# Adaptive-epsilon study (config key `studies.adaptive_epsilon`): SD-FM at epsilon `auto` against the
# fixed epsilons of methods.sdfm.epsilons, per data set (sdfm/studies/adaptive_epsilon.py). The grid's
# own jobs do the work; this rule draws the figure and writes the report section. Does nothing without the key.
if "adaptive_epsilon" in config.get("studies", {}):
    ADAPTIVE_DIR = f"{R}/studies/adaptive_epsilon"

    rule adaptive_epsilon_study:
        input:
            metrics=f"{R}/metrics.csv",
            summaries=[f"{R}/potentials/{d}/epsauto.json" for d in config["datasets"] if "auto" in potentials_of(d)],
        output:
            figure=report(f"{REPORTS}/figures/study_adaptive_epsilon.png",
                          caption="../../report/study_adaptive_epsilon.rst", category="6. Studies",
                          subcategory="Adaptive epsilon"),
            pdf=f"{REPORTS}/figures/study_adaptive_epsilon.pdf",
            section=f"{ADAPTIVE_DIR}/section.md",
        log:
            f"{R}/logs/studies/adaptive_epsilon.log",
        benchmark:
            f"{R}/benchmarks/studies/adaptive_epsilon.tsv"
        threads: 1
        shell:
            "sdfm adaptive-epsilon-study --metrics {input.metrics:q} --summaries {input.summaries:q} "
            "--figure {output.figure:q} --section {output.section:q} --reports-dir {REPORTS:q} > {log:q} 2>&1"

    localrules: adaptive_epsilon_study

    STUDY_TARGETS += [f"{REPORTS}/figures/study_adaptive_epsilon.png", f"{ADAPTIVE_DIR}/section.md"]
    STUDY_SECTIONS.append(f"{ADAPTIVE_DIR}/section.md")
