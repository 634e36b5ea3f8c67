"""The step is chosen for the platform it is compiled for.

On JAX the XLA:CPU scheduling work (each factored step one conditional,
`_jax.py`) and the matrix-vector RMS form go only into a step lowered for
the CPU; a step lowered for a GPU or TPU is the plain fused step. JAX lowers
for a platform it has no device of; the CPU's XLA then compiles that
lowering, and what its simplifier keeps is counted (the platform switch
itself lowers to a conditional on a constant, which XLA inlines).
TensorFlow and PyTorch run a variable's step where the variable lives.
"""

from __future__ import annotations

import re
from types import SimpleNamespace

import keras
import numpy as np
import pytest

from adafactor import optimizer as adafactor_optimizer
from adafactor import optimizer_adafactor

pytestmark = pytest.mark.backend

BACKEND = keras.backend.backend()
JAX_ONLY = pytest.mark.skipif(BACKEND != "jax", reason="JAX lowers for other platforms")
LAYERS = 5  # each with a factored kernel


def dense_model(optimizer, width=64):
    inputs = keras.Input((width,))
    x = inputs
    for _ in range(LAYERS):
        x = keras.layers.Dense(width)(x)
    model = keras.Model(inputs, x)
    model.compile(optimizer=optimizer, loss="mse")
    return model, (np.zeros((8, width), "float32"),) * 2


def compiled_on_the_cpu(lowered) -> str:
    """The optimised HLO the CPU's XLA makes of `lowered`, whichever
    platform it was lowered for."""
    from jax._src import compiler, xla_bridge
    from jax._src.lib import xla_client

    backend = xla_bridge.get_backend("cpu")
    options = compiler.get_compile_options(num_replicas=1, num_partitions=1)
    if hasattr(backend, "compile_and_load"):  # JAX >= 0.5
        devices = xla_client.DeviceList(tuple(backend.devices()[:1]))
        executable = backend.compile_and_load(lowered.as_text(), devices, options)
    else:
        executable = backend.compile(lowered.as_text(), options)
    return executable.hlo_modules()[0].to_string()


def counts(make_optimizer, platform):
    """Conditionals and dot products XLA keeps in `fit()`'s train step."""
    from adafactor import _jax

    model, data = dense_model(make_optimizer())
    hlo = compiled_on_the_cpu(_jax.lowered_train_step(model, data, (platform,)))
    return hlo.count(" conditional("), len(re.findall(r" dot\(", hlo))


OPTIONS = {"defaults": {}, "beta_1": {"beta_1": 0.9}}


@JAX_ONLY
@pytest.mark.parametrize("platform", ["cuda", "tpu"])
@pytest.mark.parametrize("options", list(OPTIONS))
def test_a_step_lowered_for_an_accelerator_is_the_plain_fused_step(platform, options):
    """No conditional of this optimizer, and the row-sum RMS form: the
    dot products are the model's own, as many as SGD's step has."""
    _, sgd_dots = counts(lambda: keras.optimizers.SGD(0.01), platform)
    conditionals, dots = counts(lambda: optimizer_adafactor(**OPTIONS[options]), platform)
    assert conditionals == 0
    assert dots == sgd_dots


@JAX_ONLY
@pytest.mark.parametrize("options", list(OPTIONS))
def test_a_step_lowered_for_the_cpu_has_one_operation_per_factored_variable(options):
    """A conditional per factored kernel, each of its two (identical)
    branches with the matrix-vector product of the RMS form."""
    _, sgd_dots = counts(lambda: keras.optimizers.SGD(0.01), "cpu")
    conditionals, dots = counts(lambda: optimizer_adafactor(**OPTIONS[options]), "cpu")
    assert conditionals == LAYERS
    assert dots == sgd_dots + 2 * LAYERS


@JAX_ONLY
@pytest.mark.parametrize("platform, conditionals", [("cpu", LAYERS), ("cuda", 0), ("tpu", 0)])
def test_under_data_parallel_the_platform_decides_too(platform, conditionals):
    keras.distribution.set_distribution(keras.distribution.DataParallel())
    try:
        found, _ = counts(optimizer_adafactor, platform)
    finally:
        keras.distribution.set_distribution(None)
    assert found == conditionals


@JAX_ONLY
def test_a_forced_rms_form_holds_on_every_platform(monkeypatch):
    monkeypatch.setattr(adafactor_optimizer, "RMS_FORM", "matvec")
    _, sgd_dots = counts(lambda: keras.optimizers.SGD(0.01), "cuda")
    assert counts(optimizer_adafactor, "cuda") == (0, sgd_dots + LAYERS)


def fake_variable(device):
    """A stand-in with a variable's device, as each backend reports it."""
    if BACKEND == "torch":
        return SimpleNamespace(value=SimpleNamespace(device=SimpleNamespace(type=device)))
    return SimpleNamespace(_value=SimpleNamespace(device=f"/job:localhost/task:0/device:{device}"))


@pytest.mark.skipif(BACKEND == "jax", reason="on JAX the lowering platform decides")
def test_the_variables_device_decides_the_rms_form_on_tensorflow_and_pytorch():
    accelerator, cpu = ("cuda", "cpu") if BACKEND == "torch" else ("GPU:0", "CPU:0")
    assert adafactor_optimizer._rms_form(fake_variable(accelerator)) == "fused"
    assert adafactor_optimizer._rms_form(fake_variable(cpu)) == "matvec"
    # A real variable of this CPU machine, also as a traced graph sees it.
    variable = keras.Variable(np.zeros((3, 2), "float32"))
    assert adafactor_optimizer._rms_form(variable) == "matvec"
    if BACKEND == "tensorflow":
        import tensorflow as tf

        # Keras's TensorFlow optimizer hands update_step the tf.Variable.
        assert adafactor_optimizer._rms_form(SimpleNamespace(device="/device:GPU:0")) == "fused"
        assert adafactor_optimizer._rms_form(variable.value) == "matvec"
        forms = []
        tf.function(lambda: forms.append(adafactor_optimizer._rms_form(variable)))()
        assert forms == ["matvec"]
