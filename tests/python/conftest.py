"""Shared helpers: the reference page's Usage block, and small models."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "inst" / "reference" / "optimizer_adafactor.txt"


def pytest_configure(config):
    config.addinivalue_line("markers", "backend: runs under every Keras backend (KERAS_BACKEND)")


def pytest_sessionfinish(session, exitstatus):
    session.config.adafactor_exit_status = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    """With R in this process (the rpy2 parity tests, `r_bridge.py`), end
    the process once pytest is done, with pytest's exit status: the
    interpreter's own teardown, with R, reticulate and TensorFlow in one
    process, crashed now and then in finalizers (a segmentation fault after
    every test had passed, in two of four runs), as R's exit clean-up
    already hung (`r_bridge.py` leaves that out too)."""
    if "r_bridge" in sys.modules:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(getattr(config, "adafactor_exit_status", 1))


def reference_usage() -> list[tuple[str, str]]:
    """(name, R default) pairs of the reference page's Usage block, `...`
    included with an empty default."""
    text = REFERENCE.read_text()
    block = re.search(r"optimizer_adafactor\((.*?)\n\)", text, re.S).group(1)
    pairs = []
    for line in block.strip().splitlines():
        line = line.strip().rstrip(",")
        name, _, default = line.partition(" = ")
        pairs.append((name, default))
    return pairs


def r_default_to_python(default: str):
    """An R default as written on the reference page, as a Python value."""
    if default in ("TRUE", "FALSE"):
        return default == "TRUE"
    if default == "NULL":
        return None
    if default.startswith('"'):
        return default.strip('"')
    return float(default)


def dense_stack(optimizer, width, layers, batch):
    """A compiled stack of `layers` Dense(`width`) layers (mse) and a batch
    of zeros for it: the model the memory and platform tests compile."""
    import keras

    inputs = keras.Input((width,))
    x = inputs
    for _ in range(layers):
        x = keras.layers.Dense(width)(x)
    model = keras.Model(inputs, x)
    model.compile(optimizer=optimizer, loss="mse")
    return model, (np.zeros((batch, width), "float32"),) * 2


@pytest.fixture
def rng():
    return np.random.default_rng(20261128)
