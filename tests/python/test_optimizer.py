"""The memory-true optimizer: state, numerics against Keras and against an
independent numpy Adafactor, zero gradients, low precision, save and load.
Marked `backend`: `make test` runs this file under TensorFlow, JAX and
PyTorch, each in its own process."""

import csv
import io
import math
import subprocess

import keras
import numpy as np
import pytest

from adafactor import Adafactor, optimizer_adafactor
from reference_adafactor import NumpyAdafactor

pytestmark = pytest.mark.backend

SHAPES = [(7,), (6, 5), (3, 4, 5), ()]
STEPS = 25


def gradient_sequence(shapes, steps, seed=1, scale=1.0):
    rng = np.random.default_rng(seed)
    return [[(rng.normal(size=s) * scale).astype("float32") for s in shapes] for _ in range(steps)]


def initial_values(shapes, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=s).astype("float32") for s in shapes]


def run_eagerly(optimizer, shapes=SHAPES, steps=STEPS, grads=None, dtype="float32", start=None):
    """Apply a fixed gradient sequence; return the final values (float64)."""
    variables = [keras.Variable(v, dtype=dtype) for v in (start or initial_values(shapes))]
    for step_grads in grads or gradient_sequence(shapes, steps):
        optimizer.apply(
            [keras.ops.convert_to_tensor(g, dtype=dtype) for g in step_grads], variables
        )
    return [keras.ops.convert_to_numpy(keras.ops.cast(v, "float64")) for v in variables]


@pytest.fixture(params=["matvec", "fused"])
def rms_form(request, monkeypatch):
    """Run a test under each way of computing the update's RMS (the device
    picks one; all must agree)."""
    from adafactor import Adafactor

    monkeypatch.setattr(Adafactor, "rms_form", request.param)
    return request.param


def assert_close(actual, expected, rtol=2e-5, atol=2e-6):
    for a, e in zip(actual, expected, strict=True):
        np.testing.assert_allclose(a, e, rtol=rtol, atol=atol)


def reference_trajectory(kwargs, shapes, grads, start=None):
    """The float64 numpy reference's final values after `grads`."""
    oracle = NumpyAdafactor(**kwargs)
    params = [v.astype(np.float64) for v in (start or initial_values(shapes))]
    for step_grads in grads:
        params = oracle.step(params, step_grads)
    return params


def assert_moves_like(actual, expected, start, rtol=1e-3):
    """Each variable's displacement from `start` equals the reference's to
    `rtol` of its largest displacement: a tolerance set by how far the
    values move, not by their size (values near 1 that move 1e-3 would hide
    a wrong step inside an rtol on the values)."""
    for a, e, s in zip(actual, expected, start, strict=True):
        moved = np.asarray(e, np.float64) - s
        scale = np.abs(moved).max()
        assert scale > 0, "the reference does not move this variable: nothing is checked"
        np.testing.assert_allclose(np.asarray(a, np.float64) - s, moved, rtol=0, atol=rtol * scale)


# -- state ------------------------------------------------------------------


def state_shapes(optimizer, shapes):
    optimizer.build([keras.Variable(np.zeros(s, "float32")) for s in shapes])
    own = optimizer.variables[2:]  # after iterations and learning rate
    return [tuple(v.shape) for v in own]


def test_state_is_factored_over_the_last_two_dimensions():
    assert state_shapes(optimizer_adafactor(), SHAPES) == [(7,), (6,), (5,), (3, 4), (3, 5), ()]


def test_building_again_keeps_the_state():
    optimizer = optimizer_adafactor()
    variables = [keras.Variable(np.zeros(s, "float32")) for s in SHAPES]
    optimizer.build(variables)
    state = list(optimizer.variables)
    optimizer.build(variables)
    assert optimizer.variables == state


def test_state_is_n_plus_m_numbers_and_nothing_full_size():
    optimizer = optimizer_adafactor()
    shape = (64, 48)
    optimizer.build([keras.Variable(np.zeros(shape, "float32"))])
    sizes = [math.prod(v.shape) for v in optimizer.variables]
    assert sum(sizes) == 64 + 48 + 2  # + iterations and learning rate
    assert max(sizes) < math.prod(shape)
    assert all(v.shape != shape for v in optimizer.variables)


