"""The Python factory: signature, defaults, coercions, `**kwargs`, errors."""

import inspect

import keras
import numpy as np
import pytest

import adafactor
from adafactor import ArgumentError, optimizer_adafactor
from conftest import r_default_to_python, reference_usage

SIGNATURE = inspect.signature(optimizer_adafactor)


def test_signature_matches_reference_usage():
    usage = reference_usage()
    params = list(SIGNATURE.parameters.values())
    python_names = [p.name if p.kind is not p.VAR_KEYWORD else "..." for p in params]
    # R's `...` sits between `name` and `loss_scale_factor`; in Python the
    # arguments after it are keyword-only and **kwargs comes last.
    r_names = [name for name, _ in usage]
    dots = r_names.index("...")
    assert python_names == r_names[:dots] + r_names[dots + 1 :] + ["..."]
    keyword_only = [p.name for p in params if p.kind is p.KEYWORD_ONLY]
    assert keyword_only == r_names[dots + 1 :]


def assert_same_default(actual, expected, name):
    # The learning rate lives in a float32 variable, as in every Keras optimizer.
    assert actual == (
        pytest.approx(expected, rel=1e-7) if isinstance(expected, float) else expected
    ), name
    if isinstance(expected, bool) or expected is None:
        assert actual is expected, name


def test_defaults_match_reference_usage():
    for name, default in reference_usage():
        if name != "...":
            assert_same_default(
                SIGNATURE.parameters[name].default, r_default_to_python(default), name
            )


def test_returns_a_keras_optimizer_whose_config_carries_every_argument():
    opt = optimizer_adafactor()
    assert isinstance(opt, keras.optimizers.Optimizer)
    assert isinstance(opt, adafactor.Adafactor)
    config = opt.get_config()
    for name, default in reference_usage():
        if name != "...":
            assert_same_default(config[name], r_default_to_python(default), name)


# Every argument away from its default (learning rates exact in float32);
# `warmup_init` needs `relative_step`, and one clip at a time, hence three.
NON_DEFAULT = [
    dict(
        learning_rate=0.25,
        beta_2_decay=-0.6,
        epsilon_1=1e-25,
        epsilon_2=0.002,
        clip_threshold=2.0,
        weight_decay=0.01,
        clipnorm=1.5,
        use_ema=True,
        ema_momentum=0.95,
        ema_overwrite_frequency=7,
        name="mine",
        loss_scale_factor=128.0,
        gradient_accumulation_steps=3,
        scale_parameter=False,
        warmup_init=True,
        beta_1=0.9,
        min_dim_size_to_factor=32,
        factored=False,
        momentum_dtype="bfloat16",
        stochastic_rounding=False,
        seed=2**31 - 1,
    ),
    dict(relative_step=False, clipvalue=0.5),
    dict(global_clipnorm=0.75),
]

# What get_config() must hold: every argument, written out (a key lost or a
# value changed on the way fails).
DEFAULT_CONFIG = dict(
    name="adafactor",
    learning_rate=0.001,
    weight_decay=None,
    clipnorm=None,
    global_clipnorm=None,
    clipvalue=None,
    use_ema=False,
    ema_momentum=0.99,
    ema_overwrite_frequency=None,
    loss_scale_factor=None,
    gradient_accumulation_steps=None,
    beta_2_decay=-0.8,
    epsilon_1=1e-30,
    epsilon_2=0.001,
    clip_threshold=1.0,
    relative_step=True,
    scale_parameter=True,
    warmup_init=False,
    beta_1=None,
    min_dim_size_to_factor=None,
    factored=True,
    momentum_dtype="float32",
    stochastic_rounding=True,
)


def global_seed():
    """Keras's global seed as `keras.utils.set_random_seed()` stores it, or 0."""
    from keras.src.backend.common import global_state

    return global_state.get_global_attribute("global_random_seed") or 0


def test_the_seed_defaults_to_keras_global_seed():
    keras.utils.set_random_seed(2**31 + 7)  # NumPy's range; kept below 2^31, an R integer
    assert optimizer_adafactor().get_config()["seed"] == 7
    keras.utils.set_random_seed(7)
    assert optimizer_adafactor().get_config()["seed"] == 7
    assert optimizer_adafactor(seed=3).get_config()["seed"] == 3
    keras.utils.set_random_seed(5)
    # Resolved once: a seed set afterwards leaves a made optimizer alone,
    # and its config restores the same seed.
    made = optimizer_adafactor()
    keras.utils.set_random_seed(11)
    assert adafactor.Adafactor.from_config(made.get_config()).seed == 5


def expected_config(arguments):
    # The seed: Keras's global seed where one is set, else 0
    # (test_the_seed_defaults_to_keras_global_seed).
    config = {**DEFAULT_CONFIG, "seed": global_seed(), **arguments}
    # The default learning rate lives in a float32 variable, as in Keras.
    config["learning_rate"] = pytest.approx(config["learning_rate"], rel=1e-7)
    return config


def test_config_holds_every_argument_by_value():
    assert optimizer_adafactor().get_config() == expected_config({})
    for arguments in NON_DEFAULT:
        assert optimizer_adafactor(**arguments).get_config() == expected_config(arguments)


