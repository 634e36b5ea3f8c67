"""`adafactor._compile`: Keras's JAX train step compiled for a set of
devices, read for its peak and bytes. Here for this machine's CPU, where
its figures can be checked against the step `fit()` itself compiles
(`_jax.compiled_train_step`); `tests/accelerators` compiles for XLA:TPU and
XLA:GPU with it."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from adafactor import optimizer_adafactor
from conftest import dense_stack

pytestmark = [
    pytest.mark.backend,
    pytest.mark.skipif(keras.backend.backend() != "jax", reason="JAX compiles the step"),
]
WIDTH, LAYERS, BATCH = 64, 3, 8


def state_bytes(model):
    variables = model.trainable_variables + model.optimizer.variables
    return sum(np.prod(v.shape) * np.dtype(v.dtype).itemsize for v in variables)


def test_the_figures_are_those_of_the_step_fit_compiles():
    import jax

    from adafactor import _compile, _jax

    model, data = dense_stack(optimizer_adafactor(beta_1=0.9), WIDTH, LAYERS, BATCH)
    figures = _compile.figures(
        _compile.compile_train_step(model, data, jax.devices("cpu")[:1]), "cpu"
    )
    memory = _jax.compiled_train_step(model, data).memory_analysis()
    # The same step; every state array an argument (keep_unused) moves XLA's
    # buffer assignment by a few hundred bytes.
    assert figures.temporary_bytes == pytest.approx(memory.temp_size_in_bytes, rel=0.02)
    # Every state array is counted: the parameters, the factors, the momentum.
    assert figures.peak_bytes >= state_bytes(model)
    # The step reads each parameter and its gradient at least once.
    assert figures.bytes_accessed >= 2 * sum(
        np.prod(v.shape) * 4 for v in model.trainable_variables
    )


def test_a_model_built_without_its_weights_compiles_and_makes_none():
    import jax

    from adafactor import _compile

    optimizer = optimizer_adafactor()  # its step count is made outside
    with keras.StatelessScope(initialize_variables=False):
        model, data = dense_stack(optimizer, WIDTH, LAYERS, BATCH)
    compiled = _compile.compile_train_step(model, data, jax.devices("cpu")[:1])
    assert _compile.figures(compiled, "cpu").peak_bytes >= state_bytes(model)
    # Neither the weights nor the state (past the step count and the
    # learning rate, made with the optimizer) have values.
    unmade = model.trainable_variables + model.optimizer.variables[2:]
    assert [v.path for v in unmade if v._value is not None] == []


def test_keras_adafactor_whose_build_makes_variables_is_built_for_real():
    import jax

    from adafactor import _compile

    optimizer = keras.optimizers.Adafactor()
    with keras.StatelessScope(initialize_variables=False):
        model, data = dense_stack(optimizer, WIDTH, LAYERS, BATCH)
    compiled = _compile.compile_train_step(model, data, jax.devices("cpu")[:1])
    # Its full-size velocity, which the step never reads, is counted.
    velocity = sum(np.prod(v.shape) * 4 for v in model.trainable_variables)
    assert _compile.figures(compiled, "cpu").peak_bytes >= state_bytes(model) >= 2 * velocity


def test_devices_name_what_is_accepted():
    from adafactor import _compile

    with pytest.raises(ValueError, match="'tpu', 'gpu' or 'cpu', not 'ipu'"):
        _compile.devices("ipu", 1)
    with pytest.raises(ValueError, match="cpu: 99 devices asked for"):
        _compile.devices("cpu", 99)
