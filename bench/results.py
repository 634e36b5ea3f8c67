"""Where `make bench` keeps what it measured: one CSV a table, in
`bench/results/`, each row with the date and the versions it was measured
with. The site's benchmarks article reads these files; nothing retypes them.
"""

from __future__ import annotations

import csv
import datetime
import platform
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
