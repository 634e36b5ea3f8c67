"""Coercion and validation of every optimizer argument: the one source of truth.

R and Python users reach the same rules: the R wrapper forwards its arguments
here, and uses `accepted()` for the few checks that must happen before an R
value is converted (NA, vectors, lists).
"""

from __future__ import annotations

import difflib
import math
import numbers
from collections.abc import Callable
from typing import Any

import numpy as np
from keras.optimizers.schedules import LearningRateSchedule

from adafactor._targets import ACCEPTED_TARGETS

# What each argument accepts, in words shown to R and Python users alike.
ACCEPTED = {
    "learning_rate": "a finite number >= 0, a LearningRateSchedule or a callable",
    "beta_2_decay": "a finite number < 0",
    "epsilon_1": "a finite number >= 0",
    "epsilon_2": "a finite number >= 0",
    "clip_threshold": "a finite number > 0",
    "relative_step": "TRUE/True or FALSE/False",
    "weight_decay": "NULL/None or a finite number >= 0",
    "clipnorm": "NULL/None or a finite number > 0",
    "clipvalue": "NULL/None or a finite number > 0",
    "global_clipnorm": "NULL/None or a finite number > 0",
    "use_ema": "TRUE/True or FALSE/False",
    "ema_momentum": "a number in [0, 1]",
    "ema_overwrite_frequency": "NULL/None or a whole number >= 1",
    "name": "a non-empty string",
    "loss_scale_factor": "NULL/None or a finite number > 0",
    "gradient_accumulation_steps": "NULL/None or a whole number >= 2",
    # Additional arguments (R's `...`), see the optimizer's docstring.
    "scale_parameter": "TRUE/True or FALSE/False",
    "warmup_init": "TRUE/True or FALSE/False",
    "beta_1": "NULL/None or a number in [0, 1)",
    "min_dim_size_to_factor": "NULL/None or a whole number >= 1",
    "factored": "TRUE/True or FALSE/False",
    "momentum_dtype": '"float32" or "bfloat16"',
    "stochastic_rounding": "TRUE/True or FALSE/False",
    "seed": "NULL/None or a whole number in [0, 2^31)",
}

# memory_report()'s own arguments (beside the optimizer's), in the same words.
REPORT_ACCEPTED = {
    "compiled_for": ACCEPTED_TARGETS,
    "batch": (
        "one batch as fit() takes it: x, list(x, y) / (x, y), or with sample weights, "
        "each an array or a full shape with a dtype (jax.ShapeDtypeStruct), the batch "
        "size included"
    ),
}

# The dtypes a momentum may be stored in: computed in float32, stored rounded.
MOMENTUM_DTYPES = ("float32", "bfloat16")

# Seeds are below 2^31, an R integer: reticulate made 2^32 - 1 a -1 in R.
SEED_LIMIT = 2**31

EXTRA_ARGUMENTS = (
    "scale_parameter",
    "warmup_init",
    "beta_1",
    "min_dim_size_to_factor",
    "factored",
    "momentum_dtype",
    "stochastic_rounding",
    "seed",
)


class ArgumentError(ValueError):
    """A bad optimizer argument; the message names it, its value and the rule."""


def accepted(argument: str) -> str:
    """What `argument` accepts, in words."""
    return {**ACCEPTED, **REPORT_ACCEPTED}[argument]


def error_message(argument: str, received: str) -> str:
    """The error text for a bad `argument`; `received` is the value as the
    caller's language writes it (R's wrapper passes its own deparse)."""
    rule = {**ACCEPTED, **REPORT_ACCEPTED}.get(argument, "a single value")
    return f"`{argument}` must be {rule}. Received: {argument}={received}"


def _fail(argument: str, value: Any) -> None:
    raise ArgumentError(error_message(argument, repr(value)))


def _is_number(value: Any) -> bool:
    # bool is an int in Python, never a number here; 0-d arrays count.
    if isinstance(value, (bool, np.bool_)):
        return False
    if isinstance(value, np.ndarray):
        return value.ndim == 0 and np.issubdtype(value.dtype, np.number)
    return isinstance(value, numbers.Real)


def _number(argument: str, value: Any, ok: Callable[[float], bool]) -> float:
    if not _is_number(value):
        _fail(argument, value)
    number = float(value)
    if math.isnan(number) or not ok(number):
        _fail(argument, value)
    return number


def _finite(check: Callable[[float], bool]) -> Callable[[float], bool]:
    return lambda x: math.isfinite(x) and check(x)


def _optional(coerce: Callable[[str, Any], Any]) -> Callable[[str, Any], Any]:
    return lambda argument, value: None if value is None else coerce(argument, value)


def _whole(minimum: int) -> Callable[[str, Any], int]:
    def coerce(argument: str, value: Any) -> int:
        number = _number(argument, value, _finite(lambda x: x >= minimum))
        if number != int(number):
            _fail(argument, value)
        return int(number)

    return coerce


