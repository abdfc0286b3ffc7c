# Paths, wildcard constraints and the JSON settings each rule passes to its `sdfm` subcommand.
R = config["results_dir"]
REPORTS = config["reports_dir"]
JOBS = job_grid(config)
DEVICE = "cuda" if config["gpu"] else "cpu"
GPU = 1 if config["gpu"] else 0
JOB_ARGS = f"--experiment '{config['experiment_name']}' --results-dir '{R}' --device {DEVICE} --no-progress"
RUN_DIR = R + "/runs/{dataset}/{method}/eps{epsilon}/seed{seed}"

wildcard_constraints:
    dataset="[A-Za-z0-9][A-Za-z0-9_-]*",
    method="fm|otfm|sdfm",
    epsilon="[0-9][0-9.e+-]*|auto",
    seed="[0-9]+",


def settings(dataset, stage):
    """The merged settings of one stage of a dataset, as JSON for the command line."""
    return json.dumps(dataset_settings(config, dataset)[stage])


def conditional_flag(dataset):
    """``--conditional '{"beta": ...}'`` for a class-conditional data set, ``--superres '{"factor": ..., "beta": ...}'``
    for a super-resolution one, else nothing."""
    merged = dataset_settings(config, dataset)
    if merged["superres"]:
        return f"--superres '{json.dumps(merged['superres'])}'"
    return f"--conditional '{json.dumps(merged['conditional'])}'" if merged["conditional"] else ""


def potentials_of(dataset):
    """Every (dataset, epsilon) potential the sdfm jobs of `dataset` need."""
    return sorted({job["epsilon"] for job in JOBS if job["dataset"] == dataset and job["method"] == "sdfm"})


# Studies (workflow/rules/studies/*.smk) append the files `rule all` needs to STUDY_TARGETS and the
# markdown sections report.md appends (figures referenced relative to REPORTS) to STUDY_SECTIONS.
STUDY_TARGETS = []
STUDY_SECTIONS = []