def test_keras_adafactor_keeps_full_size_state_ours_does_not():
    shapes = [(64, 48), (48,)]
    ours, theirs = optimizer_adafactor(), keras.optimizers.Adafactor()
    for opt in (ours, theirs):
        opt.build([keras.Variable(np.zeros(s, "float32")) for s in shapes])

    def size(opt):
        return sum(math.prod(v.shape) for v in opt.variables)

    assert size(theirs) >= 64 * 48 + 48
    assert size(ours) == 64 + 48 + 48 + 2


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_low_precision_variables_keep_float32_state(dtype):
    optimizer = optimizer_adafactor()
    optimizer.build(
        [keras.Variable(np.zeros((4, 3)), dtype=dtype), keras.Variable(np.zeros(3), dtype=dtype)]
    )
    assert {keras.backend.standardize_dtype(v.dtype) for v in optimizer.variables[2:]} == {
        "float32"
    }


# -- numerics against Keras 3.15 --------------------------------------------

KERAS_CASES = {
    "defaults": {},
    "learning_rate": {"learning_rate": 0.3},
    "weight_decay": {"weight_decay": 0.1},
    "clipnorm": {"clipnorm": 0.5},
    "clipvalue": {"clipvalue": 0.2},
    "global_clipnorm": {"global_clipnorm": 0.7},
    "ema": {"use_ema": True, "ema_momentum": 0.9, "ema_overwrite_frequency": 3},
    "accumulation": {"gradient_accumulation_steps": 3},
    "clip_threshold": {"clip_threshold": 0.1, "epsilon_2": 0.05},
    "beta_2_decay": {"beta_2_decay": -0.5},
}


@pytest.mark.parametrize("case", KERAS_CASES)
def test_follows_keras_adafactor(case):
    kwargs = KERAS_CASES[case]
    ours = run_eagerly(optimizer_adafactor(**kwargs))
    theirs = run_eagerly(keras.optimizers.Adafactor(**kwargs))
    assert_close(ours, theirs)
    assert not all(np.allclose(o, i) for o, i in zip(ours, initial_values(SHAPES), strict=True))


def test_follows_keras_adafactor_with_a_schedule():
    def schedule():
        return keras.optimizers.schedules.ExponentialDecay(0.5, 5, 0.5)

    assert_close(
        run_eagerly(optimizer_adafactor(learning_rate=schedule())),
        run_eagerly(keras.optimizers.Adafactor(learning_rate=schedule())),
    )


def test_relative_step_false_turns_the_decay_off():
    ours = run_eagerly(optimizer_adafactor(learning_rate=0.3, relative_step=False))
    oracle = NumpyAdafactor(learning_rate=0.3, relative_step=False)
    params = [v.astype(np.float64) for v in initial_values(SHAPES)]
    for grads in gradient_sequence(SHAPES, STEPS):
        params = oracle.step(params, grads)
    assert_close(ours, params, rtol=1e-4, atol=1e-5)
    # Keras 3.15 ignores the flag: the documented difference.
    keras_off = run_eagerly(keras.optimizers.Adafactor(learning_rate=0.3, relative_step=False))
    keras_on = run_eagerly(keras.optimizers.Adafactor(learning_rate=0.3))
    assert_close(keras_off, keras_on, rtol=0, atol=0)
    assert not np.allclose(ours[1], keras_off[1], rtol=1e-3)


# -- zero gradients and low precision ----------------------------------------


def dead_unit_gradients(steps=5):
    grads = gradient_sequence([(6, 5), (5,)], steps)
    for g, _ in grads:
        g[0, :] = 0.0  # a dead input unit
        g[:, 0] = 0.0  # a dead output unit
    return grads


def test_zero_gradient_row_and_column_stay_finite_where_keras_gives_nan(rms_form):
    grads = dead_unit_gradients()
    theirs = run_eagerly(keras.optimizers.Adafactor(), [(6, 5), (5,)], grads=grads)
    assert np.isnan(theirs[0]).any()
    shapes = [(6, 5), (5,)]
    ours = run_eagerly(optimizer_adafactor(), shapes, grads=grads)
    assert all(np.isfinite(v).all() for v in ours)
    start = initial_values([(6, 5)])[0]
    np.testing.assert_array_equal(ours[0][0, :], start[0, :])  # no gradient, no step
    # Every other entry moves as the float64 reference says (it forms v in
    # full, where 0 * inf cannot happen), step by step.
    assert_moves_like(ours, reference_trajectory({}, shapes, grads), initial_values(shapes))