def _real(check: Callable[[float], bool]) -> Callable[[str, Any], float]:
    return lambda argument, value: _number(argument, value, check)


def _boolean(argument: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        _fail(argument, value)
    return bool(value)


def _learning_rate(argument: str, value: Any) -> Any:
    if isinstance(value, LearningRateSchedule) or callable(value):
        return value
    return _number(argument, value, _finite(lambda x: x >= 0))


def _momentum_dtype(argument: str, value: Any) -> str:
    if not isinstance(value, str) or value not in MOMENTUM_DTYPES:
        _fail(argument, value)
    return value


def _seed(argument: str, value: Any) -> int:
    seed = _whole(0)(argument, value)
    if seed >= SEED_LIMIT:
        _fail(argument, value)
    return seed


def _name(argument: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        _fail(argument, value)
    return value


_COERCE = {
    "learning_rate": _learning_rate,
    "beta_2_decay": _real(_finite(lambda x: x < 0)),
    "epsilon_1": _real(_finite(lambda x: x >= 0)),
    "epsilon_2": _real(_finite(lambda x: x >= 0)),
    "clip_threshold": _real(_finite(lambda x: x > 0)),
    "relative_step": _boolean,
    "weight_decay": _optional(_real(_finite(lambda x: x >= 0))),
    "clipnorm": _optional(_real(_finite(lambda x: x > 0))),
    "clipvalue": _optional(_real(_finite(lambda x: x > 0))),
    "global_clipnorm": _optional(_real(_finite(lambda x: x > 0))),
    "use_ema": _boolean,
    "ema_momentum": _real(lambda x: 0 <= x <= 1),
    "ema_overwrite_frequency": _optional(_whole(1)),
    "name": _name,
    "loss_scale_factor": _optional(_real(_finite(lambda x: x > 0))),
    "gradient_accumulation_steps": _optional(_whole(2)),
    "scale_parameter": _boolean,
    "warmup_init": _boolean,
    "beta_1": _optional(_real(lambda x: 0 <= x < 1)),
    "min_dim_size_to_factor": _optional(_whole(1)),
    "factored": _boolean,
    "momentum_dtype": _momentum_dtype,
    "stochastic_rounding": _boolean,
    "seed": _optional(_seed),
}


# What other Adafactors (Hugging Face, torch.optim, optax, t5x) and SGD call
# an argument that has another name here.
OTHER_NAMES = {
    "lr": "learning_rate",
    "momentum": "beta_1",
    "decay_rate": "beta_2_decay",
    "multiply_by_parameter_scale": "scale_parameter",
    "dtype_momentum": "momentum_dtype",
    "random_seed": "seed",
}


def _did_you_mean(name: str) -> str:
    """ " (did you mean `beta_1`?)" for another library's name of an
    argument, or a near miss of one (case, underscores, a typo); else ""."""
    spelled = {key.replace("_", "").lower(): key for key in _COERCE}
    nearest = (
        OTHER_NAMES.get(name)
        or spelled.get(name.replace("_", "").lower())
        or next(iter(difflib.get_close_matches(name, list(_COERCE), n=1, cutoff=0.75)), None)
    )
    return f" (did you mean `{nearest}`?)" if nearest else ""


def coerce_arguments(arguments: dict[str, Any]) -> dict[str, Any]:
    """Validate `arguments` and return them coerced to what Keras expects.

    Numbers become Python floats (numpy scalars and R integers included),
    whole numbers become ints, and any rule broken raises `ArgumentError`.
    """
    unknown = sorted(set(arguments) - set(_COERCE))
    if unknown:
        received = ", ".join(f"{key}={arguments[key]!r}{_did_you_mean(key)}" for key in unknown)
        raise ArgumentError(
            f"Unknown argument(s): {received}. Accepted additional "
            f"arguments: {', '.join(EXTRA_ARGUMENTS)}."
        )
    coerced = {key: _COERCE[key](key, value) for key, value in arguments.items()}
    clips = [
        key for key in ("clipnorm", "clipvalue", "global_clipnorm") if coerced.get(key) is not None
    ]
    if len(clips) > 1:
        raise ArgumentError(
            "At most one of `clipnorm`, `clipvalue` and `global_clipnorm` may "
            f"be set. Received: {', '.join(f'{k}={coerced[k]!r}' for k in clips)}"
        )
    if coerced.get("warmup_init") and not coerced.get("relative_step", True):
        raise ArgumentError(
            "`warmup_init` needs `relative_step` TRUE/True. Received: "
            "warmup_init=True, relative_step=False"
        )
    if coerced.get("momentum_dtype", "float32") != "float32" and coerced.get("beta_1") is None:
        # Without beta_1 there is no momentum: a smaller one would save nothing.
        raise ArgumentError(
            "`momentum_dtype` needs `beta_1` (a momentum to store). Received: "
            f"momentum_dtype={coerced['momentum_dtype']!r}, beta_1=None"
        )
    return coerced
