"""Where `make bench` keeps what it measured: one CSV a table, in
`bench/results/`, each row with the date and the versions it was measured
with. The site's benchmarks article reads these files; nothing retypes them.
"""

from __future__ import annotations

import csv
import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def versions(backend: str) -> str:
    """The versions a measurement ran on, as one string."""
    import keras
    import numpy

    module = __import__(backend)
    return (
        f"{backend} {module.__version__}, Keras {keras.__version__}, "
        f"NumPy {numpy.__version__}, Python {platform.python_version()}"
    )


def write(name: str, rows: list[dict], folder: Path = RESULTS) -> Path:
    """`rows` (dicts with the same keys) as `folder/name.csv`, each with
    today's date first."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.csv"
    dated = [{"date": datetime.date.today().isoformat(), **row} for row in rows]
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(dated[0]))
        writer.writeheader()
        writer.writerows(dated)
    return path


def run_child(script: str, backend: str, arguments: list[str], timeout: int) -> dict | None:
    """`script --child backend *arguments` in a fresh Python (its own
    backend and peak memory): the JSON of its last "RESULT " line, or None
    (and what it printed to stderr) when it failed."""
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(
        [sys.executable, script, "--child", backend, *arguments],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    if result.returncode != 0 or not lines:
        print(f"  {backend} {' '.join(arguments)}: failed\n{result.stderr[-1500:]}", flush=True)
        return None
    return json.loads(lines[-1][len("RESULT ") :])
