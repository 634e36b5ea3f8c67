"""`bench/device_check.py`, the one command for a GPU, kept from rotting:
its tiny CPU mode runs every backend, dtype and optimizer as on a GPU."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "device_check.py"


def run(*arguments, timeout=900):
    return subprocess.run(
        [sys.executable, str(SCRIPT), *arguments],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_the_cpu_mode_measures_every_backend_dtype_and_optimizer(tmp_path):
    pytest.importorskip("jax", reason="the jax backend is optional")
    pytest.importorskip("torch", reason="the torch backend is optional")
    output = tmp_path / "device_check.csv"
    done = run("--cpu", "--output", str(output))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    rows = list(csv.DictReader(output.open()))
    seen = {(r["backend"], r["dtype"], r["optimizer"]) for r in rows}
    assert seen == {
        (backend, dtype, optimizer)
        for backend in ("jax", "tensorflow", "torch")
        for dtype in ("float32", "bfloat16")
        for optimizer in ("adafactor", "Keras Adafactor", "Adam", "SGD")
    }
    for row in rows:
        assert float(row["step_ms"]) > 0 and float(row["fit_peak_mib"]) > 0
        assert row["device"] == "cpu" and row["backend"] in row["versions"]
        # Ratios within one backend and dtype, from the same run.
        if row["optimizer"] == "Adam":
            assert float(row["step_vs_adam"]) == 1.0
        if row["optimizer"] == "SGD":
            assert float(row["fit_above_sgd_x_parameters"]) == 0.0
        # JAX: the compiled step's count beside the measured peak.
        if row["backend"] == "jax":
            # The step holds the parameters at least, and reads them.
            assert float(row["compiled_peak_mib"]) >= float(row["parameter_mib"])
            assert float(row["compiled_accessed_mib"]) >= float(row["parameter_mib"])
        else:
            assert row["compiled_peak_mib"] == row["compiled_accessed_mib"] == ""
    assert "| jax | bfloat16 | adafactor |" in done.stdout


def test_without_a_gpu_it_fails_saying_which_backend_sees_none(tmp_path):
    pytest.importorskip("jax", reason="the jax backend is optional")
    done = run("--backends", "jax", "--output", str(tmp_path / "none.csv"), timeout=300)
    assert done.returncode != 0
    assert "not measured: jax sees no GPU" in done.stderr
    assert "--cpu" in done.stderr
    assert not (tmp_path / "none.csv").exists()
