"""Shared helpers: the reference page's Usage block, and small models."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "inst" / "reference" / "optimizer_adafactor.txt"


def pytest_configure(config):
    config.addinivalue_line("markers", "backend: runs under every Keras backend (KERAS_BACKEND)")


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


@pytest.fixture
def rng():
    return np.random.default_rng(20261128)
