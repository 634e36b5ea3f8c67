"""The additional arguments (R's `...`) against the independent numpy
Adafactor, over many steps on rank 1, 2 and 3 variables, and their state."""

import keras
import numpy as np
import pytest

from adafactor import optimizer_adafactor
from reference_adafactor import NumpyAdafactor
from test_optimizer import assert_close, gradient_sequence, initial_values, run_eagerly

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


def numpy_trajectory(kwargs, shapes=SHAPES, steps=STEPS):
    oracle = NumpyAdafactor(**kwargs)
    params = [v.astype(np.float64) for v in initial_values(shapes)]
    for grads in gradient_sequence(shapes, steps):
        params = oracle.step(params, grads)
    return params


@pytest.mark.parametrize("case", OPTIONS)
def test_option_follows_the_numpy_reference(case):
    kwargs = OPTIONS[case]
    ours = run_eagerly(optimizer_adafactor(**kwargs), SHAPES, STEPS)
    assert_close(ours, numpy_trajectory(kwargs), rtol=2e-4, atol=2e-6)


def test_warmup_init_grows_the_step_linearly():
    shapes = [(4, 3)]
    first = run_eagerly(optimizer_adafactor(warmup_init=True), shapes, 1)
    start = initial_values(shapes)[0]
    step = np.abs(first[0] - start).max()
    # 1e-6 * max(1e-3, RMS(w)) * clipped unit-RMS update: a tiny first step.
    assert 0 < step < 1e-5


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
