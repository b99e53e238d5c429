"""Run two pyinv installations side by side (one worker process each, benchmarks/_engine_worker.py)
and interleave their requests, so that both see the same machine load.

An installation is a folder holding ``src/`` and ``build/dev/site`` (tools/devbuild.sh, or
tools/build_baseline.sh for another commit), or ``None`` for the one this interpreter imports.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

WORKER = Path(__file__).with_name("_engine_worker.py")


class Worker:
    """One worker process; ``ask(request)`` sends a JSON request and returns the JSON answer."""

    def __init__(self, root: Path | None, name: str):
        env = dict(os.environ)
        if root is not None:
            root = Path(root).resolve()
            env["PYTHONPATH"] = os.pathsep.join([str(root / "build" / "dev" / "site"), str(root / "src")])
        self.name = name
        self.proc = subprocess.Popen([sys.executable, str(WORKER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env=env, cwd=str(Path(__file__).resolve().parents[1]))

    def ask(self, req: dict) -> dict:
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.name}: worker ended (exit {self.proc.wait()})")
        return json.loads(line)

    def close(self) -> None:
        try:
            self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
            self.proc.stdin.close()
        except OSError:
            pass
        self.proc.wait(timeout=30)


def baseline_root() -> Path | None:
    """The baseline installation named by PYINV_BASELINE (a folder from tools/build_baseline.sh), or
    build/baseline-ccb99ce when it exists."""
    env = os.environ.get("PYINV_BASELINE")
    if env:
        return Path(env)
    p = Path(__file__).resolve().parents[1] / "build" / "baseline-ccb99ce"
    return p if (p / "build" / "dev" / "site").is_dir() else None


def code_version() -> dict:
    """The commit of this checkout and whether the working tree differs from it (for result files)."""
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                    capture_output=True, text=True, check=True).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": dirty}
