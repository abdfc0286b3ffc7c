"""``sdfm`` command line: one subcommand per Snakemake rule, plus ``validate-config`` and ``compare``.

Settings travel as JSON objects (``--settings '{"steps": 5000}'``) built by the rules from the
validated config; every subcommand exits non-zero with one line on bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["main"]


def _json(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not a JSON object: {err}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object such as '{\"steps\": 100}'")
    return value


def _context(args):
    from sdfm.jobs.common import JobContext, setup_threads

    setup_threads(args.threads)
    return JobContext(experiment=args.experiment, results_dir=args.results_dir, progress=not args.no_progress)


def _cmd_validate(args) -> None:
    from sdfm.config import job_grid, load_config_file, validate_config

    config = validate_config(load_config_file(args.config))
    print(f"{args.config}: valid; {len(config['datasets'])} data sets, {len(job_grid(config))} training jobs")


def _cmd_prepare(args) -> None:
    from sdfm.jobs.prepare import prepare_data_job

    digest = prepare_data_job(args.dataset, args.source, args.options, args.out, _context(args))
    print(f"{args.out}: {digest}")


def _cmd_potential(args) -> None:
    if args.distributed:
        from sdfm.jobs.potential_sharded import fit_potential_sharded_job as fit_potential_job
    else:
        from sdfm.jobs.potential import fit_potential_job

    reference = {"reference": args.reference_potential} if args.reference_potential else {}  # PCA fits only
    superres = {"superres": args.superres} if args.superres else {}
    summary = fit_potential_job(args.data, args.dataset, args.epsilon, args.settings, args.out, args.summary,
                                _context(args), seed=args.seed, device=args.device, conditional=args.conditional,
                                **reference, **superres,
                                **({"auto_epsilon": args.auto_epsilon} if args.epsilon == "auto" else {}))
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
                      conditional=args.conditional, superres=args.superres)
    print(f"{args.out}: final loss {stats['final_loss']:.4f}, pairing share {stats['pairing_share']:.1%}")


def _cmd_evaluate(args) -> None:
    from sdfm.jobs.evaluate import evaluate_run

    table = evaluate_run(args.data, args.model, args.dataset, args.method, args.epsilon, args.seed,
                         args.batch_size, args.settings, args.out, _context(args), device=args.device,
                         feature_net_path=args.feature_net)
    print(f"{args.out}: {len(table)} rows")


def _cmd_aggregate(args) -> None:
    from sdfm.jobs.aggregate import aggregate_metrics

    table = aggregate_metrics(args.inputs, args.out)
    print(f"{args.out}: {len(table)} rows")


def _cmd_report(args) -> None:
    from sdfm.report import write_report

    meta = {"experiment": args.experiment, "repo": args.repo, "config": args.config_json}
    path = write_report(args.metrics, args.summaries, args.out_dir, meta, train_summaries=args.train_summaries,
                        data=args.data, benchmarks=args.benchmarks, figures_wanted=args.figures,
                        sections=args.sections)
    print(f"{path}: written")


def _cmd_pca_study(args) -> None:
    from sdfm.jobs.pca_study import pca_study

    _context(args)
    table = pca_study(args.data, args.dataset, args.dims, args.settings, args.out, device=args.device,
                      progress=not args.no_progress)
    print(f"{args.out}: {len(table)} rows (k = {', '.join(str(k) for k in table.k)})")


def _cmd_pca_study_report(args) -> None:
    from sdfm.jobs.pca_study_report import write_pca_study_report

    path = write_pca_study_report(args.inputs, args.figure, args.section, args.reports_dir, metrics=args.metrics,
                                  summaries=args.summaries)
    print(f"{path}: written")


def _cmd_convergence_study(args) -> None:
    from sdfm.jobs.convergence_study import convergence_study

    _context(args)
    table = convergence_study(args.data, args.dataset, args.settings, args.out, device=args.device,
                              progress=not args.no_progress)
    print(f"{args.out}: {len(table)} rows")


def _cmd_convergence_report(args) -> None:
    from sdfm.jobs.convergence_report import write_convergence_report

    settings = args.settings
    path = write_convergence_report(args.input, args.figure, args.section, args.fits, args.reports_dir,
                                    fit_from=settings.get("fit_from", 1), floor_factor=settings.get("floor_factor", 5.0),
                                    solvers=settings.get("solvers"))
    print(f"{path}: written")


def _cmd_adaptive_epsilon_study(args) -> None:
    from sdfm.jobs.adaptive_epsilon_study import adaptive_epsilon_study

    table = adaptive_epsilon_study(args.metrics, args.summaries, args.figure, args.section, args.reports_dir)
    print(f"{args.section}: {len(table)} (data set, metric, NFE) comparisons")


def _cmd_compare(args) -> None:
    import pandas as pd

    from sdfm.figures import higher_is_better
    from sdfm.report import format_paper_table, paper_table, read_auto_epsilons

    table = pd.read_csv(Path(args.results) / "metrics.csv" if Path(args.results).is_dir() else args.results)
    auto = read_auto_epsilons(args.results) if Path(args.results).is_dir() else {}  # SD-FM epsilon `auto` rows
    for dataset in sorted(table.dataset.unique()):
        for metric in sorted(table[table.dataset == dataset].metric.unique()):
            if args.metric and metric != args.metric:
                continue
            means, stds = paper_table(table, dataset, metric, auto=auto.get(dataset))
            lower = not higher_is_better(metric)  # precision / recall: the maximum is the best
            print(f"\n{dataset} — {metric} (mean ± std over seeds; {'lower' if lower else 'higher'} is better, "
                  "best in bold)\n")
            print(format_paper_table(means, stds, lower_is_better=lower))


def _epsilon(text: str) -> float | str:
    """A relative epsilon >= 0, or ``auto`` (chosen by the potential job: sdfm.jobs.auto_epsilon)."""
    if text == "auto":
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a number nor 'auto'") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"epsilon must be >= 0, got {text}")
    return value


def _json_or_null(text: str) -> dict | None:
    return None if text.strip() in ("", "null", "None") else _json(text)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sdfm", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def job(name, func, help_text, reads_data=True):
        p = sub.add_parser(name, help=help_text)
        if reads_data:
            p.add_argument("--data", required=True, help="the data set cache written by prepare-data")
        p.add_argument("--dataset", required=True, help="the data set's name in the config")
        p.add_argument("--experiment", default="sdfm", help="MLflow experiment name")
        p.add_argument("--results-dir", default="results", help="where the default MLflow store lives")
        p.add_argument("--threads", type=int, default=None, help="torch threads (Snakemake's threads:)")
        p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when available)")
        p.add_argument("--no-progress", action="store_true", help="hide progress bars")
        p.set_defaults(func=func)
        return p

    p = sub.add_parser("validate-config", help="check a workflow config and print the job count")
    p.add_argument("config")
    p.set_defaults(func=_cmd_validate)

    p = job("prepare-data", _cmd_prepare, "build and cache a data set", reads_data=False)
    p.add_argument("--source", required=True)
    p.add_argument("--options", type=_json, default={})
    p.add_argument("--out", required=True)

    p = job("fit-potential", _cmd_potential, "fit the semidiscrete potential of a data set")
    p.add_argument("--epsilon", type=_epsilon, required=True, help="relative epsilon (x std of the cost), or auto")
    p.add_argument("--auto-epsilon", type=_json_or_null, default=None,
                   help="epsilon auto: '{\"target_entropy\": 0.05, \"reference_batch\": 1024}' (sdfm.jobs.auto_epsilon)")
    p.add_argument("--settings", type=_json, default={})
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--conditional", type=_json_or_null, default=None, help="'{\"beta\": 1.0}' or null")
    p.add_argument("--superres", type=_json_or_null, default=None, help="'{\"factor\": 4, \"beta\": 1.0}' or null")
    p.add_argument("--out", required=True)
    p.add_argument("--summary", required=True)
    p.add_argument("--distributed", action="store_true",
                   help="shard the points over the torch.distributed ranks (start with torchrun --nproc-per-node K)")
    p.add_argument("--reference-potential", default=None,
                   help="PCA fits (settings pca_dim): the full-space potential of the same points, to compare pairs with")

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
    p.add_argument("--conditional", type=_json_or_null, default=None, help="'{\"beta\": 1.0}' or null")
    p.add_argument("--superres", type=_json_or_null, default=None, help="'{\"factor\": 4, \"beta\": 1.0}' or null")
    p.add_argument("--out", required=True)
    p.add_argument("--checkpoint", required=True)

    p = job("evaluate", _cmd_evaluate, "sample a trained model and score it")
    p.add_argument("--model", required=True)
    p.add_argument("--method", required=True)
    p.add_argument("--epsilon", type=_epsilon, default=0.0, help="relative epsilon, or auto (the model's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, required=True)
    p.add_argument("--settings", type=_json, required=True)
    p.add_argument("--feature-net", default=None, help="FeatureNet file (metric fd)")
    p.add_argument("--out", required=True)

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

    p = job("pca-study", _cmd_pca_study, "PCA cost study: fit and pairing speed and pairing quality vs k")
    p.add_argument("--dims", type=int, nargs="+", required=True, help="the PCA dimensions k (the full D is added)")
    p.add_argument("--settings", type=_json, default={})
    p.add_argument("--out", required=True, help="the CSV, one row per k")

    p = sub.add_parser("pca-study-report", help="the PCA study's figure and report section")
    p.add_argument("--inputs", nargs="+", required=True, help="the pca-study CSVs")
    p.add_argument("--metrics", default=None, help="the run's metrics.csv (fd per k of the PCA data sets)")
    p.add_argument("--summaries", nargs="*", default=[], help="potential summaries of the PCA data sets and references")
    p.add_argument("--figure", required=True, help="the PNG to draw (a PDF beside it)")
    p.add_argument("--section", required=True, help="the markdown section to write")
    p.add_argument("--reports-dir", required=True, help="figure links are relative to it")
    p.set_defaults(func=_cmd_pca_study_report)

    p = job("convergence-study", _cmd_convergence_study, "chi^2 of the potential after K SGD steps, over N, B, eps")
    p.add_argument("--settings", type=_json, default={}, help="the studies.convergence config entry as JSON")
    p.add_argument("--out", required=True, help="the tidy CSV, one row per setting, seed and K")

    p = sub.add_parser("convergence-report", help="the convergence study's exponents, figure and report section")
    p.add_argument("--input", required=True, help="the convergence-study CSV")
    p.add_argument("--settings", type=_json, default={}, help="fit_from, floor_factor, solvers (as in the study)")
    p.add_argument("--figure", required=True, help="the PNG to draw (a PDF beside it)")
    p.add_argument("--section", required=True, help="the markdown section to write")
    p.add_argument("--fits", required=True, help="the CSV of fitted exponents")
    p.add_argument("--reports-dir", required=True, help="figure links are relative to it")
    p.set_defaults(func=_cmd_convergence_report)

    p = sub.add_parser("adaptive-epsilon-study", help="SD-FM at epsilon auto vs the fixed epsilons: figure and section")
    p.add_argument("--metrics", required=True, help="metrics.csv")
    p.add_argument("--summaries", nargs="+", required=True, help="the potential summaries epsauto.json")
    p.add_argument("--figure", required=True, help="the PNG to draw (a PDF beside it)")
    p.add_argument("--section", required=True, help="the markdown section to write")
    p.add_argument("--reports-dir", required=True, help="figure links are relative to it")
    p.set_defaults(func=_cmd_adaptive_epsilon_study)

    p = sub.add_parser("compare", help="print the paper-style tables of a results folder")
    p.add_argument("results", nargs="?", default="results", help="results folder or metrics.csv")
    p.add_argument("--metric", default=None, help="only this metric")
    p.set_defaults(func=_cmd_compare)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``sdfm`` console script."""
    args = _parser().parse_args(argv)
    from sdfm.config import ConfigError
    from sdfm.data import DataError

    known = (ConfigError, DataError, FileNotFoundError, NotImplementedError)
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
