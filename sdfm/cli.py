"""``sdfm`` command line: one subcommand per Snakemake rule, plus ``validate-config``, ``smoke-config``, ``compare``.

``sample`` draws from a trained run (:mod:`sdfm.jobs.sample`).

Settings travel as JSON objects (``--settings '{"steps": 5000}'``) built by the rules from the
validated config; every subcommand exits non-zero with one line on bad input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sdfm.cli_args import Commands
from sdfm.cli_args import job_context as _context
from sdfm.cli_args import json_object as _json
from sdfm.cli_args import json_or_null as _json_or_null

__all__ = ["main"]


def _cmd_validate(args) -> None:
    from sdfm.config import job_grid
    from sdfm.config_files import validate_config_file

    config = validate_config_file(args.config)
    print(f"{args.config}: valid; {len(config['datasets'])} data sets, {len(job_grid(config))} training jobs")


def _cmd_prepare(args) -> None:
    from sdfm.jobs.prepare import prepare_data_job

    digest = prepare_data_job(args.dataset, args.source, args.options, args.out, _context(args))
    print(f"{args.out}: {digest}")


def _cmd_potential(args) -> None:
    from sdfm.jobs.potential import fit_potential_job

    summary = fit_potential_job(args.data, args.dataset, args.epsilon, args.settings, args.out, args.summary,
                                _context(args), seed=args.seed, device=args.device, conditional=args.conditional,
                                reference=args.reference_potential, superres=args.superres,
                                auto_epsilon=args.auto_epsilon if args.epsilon == "auto" else None,
                                pca_dim=args.pca_dim, distributed=args.distributed,
                                epsilon_reference=args.epsilon_reference,
                                **({"reference_batch": args.reference_batch} if args.reference_batch else {}))
    if args.distributed and summary["mlflow_run_id"] is None:
        return  # not rank 0: the summary is rank 0's to report
    print(f"{args.out}: chi2 {summary['final_chi2']:.4f} after {summary['steps_run']} steps "
          f"({summary['fit_seconds']:.1f} s)")


def _cmd_feature_net(args) -> None:
    from sdfm.jobs.feature_net import train_feature_net_job

    stats = train_feature_net_job(args.data, args.dataset, args.settings, args.out, _context(args),
                                  seed=args.seed, device=args.device)
    print(f"{args.out}: held-out accuracy {stats['accuracy']:.4f}, test accuracy {stats['test_accuracy']:.4f} "
          f"({stats['train_seconds']:.1f} s)")


def _cmd_train(args) -> None:
    from sdfm.jobs.train import train_job

    stats = train_job(args.data, args.dataset, args.method, args.epsilon, args.seed, args.model, args.train,
                      args.out, args.checkpoint, _context(args), potential_path=args.potential, device=args.device,
                      conditional=args.conditional, superres=args.superres, distributed=args.distributed,
                      ot_batch_size=args.ot_batch_size, epsilon_reference=args.epsilon_reference)
    if args.distributed and "pairing_share" not in stats:
        return  # not rank 0: the summary is rank 0's to report
    print(f"{args.out}: final loss {stats['final_loss']:.4f}, pairing share {stats['pairing_share']:.1%}")


def _cmd_evaluate(args) -> None:
    from sdfm.jobs.evaluate import evaluate_run

    table = evaluate_run(args.data, args.model, args.dataset, args.method, args.epsilon, args.seed,
                         args.batch_size, args.settings, args.out, _context(args), device=args.device,
                         feature_net_path=args.feature_net, fid_reference=args.fid_reference)
    print(f"{args.out}: {len(table)} rows")


def _cmd_fid_reference(args) -> None:
    from sdfm.jobs.fid_reference import fid_reference_job

    done = fid_reference_job(args.data, args.dataset, args.weights, args.out, _context(args),
                             expected_sha256=args.sha256, keep_features=args.features, batch_size=args.batch_size,
                             device=args.device)
    print(f"{args.out}: statistics of {done['count']} images (weights sha256 {done['weights_sha256'][:16]}...)")


def _cmd_aggregate(args) -> None:
    from sdfm.jobs.aggregate import aggregate_metrics

    table = aggregate_metrics(args.inputs, args.out)
    print(f"{args.out}: {len(table)} rows")


def _cmd_report(args) -> None:
    from sdfm.report.document import write_report

    meta = {"experiment": args.experiment, "repo": args.repo, "config": args.config_json}
    path = write_report(args.metrics, args.summaries, args.out_dir, meta, train_summaries=args.train_summaries,
                        data=args.data, benchmarks=args.benchmarks, figures_wanted=args.figures,
                        sections=args.sections)
    print(f"{path}: written")


def _cmd_smoke_config(args) -> None:
    from sdfm.smoke.run import smoke_config

    result = smoke_config(args.config, args.out, cores=args.cores, inception_weights=args.inception_weights)
    if result.returncode != 0 or not result.report.is_file():
        raise SmokeFailed(f"{args.config}: the toy DAG failed after {result.seconds:.0f} s (Snakemake exit "
                          f"{result.returncode}); see the job logs under {result.workdir}")
    print(f"{args.config}: {result.report} written; the toy DAG took {result.seconds:.0f} s")


class SmokeFailed(RuntimeError):
    """A smoke run whose DAG did not reach its report."""


def _cmd_compare(args) -> None:
    from sdfm.artifacts import auto_epsilons, read_metrics
    from sdfm.report.document import paper_table, read_auto_epsilons
    from sdfm.report.figures import higher_is_better
    from sdfm.report.table_formats import csv_rows, format_table, write_csv

    results = Path(args.results)
    table = read_metrics(results / "metrics.csv" if results.is_dir() else results)
    auto = read_auto_epsilons(results) if results.is_dir() else auto_epsilons(table)  # SD-FM epsilon `auto` rows
    rows, heading = [], {"text": "{}", "markdown": "### {}", "latex": "% {}"}.get(args.format)
    for dataset in sorted(table.dataset.unique()):
        for metric in sorted(table[table.dataset == dataset].metric.unique()):
            if args.metric and metric != args.metric:
                continue
            means, stds = paper_table(table, dataset, metric, auto=auto.get(dataset))
            lower = not higher_is_better(metric)  # precision / recall: the maximum is the best
            if args.format == "csv":
                rows += csv_rows(dataset, metric, means, stds, lower_is_better=lower)
                continue
            print(heading.format(f"{dataset} — {metric} (mean ± std over seeds; {'lower' if lower else 'higher'} "
                                 "is better)") + "\n")
            print(format_table(means, stds, lower_is_better=lower, fmt=args.format) + "\n")
    if args.format == "csv":
        print(write_csv(rows), end="")


def _cmd_sample(args) -> None:
    from sdfm.jobs.sample import sample_run

    done = sample_run(args.run, args.out, n=args.n, solver=args.solver, nfe=args.nfe, seed=args.seed,
                      guidance=args.guidance, label=args.label, data=args.data, device=args.device)
    print(f"{done['npz']}: {args.n} samples of shape {done['shape']} ({args.solver}, NFE {done['nfe']}); "
          f"picture {done['png']}")


#: sdfm.ot.batch.EPSILON_REFERENCES, spelled here so that building the parser imports no torch.
_EPSILON_REFERENCES = ("inner_product", "sq_euclidean")


def _epsilon(text: str) -> float | str:
    """A relative epsilon >= 0, or ``auto`` (chosen by the potential job: sdfm.ot.auto_epsilon)."""
    if text == "auto":
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a number nor 'auto'") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"epsilon must be >= 0, got {text}")
    return value


class _VersionAction(argparse.Action):
    """``sdfm --version``: the package version, and the git commit of a checkout install (``-dirty`` if edited)."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        import sdfm
        from sdfm.provenance import git_state

        state = git_state(Path(sdfm.__file__).resolve().parent)
        commit = f" (git {state['commit'][:12]}{'-dirty' if state['dirty'] else ''})" if state["commit"] else ""
        print(f"sdfm {sdfm.__version__}{commit}")
        parser.exit()


