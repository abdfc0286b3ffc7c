# Paths, wildcard constraints and the JSON settings each rule passes to its `sdfm` subcommand.
import shlex

# Every job runs the `sdfm`, `torchrun` and `python` of the Python that runs Snakemake (its bin
# folder first on PATH), so `.venv/bin/snakemake ...` works without an activated virtual env.
# (Snakemake's own default prefix, strict bash mode, is kept.)
shell.prefix(f"set -euo pipefail; export PATH={shlex.quote(str(Path(sys.executable).parent))}:\"$PATH\"; ")
R = config["results_dir"]
REPORTS = config["reports_dir"]
JOBS = job_grid(config)
DEVICE = "cuda" if config["gpu"] else "cpu"
# Jobs write a progress line every `progress_seconds` to their log (sdfm.progress); every value is shell-quoted.
JOB_ARGS = (f"--experiment {shlex.quote(config['experiment_name'])} --results-dir {shlex.quote(R)} --device {DEVICE} "
            f"--progress-seconds {config['progress_seconds']}")
JOB_ARGS += " --log-model" if config["mlflow"].get("log_model") else ""
RUN_DIR = R + "/runs/{dataset}/{method}/eps{epsilon}/seed{seed}"

wildcard_constraints:
    dataset="[A-Za-z0-9][A-Za-z0-9_-]*",
    method="fm|otfm|sdfm",
    epsilon="[0-9][0-9.e+-]*|auto",
    seed="[0-9]+",


def rule_resource(rule, name):
    """``resources.<rule>.<name>`` of the config (defaults: sdfm.config.DEFAULT_RESOURCES, a study's STUDY.resources)."""
    return config["resources"][rule][name]


def rule_gpus(rule, ranks=1):
    """GPUs one job of `rule` asks for: 0 without ``gpu: true``, else ``resources.<rule>.gpus`` (unset: one per rank)."""
    gpus = config["resources"][rule]["gpus"]
    return 0 if not config["gpu"] else (ranks if gpus is None else gpus)


def settings(dataset, stage):
    """The merged settings of one stage of a dataset, as JSON for the command line."""
    return json.dumps(dataset_settings(config, dataset)[stage])


def conditional_flag(dataset):
    """``--conditional '{"beta": ...}'`` for a class-conditional data set, ``--superres '{"factor": ..., "beta": ...}'``
    for a super-resolution one, else nothing."""
    merged = dataset_settings(config, dataset)
    if merged["superres"]:
        return f"--superres {shlex.quote(json.dumps(merged['superres']))}"
    return f"--conditional {shlex.quote(json.dumps(merged['conditional']))}" if merged["conditional"] else ""


def potentials_of(dataset):
    """Every (dataset, epsilon) potential the sdfm jobs of `dataset` need."""
    return sorted({job["epsilon"] for job in JOBS if job["dataset"] == dataset and job["method"] == "sdfm"})


# Studies (workflow/rules/studies/*.smk) append the files `rule all` needs to STUDY_TARGETS and the
# markdown sections report.md appends (figures referenced relative to REPORTS) to STUDY_SECTIONS.
STUDY_TARGETS = []
STUDY_SECTIONS = []
