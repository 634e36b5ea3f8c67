"""Cross-language parity in one Python process: the R function, called
through rpy2 (see r_bridge for how), gives the same optimizer and the same
training, bit for bit, as the Python factory."""

import keras
import numpy as np
import pytest

from adafactor import Adafactor, memory_report, optimizer_adafactor
from r_bridge import r

SCHEDULE_R = "learning_rate_schedule_exponential_decay(0.1, 10, 0.5)"

# R call -> the same arguments in Python.
GRID = {
    "defaults": ("optimizer_adafactor()", {}),
    "NULLs": (
        "optimizer_adafactor(weight_decay = NULL, clipnorm = NULL, "
        "ema_overwrite_frequency = NULL, loss_scale_factor = NULL, "
        "gradient_accumulation_steps = NULL)",
        {},
    ),
    "R integers": (
        "optimizer_adafactor(learning_rate = 1L, use_ema = TRUE, "
        "ema_overwrite_frequency = 10L, gradient_accumulation_steps = 2L)",
        dict(
            learning_rate=1.0,
            use_ema=True,
            ema_overwrite_frequency=10,
            gradient_accumulation_steps=2,
        ),
    ),
    "R doubles": (
        "optimizer_adafactor(use_ema = TRUE, ema_overwrite_frequency = 10, "
        "gradient_accumulation_steps = 4)",
        dict(use_ema=True, ema_overwrite_frequency=10, gradient_accumulation_steps=4),
    ),
    "positional": (
        "optimizer_adafactor(0.01, -0.5, 1e-20)",
        dict(learning_rate=0.01, beta_2_decay=-0.5, epsilon_1=1e-20),
    ),
    "every argument": (
        "optimizer_adafactor(learning_rate = 0.02, beta_2_decay = -0.6, "
        "epsilon_1 = 1e-25, epsilon_2 = 0.002, clip_threshold = 2, "
        "relative_step = FALSE, weight_decay = 0.01, global_clipnorm = 1.5, "
        "use_ema = TRUE, ema_momentum = 0.95, ema_overwrite_frequency = 7, "
        "name = 'from_r', loss_scale_factor = 128, gradient_accumulation_steps = 3)",
        dict(
            learning_rate=0.02,
            beta_2_decay=-0.6,
            epsilon_1=1e-25,
            epsilon_2=0.002,
            clip_threshold=2.0,
            relative_step=False,
            weight_decay=0.01,
            global_clipnorm=1.5,
            use_ema=True,
            ema_momentum=0.95,
            ema_overwrite_frequency=7,
            name="from_r",
            loss_scale_factor=128.0,
            gradient_accumulation_steps=3,
        ),
    ),
    "... extras": (
        "optimizer_adafactor(scale_parameter = FALSE, beta_1 = 0.9, "
        "factored = FALSE, min_dim_size_to_factor = 32, clipvalue = 0.5, "
        "momentum_dtype = 'bfloat16')",
        dict(
            scale_parameter=False,
            beta_1=0.9,
            momentum_dtype="bfloat16",
            factored=False,
            min_dim_size_to_factor=32,
            clipvalue=0.5,
        ),
    ),
    "rounding": (
        "optimizer_adafactor(stochastic_rounding = FALSE, seed = 2147483647)",
        dict(stochastic_rounding=False, seed=2**31 - 1),
    ),
    "schedule": (
        f"optimizer_adafactor(learning_rate = {SCHEDULE_R})",
        dict(learning_rate=keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.5)),
    ),
}


@pytest.mark.parametrize("case", GRID)
def test_r_made_optimizer_has_the_python_config(case):
    r_call, python_kwargs = GRID[case]
    from_r = r(r_call)
    assert type(from_r) is Adafactor
    expected = optimizer_adafactor(**python_kwargs).get_config()
    assert from_r.get_config() == expected
    # The config as R sees it, converted back, is the same too.
    assert r(f"{r_call}$get_config()") == expected