@pytest.mark.parametrize("arguments", NON_DEFAULT, ids=["warmup", "relative_step", "global"])
def test_config_round_trips(arguments):
    opt = optimizer_adafactor(**arguments)
    again = adafactor.Adafactor.from_config(opt.get_config())
    assert again.get_config() == expected_config(arguments)
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(opt))
    assert type(restored) is adafactor.Adafactor
    assert restored.get_config() == expected_config(arguments)


@pytest.mark.parametrize("arguments", NON_DEFAULT, ids=["warmup", "relative_step", "global"])
def test_saved_model_keeps_every_argument(arguments, tmp_path):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer=optimizer_adafactor(**arguments), loss="mse")
    x = np.ones((8, 3), "float32")
    model.fit(x, np.zeros((8, 2), "float32"), epochs=1, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path).optimizer
    assert type(loaded) is adafactor.Adafactor
    assert loaded.get_config() == expected_config(arguments)


@pytest.mark.parametrize("value", [1, np.int32(1), np.float32(0.5), np.float64(2)])
def test_learning_rate_numbers_become_floats(value):
    opt = optimizer_adafactor(learning_rate=value)
    lr = opt.get_config()["learning_rate"]
    assert type(lr) is float and lr == pytest.approx(float(value))


@pytest.mark.parametrize(
    "argument,minimum", [("ema_overwrite_frequency", 1), ("gradient_accumulation_steps", 2)]
)
@pytest.mark.parametrize("make", [float, np.int64, np.float32, int])
def test_integral_numbers_become_ints(argument, minimum, make):
    opt = optimizer_adafactor(use_ema=True, **{argument: make(10)})
    value = opt.get_config()[argument]
    assert type(value) is int and value == 10


@pytest.mark.parametrize("argument", ["ema_overwrite_frequency", "gradient_accumulation_steps"])
def test_non_integral_numbers_are_errors(argument):
    with pytest.raises(
        ArgumentError, match=f"`{argument}` must be .*whole number.*Received: {argument}=2.5"
    ):
        optimizer_adafactor(use_ema=True, **{argument: 2.5})


def test_learning_rate_schedule_and_callable_pass_through():
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.5)
    opt = optimizer_adafactor(learning_rate=schedule)
    assert opt.get_config()["learning_rate"]["class_name"] == "ExponentialDecay"
    opt = optimizer_adafactor(learning_rate=lambda: 0.25)
    assert float(opt.learning_rate) == 0.25


def test_kwargs_reach_the_optimizer():
    opt = optimizer_adafactor(
        scale_parameter=False, factored=False, min_dim_size_to_factor=np.float64(128)
    )
    config = opt.get_config()
    assert config["scale_parameter"] is False
    assert config["factored"] is False
    assert config["min_dim_size_to_factor"] == 128


def test_unknown_kwargs_are_named_in_the_error():
    with pytest.raises(ArgumentError, match=r"Unknown argument\(s\): bogus=1\. Accepted"):
        optimizer_adafactor(bogus=1)


@pytest.mark.parametrize(
    "given, meant",
    [
        ("beta1", "beta_1"),  # the underscore left out
        ("Beta_1", "beta_1"),  # the case
        ("scale_paramter", "scale_parameter"),  # a typo
        ("learningrate", "learning_rate"),
        ("lr", "learning_rate"),  # another library's name
        ("momentum", "beta_1"),
        ("dtype_momentum", "momentum_dtype"),
    ],
)
def test_a_misspelt_argument_is_answered_with_the_nearest_accepted_name(given, meant):
    with pytest.raises(ArgumentError) as error:
        optimizer_adafactor(**{given: 0.5})
    assert str(error.value).startswith(
        f"Unknown argument(s): {given}=0.5 (did you mean `{meant}`?). Accepted additional"
    )


def test_keyword_only_after_name():
    with pytest.raises(TypeError):
        optimizer_adafactor(
            0.001, -0.8, 1e-30, 1e-3, 1.0, True, None, None, None, None, False, 0.99, None, "n", 2.0
        )


def test_errors_are_value_errors_naming_argument_value_and_rule():
    with pytest.raises(ValueError) as info:
        optimizer_adafactor(clip_threshold=0)
    message = str(info.value)
    assert message == ("`clip_threshold` must be a finite number > 0. Received: clip_threshold=0")
    assert adafactor.accepted("clip_threshold") in message


def test_repr_shows_the_non_default_arguments_and_makes_the_same_optimizer():
    from adafactor import Adafactor

    assert repr(optimizer_adafactor()) == "Adafactor()"
    opt = optimizer_adafactor(
        learning_rate=0.01, relative_step=False, name="t5", beta_1=0.9, momentum_dtype="bfloat16"
    )
    assert repr(opt) == (
        "Adafactor(name='t5', learning_rate=0.01, relative_step=False, beta_1=0.9, "
        "momentum_dtype='bfloat16')"
    )
    assert eval(repr(opt), {"Adafactor": Adafactor}).get_config() == opt.get_config()
    # Written out as the defaults are: nothing shown.
    assert repr(optimizer_adafactor(learning_rate=0.001, epsilon_1=1e-30, name="adafactor")) == (
        "Adafactor()"
    )
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.9)
    assert repr(optimizer_adafactor(learning_rate=schedule)) == (
        "Adafactor(learning_rate=<ExponentialDecay>)"
    )
    assert repr(optimizer_adafactor(learning_rate=lambda: 0.5)).startswith(
        "Adafactor(learning_rate=<"
    )