def _parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The grid's job subcommands, the tools, then every study's own (:func:`sdfm.studies.registry`).

    With ``argv`` naming one of the first two kinds, the studies are left out: their modules import
    torch and matplotlib, which ``aggregate`` or ``compare`` do not need. ``--help``, a study's
    subcommand or an unknown one gets them all.
    """
    from sdfm.studies import registry

    parser = argparse.ArgumentParser(prog="sdfm", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action=_VersionAction, help="print the version (and git commit) and exit")
    sub = parser.add_subparsers(dest="command", required=True)
    commands = Commands(sub)

    p = sub.add_parser("validate-config", help="check a workflow config and print the job count")
    p.add_argument("config")
    p.set_defaults(func=_cmd_validate)
    _grid_commands(sub, commands.job)
    _tool_commands(sub)
    # the subcommand is the first word that is not an option (the top level has no option taking a value)
    if argv is not None and next((a for a in argv if not a.startswith("-")), None) in sub.choices:
        return parser
    for study in registry().values():
        if study.register is not None:
            study.register(commands)
    return parser


def _grid_commands(sub, job) -> None:
    """The subcommands of the main grid's rules (``job``: a subcommand with the options every job shares)."""
    p = job("prepare-data", _cmd_prepare, "build and cache a data set", reads_data=False)
    p.add_argument("--source", required=True)
    p.add_argument("--options", type=_json, default={})
    p.add_argument("--out", required=True)

    p = job("fit-potential", _cmd_potential, "fit the semidiscrete potential of a data set")
    p.add_argument("--epsilon", type=_epsilon, required=True, help="relative epsilon (x std of the cost), or auto")
    p.add_argument("--auto-epsilon", type=_json_or_null, default=None,
                   help="epsilon auto: '{\"target_entropy\": 0.05, \"reference_batch\": 1024}' (sdfm.ot.auto_epsilon)")
    p.add_argument("--settings", type=_json, default={}, help="the solver's settings (potential.* of the config)")
    p.add_argument("--reference-batch", type=int, default=None,
                   help="rows of the seeded batch that makes the relative epsilon absolute (potential.reference_batch)")
    p.add_argument("--pca-dim", type=int, default=None, help="fit in the top-k PCA subspace (potential.pca_dim)")
    p.add_argument("--epsilon-reference", choices=_EPSILON_REFERENCES, default="inner_product",
                   help="the cost whose std makes the relative epsilon absolute (config epsilon_reference)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--conditional", type=_json_or_null, default=None, help="'{\"beta\": 1.0}' or null")
    p.add_argument("--superres", type=_json_or_null, default=None, help="'{\"factor\": 4, \"beta\": 1.0}' or null")
    p.add_argument("--out", required=True)
    p.add_argument("--summary", required=True)
    p.add_argument("--distributed", action="store_true",
                   help="shard the points over the torch.distributed ranks (start with torchrun --nproc-per-node K)")
    p.add_argument("--reference-potential", default=None,
                   help="PCA fits (--pca-dim): the full-space potential of the same points, to compare pairs with")

    p = job("train-feature-net", _cmd_feature_net, "train the FeatureNet that defines fd_<dataset>")
    p.add_argument("--settings", type=_json, default={})
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)

    p = job("train", _cmd_train, "train a velocity field with one coupling")
    p.add_argument("--method", required=True, choices=["fm", "otfm", "sdfm"])
    p.add_argument("--epsilon", type=_epsilon, default=0.0, help="relative epsilon, or auto (sdfm: its potential's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", type=_json, required=True)
    p.add_argument("--train", type=_json, required=True)
    p.add_argument("--potential", default=None)
    p.add_argument("--ot-batch-size", type=int, default=None,
                   help="otfm: pairs per OT plan, training batches drawn from it (methods.otfm.ot_batch_size)")
    p.add_argument("--epsilon-reference", choices=_EPSILON_REFERENCES, default="inner_product",
                   help="otfm: the cost whose std makes the relative epsilon absolute (config epsilon_reference)")
    p.add_argument("--conditional", type=_json_or_null, default=None, help="'{\"beta\": 1.0}' or null")
    p.add_argument("--superres", type=_json_or_null, default=None, help="'{\"factor\": 4, \"beta\": 1.0}' or null")
    p.add_argument("--out", required=True)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--distributed", action="store_true",
                   help="data-parallel over the torch.distributed ranks (start with torchrun --nproc-per-node K)")

    p = job("evaluate", _cmd_evaluate, "sample a trained model and score it")
    p.add_argument("--model", required=True)
    p.add_argument("--method", required=True)
    p.add_argument("--epsilon", type=_epsilon, default=0.0, help="relative epsilon, or auto (the model's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, required=True)
    p.add_argument("--settings", type=_json, required=True)
    p.add_argument("--feature-net", default=None, help="FeatureNet file (metric fd)")
    p.add_argument("--fid-reference", default=None, help="the test split's Inception statistics (from fid-reference)")
    p.add_argument("--out", required=True)

    p = job("fid-reference", _cmd_fid_reference, "Inception statistics of a data set's test split (FID reference)")
    p.add_argument("--weights", required=True, help="the Inception weights file (evaluate.inception_weights)")
    p.add_argument("--sha256", default=None, help="its expected SHA-256 (evaluate.inception_sha256); checked when given")
    p.add_argument("--features", action="store_true", help="keep the features too (kid, precision, recall)")
    p.add_argument("--batch-size", type=int, default=64, help="images per Inception batch")
    p.add_argument("--out", required=True, help="the statistics file (.npz)")


def _tool_commands(sub) -> None:
    """Aggregation, the report and the user's tools: smoke runs, tables of a results folder, samples of a run."""
    p = sub.add_parser("aggregate", help="concatenate evaluation tables into metrics.csv")
    p.add_argument("--inputs", nargs="*", default=[])
    p.add_argument("--out", required=True)
    p.set_defaults(func=_cmd_aggregate)

    p = sub.add_parser("report", help="figures and report.md from metrics.csv")
    p.add_argument("--metrics", required=True)
    p.add_argument("--summaries", nargs="*", default=[])
    p.add_argument("--out-dir", required=True)
    p.add_argument("--experiment", default="sdfm")
    p.add_argument("--train-summaries", nargs="*", default=[],
                   help="training jobs' model.json (pairing share; model.pt and samples/ beside them)")
    p.add_argument("--data", nargs="*", default=[], help="prepared 2-D data sets <name>.npz (trajectory figures)")
    p.add_argument("--benchmarks", default=None, help="the Snakemake benchmark folder (cost figure)")
    p.add_argument("--figures", nargs="*", default=None,
                   help="draw exactly these figures, <dataset>_<kind> (default: every one that applies)")
    p.add_argument("--config-json", default=None, help="the run's config as JSON, recorded in report.md")
    p.add_argument("--repo", default=None, help="git checkout whose commit is recorded (default: the working directory)")
    p.add_argument("--sections", nargs="*", default=[], help="studies' markdown sections, appended under 'Studies'")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("smoke-config", help="run a config's whole DAG at toy scale on stand-in data, to report.md")
    p.add_argument("config", help="a workflow config (workflow/configs/*.yaml, config.yaml, your own)")
    p.add_argument("--out", default=None, help="the folder of the run (default: smoke/<config name>)")
    p.add_argument("--cores", type=int, default=2, help="Snakemake --cores (default 2)")
    p.add_argument("--inception-weights", default=None,
                   help="a random Inception file written before (sdfm.smoke.inception), to reuse")
    p.set_defaults(func=_cmd_smoke_config)

    p = sub.add_parser("compare", help="print the paper-style tables of a results folder")
    p.add_argument("results", nargs="?", default="results", help="results folder or metrics.csv")
    p.add_argument("--metric", default=None, help="only this metric")
    p.add_argument("--format", default="text", choices=["text", "markdown", "csv", "latex"],
                   help="an aligned terminal table (default), Markdown, CSV (one row per cell) or LaTeX (booktabs)")
    p.set_defaults(func=_cmd_compare)

    p = sub.add_parser("sample", help="draw samples from a trained run into an .npz and a PNG (grid or scatter)")
    p.add_argument("run", help="a run folder results/runs/<dataset>/<method>/eps<e>/seed<s> (or its model.pt)")
    p.add_argument("--n", type=int, default=64, help="how many samples (default 64)")
    p.add_argument("--solver", default="euler", choices=["euler", "midpoint", "heun", "rk4", "dopri5", "meanflow"])
    p.add_argument("--nfe", type=int, default=4, help="function evaluations (default 4; dopri5 picks its own)")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise (default 0)")
    p.add_argument("--guidance", type=float, default=1.0, help="classifier-free guidance scale (conditional runs)")
    p.add_argument("--label", type=int, default=None, help="one class for every sample (default: the classes in turn)")
    p.add_argument("--data", default=None, help="prepared data (.npz) drawn behind 2-D samples (default: the run's)")
    p.add_argument("--device", default=None, help="cpu, cuda (default: cuda when available)")
    p.add_argument("--out", required=True, help="the .npz to write; the picture goes beside it as .png")
    p.set_defaults(func=_cmd_sample)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``sdfm`` console script."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parser(argv).parse_args(argv)
    from sdfm.data import DataError
    from sdfm.errors import ConfigError
    from sdfm.metrics.reference_stats import ReferenceMismatch

    known = (ConfigError, DataError, FileNotFoundError, NotImplementedError, ReferenceMismatch, SmokeFailed)
    try:
        args.func(args)
    except known as err:
        print(f"sdfm {args.command}: error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # noqa: BLE001 - name the failure in one line, keep the traceback for bugs
        if type(err).__name__ in ("TrainingDiverged", "PotentialDiverged"):
            print(f"sdfm {args.command}: error: {err}", file=sys.stderr)
            return 3
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