def test_all_zero_gradient_leaves_variables_unchanged(rms_form):
    grads = [[np.zeros(s, "float32") for s in SHAPES]] * 3
    ours = run_eagerly(optimizer_adafactor(), grads=grads)
    assert_close(ours, initial_values(SHAPES), rtol=0, atol=0)


@pytest.mark.parametrize("magnitude", [0.0, 1e-30, 1e-20, 1e16, 1e20, 1e30, 3e38])
def test_extreme_gradient_magnitudes_give_finite_steps(magnitude, rms_form):
    grads = [
        [(np.sign(g) * magnitude).astype("float32") for g in step]
        for step in gradient_sequence(SHAPES, 4)
    ]
    ours = run_eagerly(optimizer_adafactor(), grads=grads)
    assert all(np.isfinite(v).all() for v in ours)
    # The float64 reference squares these gradients without overflow or
    # underflow: the float32 steps (squares capped, floors kept) equal it.
    expected = reference_trajectory({}, SHAPES, grads)
    start = initial_values(SHAPES)
    if magnitude >= 1e-10:  # the steps are large enough to compare
        assert_moves_like(ours, expected, start)
    else:  # epsilon_1 dominates: steps far below float32's resolution
        assert_close(ours, expected, rtol=3e-7, atol=0)  # a few float32 units


def run_as_fit_does(optimizer, grads, shapes=SHAPES):
    """Apply `grads` as `fit()` applies an optimizer: on JAX
    `stateless_apply` under `jax.jit` (each factored update one XLA
    operation, `_jax.py`), on TensorFlow `apply` in a `tf.function`, on
    PyTorch eagerly. Returns the final values (float64)."""
    variables = [keras.Variable(v) for v in initial_values(shapes)]
    optimizer.build(variables)
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        step = jax.jit(optimizer.stateless_apply)
        values = [v.value for v in variables]
        state = [v.value for v in optimizer.variables]
        for step_grads in grads:
            values, state = step(state, [jax.numpy.asarray(g) for g in step_grads], values)
        return [np.asarray(v, np.float64) for v in values]
    if backend == "tensorflow":
        import tensorflow as tf

        step = tf.function(lambda step_grads: optimizer.apply(step_grads, variables))
        for step_grads in grads:
            step([tf.constant(g) for g in step_grads])
        return [keras.ops.convert_to_numpy(v).astype(np.float64) for v in variables]
    for step_grads in grads:
        optimizer.apply([keras.ops.convert_to_tensor(g) for g in step_grads], variables)
    return [keras.ops.convert_to_numpy(v).astype(np.float64) for v in variables]


COMPILED_OPTIONS = {
    "defaults": {},
    "beta_1": {"beta_1": 0.9},
    "bfloat16 momentum": {"beta_1": 0.9, "momentum_dtype": "bfloat16"},
    "fixed step": {
        "relative_step": False,
        "learning_rate": 0.01,
        "scale_parameter": False,
        "clip_threshold": 0.5,
    },
}


@pytest.mark.parametrize("magnitude", [None, 1e30], ids=["normal", "1e30"])
@pytest.mark.parametrize("options", list(COMPILED_OPTIONS))
def test_a_step_compiled_as_fit_compiles_it_moves_as_the_reference(options, magnitude):
    """The path `fit()` takes (on JAX a `lax.cond` per factored variable,
    the clip made inside and outside it) against the float64 reference,
    with gradients whose squares overflow float32 too."""
    kwargs = COMPILED_OPTIONS[options]
    grads = gradient_sequence(SHAPES, 8)
    if magnitude:
        grads = [[(np.sign(g) * magnitude).astype("float32") for g in step] for step in grads]
    actual = run_as_fit_does(optimizer_adafactor(**kwargs), grads)
    expected = reference_trajectory(kwargs, SHAPES, grads)
    assert_moves_like(actual, expected, initial_values(SHAPES))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_non_finite_gradient_poisons_its_variable_in_a_compiled_step(bad):
    grads = gradient_sequence(SHAPES, 2)
    grads[1][1][0, 0] = bad
    ours = run_as_fit_does(optimizer_adafactor(beta_1=0.9), grads)
    assert np.isnan(ours[1]).any()
    assert all(np.isfinite(v).all() for i, v in enumerate(ours) if i != 1)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_gradients_poison_the_variable_as_in_keras_adam(bad):
    grads = gradient_sequence(SHAPES, 2)
    grads[1][1][0, 0] = bad
    ours = run_eagerly(optimizer_adafactor(), grads=grads)
    adam = run_eagerly(keras.optimizers.Adam(), grads=grads)
    assert np.isnan(ours[1]).any() and np.isnan(adam[1]).any()
    assert np.isfinite(ours[0]).all()  # other variables are untouched


