"""Where results came from: the git state of the checkout that produced them."""

from __future__ import annotations

import subprocess
from pathlib import Path

__all__ = ["git_state"]


def git_state(repo: str | Path | None) -> dict:
    """``{"commit", "dirty", "error"}`` of the git checkout holding ``repo`` (commit None when there is none).

    ``dirty`` means tracked files differ from the commit (untracked files do not count).
    """
    def git(*args):
        return subprocess.run(["git", "-C", str(repo or "."), *args], capture_output=True, text=True, check=True,
                              timeout=30).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except FileNotFoundError:
        return {"commit": None, "dirty": None, "error": "git is not installed"}
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as err:
        message = (getattr(err, "stderr", "") or "").strip().splitlines()
        return {"commit": None, "dirty": None, "error": message[0] if message else str(err)}
    return {"commit": commit, "dirty": dirty, "error": None}
