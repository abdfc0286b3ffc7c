# sdfm: FM vs OT-FM vs SD-FM. `snakemake --cores all` runs config.yaml; see README.md.
import json
import sys
from pathlib import Path

from sdfm.config import ConfigError, dataset_settings, epsilon_label, job_grid, needs_feature_net, validate_config


# The embedded default, unless --configfile / --config gave one (they would otherwise merge).
if not config:

    configfile: "config.yaml"


try:
    config.update(validate_config(config, workflow.source_path("workflow/schemas/config.schema.yaml")))
except ConfigError as err:
    sys.stderr.write(f"sdfm: invalid config: {err}\n")
    sys.exit(1)


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/potential.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/feature_net.smk"
include: "workflow/rules/evaluate.smk"


# Each study's rules; configured only when its `studies.<name>` key is present.
for _study in sorted(Path(workflow.basedir, "workflow", "rules", "studies").glob("*.smk")):

    include: str(_study)


include: "workflow/rules/report.smk"


rule all:
    input:
        f"{R}/metrics.csv",
        f"{REPORTS}/report.md",
        STUDY_TARGETS,


# After `all`, so that `all` stays the default target; `snakemake bench` runs the benchmarks.
include: "workflow/rules/bench.smk"
