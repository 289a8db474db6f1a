#!/usr/bin/env python3
"""Set up a virtual environment and run the project's jobs.

    python3 tasks.py demo     # create .venv, install dask_broker, run `dask-broker demo`
    python3 tasks.py test     # create .venv, install dask_broker[test], run the test suite
    python3 tasks.py bench    # run the benchmarks (quick mode)

Only the standard library is used here, so it works on a fresh Python >= 3.11.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / ("python.exe" if os.name == "nt" else "python")


def ensure_venv(extras: str = "test") -> None:
    if sys.version_info < (3, 11):
        sys.exit(f"dask_broker needs Python >= 3.11; this is {sys.version.split()[0]}")
    if not PY.exists():
        print(f"creating {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    stamp = VENV / f".installed-{extras}"
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == digest:
        return
    subprocess.run([PY, "-m", "pip", "install", "-q", "--upgrade", "pip"], check=True)
    subprocess.run([PY, "-m", "pip", "install", "-q", "-e", f"{ROOT}[{extras}]"], check=True)
    stamp.write_text(digest)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"demo", "test", "bench"}:
        print(__doc__)
        return 2
    job, rest = argv[0], argv[1:]
    ensure_venv("test")
    if job == "demo":
        cmd = [BIN / "dask-broker", "demo", *rest]
    elif job == "test":
        cmd = [PY, "-m", "pytest", *rest]
    else:
        cmd = [PY, "-m", "benchmarks", *rest]
    return subprocess.run(cmd, cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
