# sdfm: FM vs OT-FM vs SD-FM. `snakemake --cores all` runs config.yaml; see README.md.
import json
import sys
from pathlib import Path

from snakemake.utils import min_version

from sdfm.artifacts import epsilon_label
from sdfm.config import dataset_settings, job_grid, layer_configs, needs_feature_net, typed_overrides
from sdfm.config_files import validate_config_files
from sdfm.config_yaml import read_config_file
from sdfm.errors import ConfigError

min_version("9.0")


# The config (README, "Configuration"): the embedded config.yaml, then each --configfile in order, then
# --config key=value; each top-level key comes whole from the last of them that sets it. Every file is read
# strictly here (not by a `configfile:` directive: YAML errors and duplicate keys name their line), and a
# validation error names the file, the key and its line.
# The default is the working directory's config.yaml, as `configfile: "config.yaml"` would read it (the
# repository's own for a plain `snakemake` from its root), else the embedded one.
_default_config = Path("config.yaml") if Path("config.yaml").is_file() else Path(workflow.basedir) / "config.yaml"
_config_files = [_default_config, *workflow.config_settings.configfiles]
try:
    _layers = [read_config_file(path).data for path in _config_files]
    _layered = layer_configs([*_layers, typed_overrides(workflow.config_settings.config)])
    _validated = validate_config_files(_layered, _config_files, workflow.source_path("workflow/schemas/config.schema.yaml"))
except ConfigError as err:
    sys.stderr.write(f"sdfm: invalid config: {err}\n")
    sys.exit(1)
config.clear()
config.update(_validated)


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/potential.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/feature_net.smk"
include: "workflow/rules/fid_reference.smk"
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
