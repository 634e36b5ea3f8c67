"""The additional arguments (R's `...`) against the independent numpy
Adafactor, over many steps on rank 1, 2 and 3 variables, and their state."""

import math

import keras
import numpy as np
import pytest

from adafactor import optimizer_adafactor
from adafactor.memory import itemsize
from test_optimizer import (
    assert_close,
    assert_moves_like,
    gradient_sequence,
    initial_values,
    reference_trajectory,
    run_eagerly,
)

pytestmark = pytest.mark.backend

SHAPES = [(9,), (8, 6), (2, 5, 4), (3, 40)]
STEPS = 40

OPTIONS = {
    "defaults": {},
    "scale_parameter": {"scale_parameter": False, "learning_rate": 0.01},
    "relative_step": {"relative_step": False, "learning_rate": 0.01},
    "t5 fine-tuning": {"relative_step": False, "scale_parameter": False, "learning_rate": 1e-3},
    "warmup_init": {"warmup_init": True},
    "beta_1": {"beta_1": 0.9},
    "bfloat16 momentum": {"beta_1": 0.9, "momentum_dtype": "bfloat16"},
    "min_dim_size_to_factor": {"min_dim_size_to_factor": 5},
    "factored": {"factored": False},
    "everything": {
        "beta_1": 0.5,
        "min_dim_size_to_factor": 6,
        "scale_parameter": False,
        "learning_rate": 0.02,
        "clip_threshold": 0.5,
    },
}


@pytest.mark.parametrize("case", OPTIONS)
def test_option_follows_the_numpy_reference(case):
    kwargs = OPTIONS[case]
    ours = run_eagerly(optimizer_adafactor(**kwargs), SHAPES, STEPS)
    expected = reference_trajectory(kwargs, SHAPES, gradient_sequence(SHAPES, STEPS))
    # warmup_init's steps (1e-6 * t) are a few float32 units of values near
    # 1; test_warmup_init_step_by_step checks them where they resolve.
    rtol = 2e-2 if case == "warmup_init" else 1e-3
    assert_moves_like(ours, expected, initial_values(SHAPES), rtol=rtol)


def small_start(scale):
    return [v * np.float32(scale) for v in initial_values(SHAPES)]


def test_the_epsilons_are_the_users():
    # Variables of RMS 1e-3 below epsilon_2 = 0.05, and gradients whose
    # squares (~1e-4) are of epsilon_1 = 1e-4's size: both change every step.
    start = small_start(1e-3)
    grads = [[g * np.float32(1e-2) for g in step] for step in gradient_sequence(SHAPES, 10)]
    kwargs = {"epsilon_1": 1e-4, "epsilon_2": 0.05}
    ours = run_eagerly(optimizer_adafactor(**kwargs), grads=grads, start=start)
    expected = reference_trajectory(kwargs, SHAPES, grads, start=start)
    assert_moves_like(ours, expected, start)
    defaults = reference_trajectory({}, SHAPES, grads, start=start)
    for mine, default, s in zip(expected, defaults, start, strict=True):
        assert np.abs(mine - default).max() > 0.1 * np.abs(mine - s).max()


def test_warmup_init_step_by_step():
    # Without scale_parameter the relative step is 1e-6 * t itself; values of
    # 1e-4 resolve it. An off-by-one step count doubles the first step.
    kwargs = {"warmup_init": True, "scale_parameter": False}
    start = small_start(1e-4)
    grads = gradient_sequence(SHAPES, 5)
    for steps in range(1, 6):
        ours = run_eagerly(optimizer_adafactor(**kwargs), grads=grads[:steps], start=start)
        expected = reference_trajectory(kwargs, SHAPES, grads[:steps], start=start)
        assert_moves_like(ours, expected, start)


def state_sizes(shapes, **kwargs):
    optimizer = optimizer_adafactor(**kwargs)
    optimizer.build([keras.Variable(np.zeros(s, "float32")) for s in shapes])
    return [tuple(v.shape) for v in optimizer.variables[2:]]


def test_state_with_each_option():
    shapes = [(8, 6), (3, 200), (5,)]
    assert state_sizes(shapes) == [(8,), (6,), (3,), (200,), (5,)]
    assert state_sizes(shapes, factored=False) == [(8, 6), (3, 200), (5,)]
    assert state_sizes(shapes, min_dim_size_to_factor=4) == [(8,), (6,), (3, 200), (5,)]
    assert state_sizes(shapes, beta_1=0.9) == [
        (8,),
        (6,),
        (8, 6),
        (3,),
        (200,),
        (3, 200),
        (5,),
        (5,),
    ]
    assert state_sizes(shapes, scale_parameter=False, warmup_init=True) == state_sizes(shapes)