def rounded(values, dtype):
    """`values` as a variable of `dtype` holds them, in float64."""
    return [
        keras.ops.convert_to_numpy(keras.ops.cast(keras.ops.cast(v, dtype), "float64"))
        for v in values
    ]


# Each step moves a variable by about learning_rate * RMS(w): 8 steps of
# 0.1 move it by tenths, far beyond bfloat16's resolution (1/256 of a value).
LARGE_STEPS = {"learning_rate": 0.1, "relative_step": False}


@pytest.mark.parametrize("dtype,rtol", [("float16", 0.01), ("bfloat16", 0.1)])
def test_low_precision_variables_move_as_the_float32_reference(dtype, rtol):
    grads = dead_unit_gradients(steps=8)
    shapes = [(6, 5), (5,)]
    low = run_eagerly(optimizer_adafactor(**LARGE_STEPS), shapes, grads=grads, dtype=dtype)
    assert all(np.isfinite(v).all() for v in low)
    # The reference starts where the variables do and sees the gradients
    # they see (rounded to `dtype`); what is left is the rounding of each
    # step's result, a few units of `dtype`'s resolution.
    start = rounded(initial_values(shapes), dtype)
    low_grads = [rounded(step, dtype) for step in grads]
    expected = reference_trajectory(LARGE_STEPS, shapes, low_grads, start=start)
    assert_moves_like(low, expected, start, rtol=rtol)
    keras_low = run_eagerly(
        keras.optimizers.Adafactor(),
        shapes,
        grads=[[np.zeros(s, "float32") for s in shapes]],
        dtype=dtype,
    )
    if dtype == "float16":  # epsilon_1 underflows in Keras's float16 state
        assert np.isnan(keras_low[0]).all()


# -- compiled training with model.fit --------------------------------------


def tiny_model(seed=3, width=16):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(width, activation="relu"),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(3),
        ]
    )


def tiny_data(n=96):
    rng = np.random.default_rng(7)
    x = rng.normal(size=(n, 4)).astype("float32")
    y = (x[:, 0] + x[:, 1] > 0).astype("int32") + (x[:, 2] > 1)
    return x, y


