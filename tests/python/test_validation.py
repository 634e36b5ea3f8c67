"""Every validation rule, from the table the R tests use too, and a
property-based test: random valid argument sets train, random invalid ones
raise the documented error and never anything else."""

import csv
import math

import hypothesis.strategies as st
import keras
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from adafactor import ArgumentError, accepted, optimizer_adafactor
from conftest import ROOT

with open(ROOT / "tests" / "testthat" / "fixtures" / "bad-arguments.csv") as table:
    BAD = list(csv.DictReader(table))
NAMES = {"nan": math.nan, "inf": math.inf}


def python_value(text):
    return eval(text, {}, NAMES)


def with_context(argument, value):
    """The other arguments a rule needs to be reached."""
    kwargs = {argument: value}
    if argument == "ema_overwrite_frequency":
        kwargs["use_ema"] = True
    return kwargs


@pytest.mark.parametrize("row", BAD, ids=lambda r: f"{r['argument']}={r['python']}")
def test_each_bad_value_names_argument_value_and_rule(row):
    argument, value = row["argument"], python_value(row["python"])
    with pytest.raises(ArgumentError) as info:
        optimizer_adafactor(**with_context(argument, value))
    assert str(info.value) == (
        f"`{argument}` must be {accepted(argument)}. Received: {argument}={value!r}"
    )


def test_every_rule_has_a_bad_value_in_the_table():
    from adafactor._arguments import ACCEPTED

    assert {row["argument"] for row in BAD} == set(ACCEPTED)


def test_ema_momentum_is_checked_even_without_ema():
    with pytest.raises(ArgumentError, match="ema_momentum"):
        optimizer_adafactor(use_ema=False, ema_momentum=7)


def test_at_most_one_clipping_argument():
    with pytest.raises(ArgumentError, match="At most one of `clipnorm`"):
        optimizer_adafactor(clipnorm=1.0, global_clipnorm=1.0)


def test_legitimate_values_keras_rejects_are_accepted():
    assert optimizer_adafactor(learning_rate=1).get_config()["learning_rate"] == 1.0
    assert optimizer_adafactor(learning_rate=np.float32(0.5)).get_config()["learning_rate"] == 0.5
    # A 0-d array, as reticulate hands over an R array of length 1.
    assert optimizer_adafactor(clip_threshold=np.array(2.0)).get_config()["clip_threshold"] == 2.0
    assert (
        optimizer_adafactor(ema_momentum=1, epsilon_1=0, epsilon_2=0, learning_rate=0).get_config()[
            "ema_momentum"
        ]
        == 1.0
    )


# -- property-based ----------------------------------------------------------

positive = st.floats(1e-6, 1e3)
VALID = st.fixed_dictionaries(
    {
        "learning_rate": st.floats(0, 1),
        "beta_2_decay": st.floats(-2, -1e-3),
        "epsilon_1": st.floats(0, 1e-3),
        "epsilon_2": st.floats(0, 1e-1),
        "clip_threshold": positive,
        "relative_step": st.booleans(),
        "weight_decay": st.none() | st.floats(0, 0.5),
        "use_ema": st.booleans(),
        "ema_momentum": st.floats(0, 1),
        "ema_overwrite_frequency": st.none() | st.integers(1, 5),
        "gradient_accumulation_steps": st.none() | st.integers(2, 3),
        "scale_parameter": st.booleans(),
        "beta_1": st.none() | st.floats(0, 0.99),
        "min_dim_size_to_factor": st.none() | st.integers(1, 8),
        "factored": st.booleans(),
    },
    optional={"clipnorm": positive},
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kwargs=VALID, seed=st.integers(0, 2**16))
def test_random_valid_arguments_construct_and_take_finite_steps(kwargs, seed):
    optimizer = optimizer_adafactor(**kwargs)
    rng = np.random.default_rng(seed)
    variables = [
        keras.Variable(rng.normal(size=s).astype("float32")) for s in [(4, 3), (3,), (2, 3, 5)]
    ]
    for _ in range(3):
        grads = [rng.normal(size=v.shape).astype("float32") for v in variables]
        optimizer.apply(grads, variables)
    assert all(np.isfinite(keras.ops.convert_to_numpy(v)).all() for v in variables)


bad_number = st.sampled_from([math.nan, math.inf, -math.inf, -1.0, "1", True, [1.0]])


@settings(max_examples=60, deadline=None)
@given(
    argument=st.sampled_from(
        [
            "learning_rate",
            "beta_2_decay",
            "epsilon_1",
            "epsilon_2",
            "clip_threshold",
            "weight_decay",
            "clipnorm",
            "clipvalue",
            "global_clipnorm",
            "loss_scale_factor",
            "gradient_accumulation_steps",
            "ema_overwrite_frequency",
            "min_dim_size_to_factor",
            "beta_1",
            "ema_momentum",
        ]
    ),
    value=bad_number,
)
def test_random_invalid_arguments_raise_the_documented_error(argument, value):
    if argument == "beta_2_decay" and value == -1.0:
        value = 1.0  # -1 is a valid decay
    with pytest.raises(ArgumentError) as info:
        optimizer_adafactor(**with_context(argument, value))
    assert f"`{argument}` must be" in str(info.value)