@pytest.mark.parametrize(
    "r_value,python_kwargs",
    [
        ("clip_threshold = 0", dict(clip_threshold=0.0)),
        ("beta_2_decay = 0.5", dict(beta_2_decay=0.5)),
        ("relative_step = 'yes'", dict(relative_step="yes")),
        ("ema_overwrite_frequency = 2.5", dict(ema_overwrite_frequency=2.5)),
        ("clipnorm = 1, clipvalue = 1", dict(clipnorm=1.0, clipvalue=1.0)),
        ("bogus = 1", dict(bogus=1.0)),
        ("beta1 = 0.9", dict(beta1=0.9)),
    ],
)
def test_r_errors_carry_the_python_message(r_value, python_kwargs):
    with pytest.raises(ValueError) as python_error:
        optimizer_adafactor(**python_kwargs)
    r_message = r(f"tryCatch(optimizer_adafactor({r_value}), adafactor_error = conditionMessage)")
    assert r_message == str(python_error.value)


def fixed_model():
    keras.utils.set_random_seed(11)
    return keras.Sequential(
        [
            keras.Input((5,)),
            keras.layers.Dense(12, activation="relu"),
            keras.layers.Dense(3),
        ]
    )


def train(optimizer, steps=30):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(steps * 8, 5)).astype("float32")
    y = rng.integers(0, 3, size=steps * 8)
    model = fixed_model()
    model.compile(
        optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    assert int(optimizer.iterations) == steps
    return model.get_weights()


def test_training_with_the_r_made_optimizer_is_bit_for_bit_the_same():
    r_call = (
        "optimizer_adafactor(learning_rate = 0.05, clipnorm = 1, "
        "use_ema = TRUE, ema_overwrite_frequency = 5L, beta_1 = 0)"
    )
    from_r = train(r(r_call))
    from_python = train(
        optimizer_adafactor(
            learning_rate=0.05, clipnorm=1.0, use_ema=True, ema_overwrite_frequency=5, beta_1=0.0
        )
    )
    initial = fixed_model().get_weights()
    assert not np.array_equal(from_r[0], initial[0])
    for a, b in zip(from_r, from_python, strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)


# The memory report's checks with compiled_for, from R and from Python: one
# message (TensorFlow here, where the JAX step cannot be compiled, and JAX
# without libtpu or JAX's CUDA plugin: `make test-parity` runs both).
R_MODEL = (
    "model <- keras_model_sequential(input_shape = 6) |> layer_dense(3); "
    "model |> compile(optimizer = optimizer_adafactor(), loss = 'mse'); "
    "batch <- list(array(0, c(4, 6)), array(0, c(4, 3)))"
)


def python_model():
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)])
    model.compile(optimizer=optimizer_adafactor(), loss="mse")
    return model, (np.zeros((4, 6)), np.zeros((4, 3)))


@pytest.mark.parametrize(
    "r_arguments,python_arguments",
    [
        ("batch = batch, compiled_for = 'Z100 x 4'", dict(compiled_for=["Z100 x 4"])),
        (
            "batch = batch, compiled_for = c('v5e 2x2', 'H100 x 9')",
            dict(compiled_for=["v5e 2x2", "H100 x 9"]),
        ),
        ("batch = batch, compiled_for = 4", dict(compiled_for=4)),
        ("compiled_for = 'v5e 2x2'", dict(batch=None, compiled_for=["v5e 2x2"])),
        (
            "batch = list(array(0, c(4, 6)), 2), compiled_for = 'v5e 2x2'",
            dict(batch=[np.zeros((4, 6)), 2.0], compiled_for=["v5e 2x2"]),
        ),
        ("batch = batch", dict(compiled_for=None)),
        # Past the checks: the backend (TensorFlow), or the missing compiler (JAX).
        ("batch = batch, compiled_for = 'v5e 2x2'", dict(compiled_for=["v5e 2x2"])),
        ("batch = batch, compiled_for = 'L4 x 1'", dict(compiled_for=["L4 x 1"])),
    ],
)
def test_r_memory_report_errors_carry_the_python_message(r_arguments, python_arguments):
    model, batch = python_model()
    python_arguments = {"batch": batch, **python_arguments}
    with pytest.raises((ValueError, ImportError)) as python_error:
        memory_report(model, **python_arguments)
    r_message = r(
        f"{R_MODEL}; tryCatch(adafactor_memory(model, {r_arguments}), "
        "adafactor_error = conditionMessage)"
    )
    assert r_message == str(python_error.value)