def test_momentum_is_kept_in_float32_for_half_precision_variables():
    optimizer = optimizer_adafactor(beta_1=0.9)
    optimizer.build([keras.Variable(np.zeros((4, 3)), dtype="float16")])
    dtypes = {keras.backend.standardize_dtype(v.dtype) for v in optimizer.variables[2:]}
    assert dtypes == {"float32"}


def test_t5_recipe_trains_a_model():
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 8)).astype("float32")
    y = (x @ rng.normal(size=(8,)) > 0).astype("int32")
    model = keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(2)]
    )
    model.compile(
        optimizer=optimizer_adafactor(
            learning_rate=1e-3, relative_step=False, scale_parameter=False
        ),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    history = model.fit(x, y, epochs=15, batch_size=32, verbose=0)
    assert history.history["loss"][-1] < 0.6 * history.history["loss"][0]
    assert history.history["accuracy"][-1] > 0.9


def test_invalid_option_values_are_errors():
    for kwargs, words in [
        (dict(beta_1=1.0), "`beta_1` must be NULL/None or a number in [0, 1)"),
        (dict(min_dim_size_to_factor=0), "`min_dim_size_to_factor` must be"),
        (dict(factored="no"), "`factored` must be TRUE/True or FALSE/False"),
        (dict(warmup_init=True, relative_step=False), "`warmup_init` needs"),
    ]:
        with pytest.raises(ValueError) as info:
            optimizer_adafactor(**kwargs)
        assert words in str(info.value)


def test_a_bfloat16_momentum_is_stored_rounded_and_used_unrounded():
    shapes = [(6, 5), (5,)]
    start = initial_values(shapes)
    grads = gradient_sequence(shapes, 1)
    full = optimizer_adafactor(beta_1=0.9)
    half = optimizer_adafactor(beta_1=0.9, momentum_dtype="bfloat16")
    after_full = run_eagerly(full, grads=grads, start=start)
    after_half = run_eagerly(half, grads=grads, start=start)
    # One step from a zero momentum: the same step; the stored momentum is
    # the float32 one rounded to bfloat16, half the bytes.
    assert_close(after_half, after_full, rtol=0, atol=0)
    for kept, exact in zip(half.variables[2:], full.variables[2:], strict=True):
        if tuple(kept.shape) == tuple(exact.shape) and "momentum" in kept.name:
            assert keras.backend.standardize_dtype(kept.dtype) == "bfloat16"
            rounded = keras.ops.cast(keras.ops.cast(exact, "bfloat16"), "float32")
            np.testing.assert_array_equal(
                keras.ops.convert_to_numpy(keras.ops.cast(kept, "float32")),
                keras.ops.convert_to_numpy(rounded),
            )
    # Two bytes fewer for each momentum entry, nothing else changed.
    assert state_bytes(full) - state_bytes(half) == 2 * sum(math.prod(s) for s in shapes)


def state_bytes(optimizer):
    return sum(math.prod(v.shape) * itemsize(v.dtype) for v in optimizer.variables[2:])


def test_momentum_dtype_needs_beta_1():
    with pytest.raises(ValueError, match="`momentum_dtype` needs `beta_1`"):
        optimizer_adafactor(momentum_dtype="bfloat16")
    assert optimizer_adafactor(momentum_dtype="float32").momentum_dtype == "float32"


def test_a_bfloat16_momentum_trains_a_model_as_the_float32_one():
    def fit(momentum_dtype):
        keras.utils.set_random_seed(0)
        rng = np.random.default_rng(0)
        x = rng.normal(size=(256, 16)).astype("float32")
        y = (x @ rng.normal(size=(16,)) > 0).astype("int32")
        model = keras.Sequential(
            [
                keras.Input((16,)),
                keras.layers.Dense(64, activation="relu"),
                keras.layers.Dense(64, activation="relu"),
                keras.layers.Dense(2),
            ]
        )
        optimizer = optimizer_adafactor(
            learning_rate=0.01, beta_1=0.9, momentum_dtype=momentum_dtype
        )
        model.compile(
            optimizer=optimizer,
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        history = model.fit(x, y, epochs=8, batch_size=32, shuffle=False, verbose=0)
        return np.array(history.history["loss"])

    full, half = fit("float32"), fit("bfloat16")
    assert full[-1] < 0.5 * full[0]
    # The loss curves agree to 2% of what the loss fell: the rounding of the
    # stored momentum (0.4%) is noise beside the training.
    np.testing.assert_allclose(half, full, rtol=0, atol=0.02 * (full[0] - full[-1]))
