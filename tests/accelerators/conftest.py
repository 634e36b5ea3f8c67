"""The accelerator compilers' tests run in .venv-accelerators (`make
test-accelerators`): JAX on this machine's CPU, with 4 host devices for
Keras's distributions, compiling for XLA:TPU and XLA:GPU."""

import os
import sys
from pathlib import Path

os.environ["KERAS_BACKEND"] = "jax"
os.environ["JAX_PLATFORMS"] = "cpu"
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
