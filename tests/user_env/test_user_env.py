"""The Python package in a user's own environment: a fresh venv that holds a
backend, keras and numpy first (today's releases, NumPy 2). `pip install` of
the checkout must change none of them, and the optimizer must train there
with factored state. Once with JAX, once with PyTorch."""

import json
import math
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# What a user of each backend installs first; torch 2.13.0 is the CPU build
# this machine kind keeps on disk (a plain `torch` would fetch a CUDA build).
USER_STACKS = {
    "jax": ["jax[cpu]", "keras", "numpy"],
    "torch": ["torch==2.13.0", "keras", "numpy"],
}

TRAIN = """
import json, math, keras, numpy as np
from adafactor import optimizer_adafactor
model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                          keras.layers.Dense(3)])
optimizer = optimizer_adafactor(learning_rate=0.01)
loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
model.compile(optimizer=optimizer, loss=loss)
rng = np.random.default_rng(0)
x = rng.normal(size=(64, 4)).astype("float32")
history = model.fit(x, (x[:, 0] > 0).astype("int32"), epochs=5, verbose=0)
state = [tuple(v.shape) for v in optimizer.variables[2:]]
print(json.dumps({"backend": keras.backend.backend(), "loss": history.history["loss"],
                  "state": state, "numpy": np.__version__}))
"""


def run(*command, **kwargs):
    return subprocess.run(command, check=True, capture_output=True, text=True, **kwargs).stdout


def installed(python):
    """{name: version} of every package in the environment."""
    listing = json.loads(
        run(python, "-m", "pip", "list", "--format=json", "--disable-pip-version-check")
    )
    return {p["name"].lower().replace("_", "-"): p["version"] for p in listing}


@pytest.mark.parametrize("backend", sorted(USER_STACKS))
def test_pip_install_changes_nothing_and_trains(backend, tmp_path):
    home = tmp_path / "venv"
    venv.create(home, with_pip=True)
    python = str(home / "bin" / "python")
    run(python, "-m", "pip", "install", "-q", "--disable-pip-version-check", *USER_STACKS[backend])
    before = installed(python)

    run(python, "-m", "pip", "install", "-q", "--disable-pip-version-check", str(ROOT))
    after = installed(python)

    assert (
        after.pop("adafactor")
        == run(sys.executable, "-c", "import adafactor; print(adafactor.__version__)").strip()
    )
    assert after == before
    assert int(before["numpy"].split(".")[0]) >= 2  # today's NumPy
    result = json.loads(
        run(python, "-c", TRAIN, cwd=tmp_path, env=dict(os.environ, KERAS_BACKEND=backend))
    )
    assert result["backend"] == backend
    assert all(math.isfinite(loss) for loss in result["loss"])
    assert result["loss"][-1] < result["loss"][0]
    # Factored: the 4 x 8 and 8 x 3 kernels keep a row and a column factor.
    assert result["state"] == [[4], [8], [8], [8], [3], [3]]
