"""A local MLflow server on a store, its REST calls, and a headless-browser screenshot of a runs table.

:func:`mlflow_server` starts ``mlflow server`` on 127.0.0.1 (a free port, one worker) in its own
process group and stops the whole group on exit; :func:`screenshot_runs_table` loads an
experiment's runs table in headless Chromium (Debian's ``chromium``; ``make browser`` installs it)
and writes a PNG. ``scripts/mlflow_screenshot.py`` is the command line.

MLflow 3.17's UI picks an experiment's page from the sidebar's workflow switch ("GenAI" by default,
remembered by the browser; the URL parameter ``workflowType`` overrides it) rather than from the
experiment's ``mlflow.experimentKind`` tag, so :func:`runs_table_url` names the model-training
workflow: the link opens the runs table whatever the browser remembered.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from contextlib import contextmanager
from pathlib import Path

__all__ = ["find_browser", "free_port", "get_json", "post_json", "experiment_id", "mlflow_server", "runs_table_url",
           "screenshot_runs_table", "shrink_png", "BROWSERS"]

#: Browser commands tried in order (Debian's package is ``chromium``).
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get_json(url: str, path: str, **query) -> dict:
    """GET ``url + path`` (a REST endpoint) and decode its JSON answer."""
    full = f"{url}{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
    with urllib.request.urlopen(full, timeout=30) as response:
        return json.loads(response.read() or b"{}")


def post_json(url: str, path: str, body: dict) -> dict:
    """POST ``body`` as JSON to ``url + path`` and decode the answer."""
    request = urllib.request.Request(f"{url}{path}", data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"{}")


def experiment_id(url: str, name: str) -> str:
    """The id of experiment ``name`` on the server at ``url`` (ValueError naming it when there is none)."""
    try:
        return get_json(url, "/api/2.0/mlflow/experiments/get-by-name", experiment_name=name)["experiment"][
            "experiment_id"]
    except urllib.error.HTTPError as err:
        if err.code == 404:
            raise ValueError(f"no experiment named {name!r} in the store: pass --experiment NAME "
                             "(the config's experiment_name)") from None
        raise


def runs_table_url(url: str, experiment: str) -> str:
    """The UI address of an experiment's runs table, in the model-training workflow."""
    return f"{url}/#/experiments/{experiment}/runs?workflowType=machine_learning"