def fit_weights(optimizer, epochs=3, jit_compile="auto", policy=None):
    x, y = tiny_data()
    model = tiny_model()
    model.compile(
        optimizer=optimizer,
        jit_compile=jit_compile,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    history = model.fit(x, y, batch_size=16, epochs=epochs, shuffle=False, verbose=0)
    return model, history


def compiled():
    # XLA on TensorFlow and JAX. torch.compile costs about a minute a model
    # on this CPU, so only the test below uses it.
    return keras.backend.backend() != "torch"


def test_compiled_fit_follows_keras_adafactor():
    # jit_compile=True: XLA on TensorFlow and JAX, torch.compile on PyTorch.
    ours, _ = fit_weights(optimizer_adafactor(learning_rate=0.05), jit_compile=True)
    theirs, _ = fit_weights(keras.optimizers.Adafactor(learning_rate=0.05), jit_compile=True)
    assert_close(ours.get_weights(), theirs.get_weights(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_training_with_loss_scaling(policy):
    keras.mixed_precision.set_dtype_policy(policy)
    try:
        model, history = fit_weights(
            optimizer_adafactor(learning_rate=0.05), epochs=4, jit_compile=compiled()
        )
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    if policy == "mixed_float16":
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    losses = history.history["loss"]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert all(np.isfinite(w).all() for w in model.get_weights())


def compiled_model(seed=3, width=16, **kwargs):
    model = tiny_model(seed, width)
    model.compile(
        optimizer=optimizer_adafactor(learning_rate=0.05, **kwargs),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def save_and_load(model, tmp_path):
    path = tmp_path / "model.keras"
    model.save(path)
    return keras.saving.load_model(path)


def test_saved_and_loaded_model_continues_exactly(tmp_path):
    x, y = tiny_data()
    straight = compiled_model()
    straight.fit(x, y, batch_size=16, epochs=4, shuffle=False, verbose=0)
    resumed = compiled_model()
    resumed.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    loaded = save_and_load(resumed, tmp_path)
    assert isinstance(loaded.optimizer, Adafactor)
    loaded.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    for a, b in zip(loaded.get_weights(), straight.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_saved_optimizer_state_includes_factors_iterations_and_ema(tmp_path):
    x, y = tiny_data()
    model = compiled_model(use_ema=True)
    model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    loaded = save_and_load(model, tmp_path)
    saved, restored = model.optimizer.variables, loaded.optimizer.variables
    assert len(restored) == len(saved) > 2 + 2 * 6  # iterations, lr, factors, EMA
    assert int(loaded.optimizer.iterations) == 6
    for a, b in zip(restored, saved, strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))


class Interrupt(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 2:
            raise KeyboardInterrupt("simulated interruption")


def test_backup_and_restore_resumes_exactly_as_an_uninterrupted_run(tmp_path):
    x, y = tiny_data()
    fit = dict(batch_size=16, epochs=4, shuffle=False, verbose=0)
    straight = compiled_model(use_ema=True)
    straight.fit(x, y, **fit)
    backup = str(tmp_path / "backup")
    interrupted = compiled_model(use_ema=True)
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit(
            x, y, callbacks=[keras.callbacks.BackupAndRestore(backup), Interrupt()], **fit
        )
    assert int(interrupted.optimizer.iterations) == 12
    # A different start: the restore must bring the weights and the state.
    resumed = compiled_model(seed=99, use_ema=True)
    resumed.fit(x, y, callbacks=[keras.callbacks.BackupAndRestore(backup)], **fit)
    assert int(resumed.optimizer.iterations) == int(straight.optimizer.iterations)
    for a, b in zip(resumed.get_weights(), straight.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_loading_into_a_model_of_other_shapes_is_a_clear_error(tmp_path):
    x, y = tiny_data()
    model = compiled_model()
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    path = tmp_path / "w.weights.h5"
    model.save_weights(path)
    other = compiled_model(width=12)
    other.fit(x, y, batch_size=16, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="shape"):
        other.load_weights(path)


@pytest.fixture(scope="module")
def unscaled_iris():
    """R's built-in iris data, unscaled, read through Rscript (no download)."""
    text = subprocess.run(
        ["Rscript", "-e", "write.csv(iris, stdout(), row.names = FALSE)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = list(csv.reader(io.StringIO(text)))[1:]
    x = np.array([[float(v) for v in row[:4]] for row in rows], "float32")
    species = sorted({row[4] for row in rows})
    y = np.array([species.index(row[4]) for row in rows], "int32")
    return x, y


def iris_fit(optimizer, data, epochs=40):
    x, y = data
    keras.utils.set_random_seed(1)
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(3),
        ]
    )
    model.compile(
        optimizer=optimizer,
        metrics=["accuracy"],
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    history = model.fit(x, y, batch_size=16, epochs=epochs, verbose=0)
    return model, history.history


def test_unscaled_iris_with_relu_trains_where_keras_adafactor_turns_nan(unscaled_iris):
    keras_model, _ = iris_fit(keras.optimizers.Adafactor(), unscaled_iris, epochs=1)
    assert any(np.isnan(w).any() for w in keras_model.get_weights())
    model, history = iris_fit(optimizer_adafactor(learning_rate=0.05), unscaled_iris)
    assert all(np.isfinite(w).all() for w in model.get_weights())
    assert history["accuracy"][-1] >= 0.9


def test_an_unknown_rms_form_is_a_clear_error():
    optimizer = optimizer_adafactor()
    optimizer.rms_form = "direct"
    with pytest.raises(
        ValueError, match="`rms_form` must be one of 'auto', 'fused', 'matvec'; got 'direct'"
    ):
        optimizer.build([keras.Variable(np.zeros((3, 2)))])


def test_every_rms_form_follows_keras(rms_form):
    kwargs = {"clip_threshold": 0.05}  # so that the clip is active
    assert_close(
        run_eagerly(optimizer_adafactor(**kwargs)),
        run_eagerly(keras.optimizers.Adafactor(**kwargs)),
    )
