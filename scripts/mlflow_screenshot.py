"""Screenshot an experiment's MLflow runs table in headless Chromium.

    .venv/bin/python scripts/mlflow_screenshot.py --store results/mlflow.db --experiment sdfm \
        --out docs/figures/mlflow_runs_table.png

Starts ``mlflow server`` on the store (a free port on 127.0.0.1), opens the experiment's runs table
(model-training workflow; parent runs expanded, the Assistant panel kept shut), writes the PNG (a 256-colour palette
unless --full-colour), prints the address, and stops the server. Needs a Chromium (``make browser``
installs Debian's ``chromium``); without one it prints the address it would have opened and exits 2.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from sdfm.mlflow_ui import experiment_id, find_browser, mlflow_server, runs_table_url, screenshot_runs_table, shrink_png


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True,
                        help="the SQLite file of the runs (results/mlflow.db) or any backend store URI")
    parser.add_argument("--experiment", default="sdfm", help="experiment name (the config's experiment_name)")
    parser.add_argument("--out", default="docs/figures/mlflow_runs_table.png", help="PNG to write")
    parser.add_argument("--browser", default=None, help="browser command (default: chromium, then chrome)")
    parser.add_argument("--width", type=int, default=1600)
    parser.add_argument("--height", type=int, default=900)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the runs table")
    parser.add_argument("--full-colour", action="store_true", help="keep every colour (a larger file)")
    return parser


def backend_uri(store: str) -> str:
    """A store argument as a backend URI: a path becomes ``sqlite:///<absolute path>`` (it must exist)."""
    if "://" in store:
        return store
    path = Path(store).expanduser().resolve()
    if not path.is_file():
        raise FileNotFoundError(f"{store}: no such MLflow store; run the workflow first, or pass --store URI")
    return f"sqlite:///{path}"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        uri = backend_uri(args.store)
    except FileNotFoundError as err:
        print(f"mlflow_screenshot: {err}", file=sys.stderr)
        return 1
    browser = find_browser(args.browser)
    with tempfile.TemporaryDirectory(prefix="sdfm-mlflow-ui-") as workdir, mlflow_server(uri, workdir) as url:
        try:
            page = runs_table_url(url, experiment_id(url, args.experiment))
        except ValueError as err:
            print(f"mlflow_screenshot: {err}", file=sys.stderr)
            return 1
        if browser is None:
            print(f"mlflow_screenshot: no browser found ({args.browser or 'chromium'}): install one with "
                  f"`make browser`; the runs table was served at {page}", file=sys.stderr)
            return 2
        out = screenshot_runs_table(browser, page, args.out, args.width, args.height, args.timeout)
    if not args.full_colour:
        shrink_png(out)
    print(f"{out} ({out.stat().st_size // 1024} KiB): {page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