def _group_alive(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group ``pgid``, read from /proc."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            alive.append(int(stat.parent.name))
    return alive


def _stop(server: subprocess.Popen) -> None:
    """SIGTERM the server's process group (its uvicorn/gunicorn workers too), SIGKILL what stays."""
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        if not _group_alive(server.pid):
            break
        try:
            os.killpg(server.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while _group_alive(server.pid) and time.monotonic() < deadline:
            server.poll()
            time.sleep(0.2)
    server.wait(timeout=5)
    if _group_alive(server.pid):
        raise RuntimeError(f"mlflow server processes left running in process group {server.pid}")


@contextmanager
def mlflow_server(backend_uri: str, workdir: str | Path, *extra: str, timeout: float = 90.0):
    """Run ``mlflow server`` on ``backend_uri`` at 127.0.0.1:<free port>; yield its base URL.

    ``extra`` are further ``mlflow server`` arguments (e.g. ``--serve-artifacts``). The server's
    output goes to ``workdir/mlflow-server.log``, quoted in the error when it does not answer.
    """
    mlflow = Path(sys.executable).parent / "mlflow"
    if not mlflow.exists():
        raise FileNotFoundError(f"no mlflow command next to {sys.executable}: install the project (make install)")
    port, workdir = free_port(), Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    url, log = f"http://127.0.0.1:{port}", workdir / "mlflow-server.log"
    cmd = [str(mlflow), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--backend-store-uri", backend_uri, *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no huey workers
    with open(log, "w") as out:
        server = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=workdir, start_new_session=True,
                                  env=env)
    try:
        deadline = time.monotonic() + timeout
        while not _answers(url):
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server did not answer on {url}:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        _stop(server)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def find_browser(name: str | None = None) -> str | None:
    """The path of ``name`` or of the first of :data:`BROWSERS` on PATH (None: no browser)."""
    for candidate in ([name] if name else BROWSERS):
        found = shutil.which(candidate)
        if found:
            return found
    return None


#: Set before the page's own scripts run: MLflow 3.17 opens its Assistant panel (a third of the window)
#: on a browser's first visit to a local server; these are the keys it remembers that visit by.
_QUIET_ASSISTANT = ('localStorage.setItem("mlflow.assistant.fab.autoOpenedOnFirstLoad_v1", "true");'
                    'localStorage.setItem("mlflow.assistant.panelOpen_v1", "false");')
#: Clicks each parent run's expander in the runs table, so nested runs show; returns how many.
_EXPAND_PARENTS = """(() => { let n = 0; document.querySelectorAll('.ag-row').forEach(row => {
  const cell = row.querySelector('[col-id*="run" i], [col-id*="name" i]'); const button = cell && cell.querySelector('button');
  if (button) { button.click(); n++; } }); return n; })()"""


class _DevTools:
    """The Chrome DevTools protocol over ``--remote-debugging-pipe`` (fds 3 and 4: NUL-ended JSON)."""

    def __init__(self, browser: str, profile: str) -> None:
        to_browser, from_us = os.pipe()
        to_us, from_browser = os.pipe()

        def wire():  # the browser reads commands on fd 3 and writes answers on fd 4
            os.dup2(to_browser, 3)
            os.dup2(from_browser, 4)

        self.process = subprocess.Popen([browser, "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars",
                                         "--no-first-run", "--remote-debugging-pipe", f"--user-data-dir={profile}",
                                         "about:blank"], pass_fds=(3, 4), preexec_fn=wire, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_browser)
        os.close(from_browser)
        self.writer, self.reader, self.count, self.pending = from_us, to_us, 0, b""

    def call(self, method: str, session: str | None = None, **params) -> dict:
        self.count += 1
        message = {"id": self.count, "method": method, "params": params, **({"sessionId": session} if session else {})}
        os.write(self.writer, json.dumps(message).encode() + b"\0")
        while True:
            while b"\0" not in self.pending:
                chunk = os.read(self.reader, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"the browser closed while answering {method}")
                self.pending += chunk
            raw, self.pending = self.pending.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self.count:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def close(self) -> None:
        self.process.kill()
        self.process.wait(timeout=30)
        os.close(self.writer)
        os.close(self.reader)


def screenshot_runs_table(browser: str, url: str, out: str | Path, width: int = 1600, height: int = 900,
                          timeout: float = 120.0) -> Path:
    """Load ``url`` in headless ``browser``, wait for the runs table, expand the parent runs, write a PNG.

    Driven over the DevTools protocol (a pipe, no extra package): the Assistant panel is kept shut
    (:data:`_QUIET_ASSISTANT`), the picture is taken once the table says "N matching runs" (at most
    ``timeout`` seconds). The profile is a fresh temporary folder: nothing the browser remembered
    changes what the page shows.
    """
    import base64

    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sdfm-browser-") as profile:
        tools = _DevTools(browser, profile)
        try:
            target = tools.call("Target.createTarget", url="about:blank")["targetId"]
            page = tools.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
            tools.call("Emulation.setDeviceMetricsOverride", page, width=width, height=height, deviceScaleFactor=1,
                       mobile=False)
            tools.call("Page.enable", page)
            tools.call("Page.addScriptToEvaluateOnNewDocument", page, source=_QUIET_ASSISTANT)
            tools.call("Page.navigate", page, url=url)
            _wait_for(tools, page, "!!(document.body && /matching runs?/.test(document.body.innerText))", timeout)
            time.sleep(2)  # the rows render after the count
            if tools.call("Runtime.evaluate", page, expression=_EXPAND_PARENTS)["result"].get("value"):
                time.sleep(3)
            shot = tools.call("Page.captureScreenshot", page, format="png")["data"]
        finally:
            tools.close()
    out.write_bytes(base64.b64decode(shot))
    return out


def _wait_for(tools: _DevTools, page: str, condition: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not tools.call("Runtime.evaluate", page, expression=condition)["result"].get("value"):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the page did not show its runs table within {timeout:.0f} s")
        time.sleep(1)


def shrink_png(path: str | Path, colors: int = 256) -> Path:
    """Rewrite the PNG at ``path`` with a ``colors``-colour palette (a UI shot: a few hundred KB -> ~100 KB)."""
    from PIL import Image

    path = Path(path)
    with Image.open(path) as image:
        small = image.convert("RGB").quantize(colors=colors, method=Image.Quantize.MEDIANCUT)
    tmp = path.with_name(f".{path.name}.tmp")
    small.save(tmp, format="PNG", optimize=True)
    os.replace(tmp, path)
    return path
