"""A memory-true Adafactor for Keras 3.

Keras 3.15's `keras.optimizers.Adafactor` keeps a full-size velocity beside
its row and column factors, so it saves no memory. This one keeps, for a
variable of rank >= 2, only the row factor (shape `[:-1]`) and the column
factor (shape `[:-2] + [-1:]`), and never forms the full second moment: its
inverse square root is a row vector times a column vector.

Reference: Shazeer, N. and Stern, M. (2018). Adafactor: Adaptive Learning
Rates with Sublinear Memory Cost. https://arxiv.org/abs/1804.04235
"""

from __future__ import annotations

import inspect
import math
from typing import Any, NamedTuple

import keras
import numpy as np
from keras import ops

from adafactor import _placement, _rounding, _rule, _write
from adafactor._arguments import EXTRA_ARGUMENTS, SEED_LIMIT, coerce_arguments
from adafactor._sparse import pick, split_rows, spread

# The arguments this class keeps; the rest go to Keras's base optimizer.
_OWN_ARGUMENTS = (
    "beta_2_decay",
    "epsilon_1",
    "epsilon_2",
    "clip_threshold",
    "relative_step",
) + EXTRA_ARGUMENTS


class VariableState(NamedTuple):
    """What the optimizer keeps for one variable: the row and column factors
    (rank >= 2, factored) or the full second moment, and the momentum (with
    `beta_1`); None where not kept."""

    row: Any
    col: Any
    second: Any
    momentum: Any


def _unfused_plan():
    """The plan of a factored variable's step where each operation runs
    unfused, one full-size result at a time (PyTorch; TensorFlow without
    XLA): `_torch` or `_tensorflow`, each with `factored_step` and its own
    `rms`. None where a compiler fuses the generic step (TensorFlow under
    XLA)."""
    backend = keras.backend.backend()
    if backend == "torch":
        from adafactor import _torch

        return _torch
    if backend == "tensorflow":
        from adafactor import _tensorflow

        if _tensorflow.runs_unfused():
            return _tensorflow
    return None


def _global_seed() -> int:
    """Keras's global seed (`keras.utils.set_random_seed()`) if one is set,
    else 0."""
    from keras.src.backend.common import global_state

    seed = global_state.get_global_attribute("global_random_seed")
    # NumPy takes seeds below 2^32, the optimizer below SEED_LIMIT.
    return 0 if seed is None else int(seed) % SEED_LIMIT


class _Callable:
    """A learning rate shown as what it is, not by value."""

    def __repr__(self) -> str:
        return "<callable>"


_CALLABLE = _Callable()


def _same_value(value, default) -> bool:
    numbers = (int, float)
    if isinstance(value, numbers) and isinstance(default, numbers):
        if isinstance(value, bool) or isinstance(default, bool):
            return value is default
        return np.float32(value) == np.float32(default)
    return value == default


def _shown(value) -> str:
    """A config value as Python writes it; a float to float32's digits, a
    serialized schedule by its class."""
    if isinstance(value, float):
        return format(value, ".7g")
    if isinstance(value, dict) and "class_name" in value:
        return f"<{value['class_name']}>"
    return repr(value)


@keras.saving.register_keras_serializable(package="adafactor")
class Adafactor(keras.optimizers.Optimizer):
    """Optimizer that implements the Adafactor algorithm, with factored state.

    Adafactor is commonly used in NLP tasks, and has the advantage of taking
    less memory because it only saves partial information of previous
    gradients. The default argument setup is based on the original paper
    (see reference). When gradients are of dimension > 2, the second moment
    is factored over the last 2 dimensions.

    Follows `keras.optimizers.Adafactor` (Keras 3.15) to float32 rounding,
    except:

    - `relative_step=False` turns the iteration-dependent decay
      `min(learning_rate, 1 / sqrt(t))` off, as documented (Keras applies it
      either way);
    - no full-size state: a variable of rank >= 2 keeps n + m numbers;
    - finite where Keras gives NaN: a zero gradient row and column (a dead
      ReLU unit) and float16 / bfloat16 variables (state kept in float32).

    Args:
        learning_rate: A float, a `LearningRateSchedule` or a callable that
            takes no arguments. Defaults to 0.001.
        beta_2_decay: The decay rate of beta_2. Defaults to -0.8.
        epsilon_1: A small offset to keep the denominator away from 0.
            Defaults to 1e-30.
        epsilon_2: A small offset to keep the learning rate from becoming too
            small over time. Defaults to 1e-3.
        clip_threshold: Clipping threshold of the update's RMS, independent
            of `clipnorm`, `clipvalue` and `global_clipnorm`. Defaults to 1.0.
        relative_step: If True, the step size is
            `min(learning_rate, 1 / sqrt(t))`; if False, `learning_rate`.
        scale_parameter: If True (default), the step size is multiplied by
            `max(epsilon_2, RMS(variable))`.
        warmup_init: If True (needs `relative_step=True`), the relative step
            is `min(1e-6 * t, 1 / sqrt(t))`, as in Hugging Face's Adafactor;
            `learning_rate` is then not used.
        beta_1: None (default) or a momentum in [0, 1): an exponential moving
            average of the final update (full-size state, `momentum_dtype`).
        min_dim_size_to_factor: None (default: factor every variable of
            rank >= 2) or an integer: factor only when both of the last two
            dimensions are at least this size.
        factored: If False, keep a full second moment for every variable.
        momentum_dtype: "float32" (default) or "bfloat16": the dtype the
            momentum is stored in (with `beta_1`). It is computed in float32
            and stored rounded, as optax's and t5x's `dtype_momentum`; the
            step uses the unrounded value. "bfloat16" halves the only
            full-size state. An error without `beta_1`.
        stochastic_rounding: If True (default), the new value of a bfloat16
            or float16 variable is computed in float32 and rounded
            stochastically (its expectation is the float32 value), so that
            steps smaller than half the dtype's spacing still move it; if
            False, rounded to nearest. float32 variables are never rounded.
        seed: None (default) or a whole number in [0, 2^31): the seed of the
            stochastic rounding. The rounding's random bits come from the
            seed, the step count and the variable's position, so a run
            repeats, a restored checkpoint continues bit for bit and every
            replica rounds alike. None takes Keras's global seed
            (`keras.utils.set_random_seed()`) when one is set, else 0; the
            value is kept in `get_config()`.
        **kwargs: Keras's base optimizer arguments (`weight_decay`,
            `clipnorm`, `clipvalue`, `global_clipnorm`, `use_ema`,
            `ema_momentum`, `ema_overwrite_frequency`, `loss_scale_factor`,
            `gradient_accumulation_steps`, `name`).
    """

    def __init__(
        self,
        learning_rate: Any = 0.001,
        beta_2_decay: float = -0.8,
        epsilon_1: float = 1e-30,
        epsilon_2: float = 1e-3,
        clip_threshold: float = 1.0,
        relative_step: bool = True,
        scale_parameter: bool = True,
        warmup_init: bool = False,
        beta_1: float | None = None,
        min_dim_size_to_factor: int | None = None,
        factored: bool = True,
        momentum_dtype: str = "float32",
        stochastic_rounding: bool = True,
        seed: int | None = None,
        name: str = "adafactor",
        **kwargs: Any,
    ):
        arguments = coerce_arguments(
            dict(
                learning_rate=learning_rate,
                beta_2_decay=beta_2_decay,
                epsilon_1=epsilon_1,
                epsilon_2=epsilon_2,
                clip_threshold=clip_threshold,
                relative_step=relative_step,
                scale_parameter=scale_parameter,
                warmup_init=warmup_init,
                beta_1=beta_1,
                min_dim_size_to_factor=min_dim_size_to_factor,
                factored=factored,
                momentum_dtype=momentum_dtype,
                stochastic_rounding=stochastic_rounding,
                seed=seed,
                name=name,
                **kwargs,
            )
        )
        own = {key: arguments.pop(key) for key in _OWN_ARGUMENTS}
        super().__init__(**arguments)  # Keras's base arguments
        for key, value in own.items():
            setattr(self, key, value)
        if self.seed is None:
            self.seed = _global_seed()

    # The update's RMS form: "auto" (chosen for the platform), or "fused" or
    # "matvec" forced on every platform (tests, `make bench`).
    rms_form = "auto"

    # -- state -------------------------------------------------------------

    def _is_factored(self, variable) -> bool:
        shape = variable.shape
        if not self.factored or len(shape) < 2:
            return False
        smallest = self.min_dim_size_to_factor or 1
        return min(shape[-2], shape[-1]) >= smallest

    def state_specs(self, variable) -> list[tuple[str, tuple, str, Any]]:
        """`(kind, shape, dtype, layout)` of each state variable kept for
        `variable`: row and column factors, or a full second moment where it
        is not factored, and a momentum only with beta_1. The one rule that
        `build()` and `adafactor.memory_report()` both follow.

        Named and laid out as Keras's `add_variable_from_reference` does
        (the variable's layout), with the factors' reduced axis left out of
        both shape and layout: under a Keras distribution each device holds
        the state of its own shard, never a full copy."""
        if self._overwrite_variable_with_gradient(variable):
            return []
        shape = tuple(variable.shape)
        layout = getattr(variable, "_layout", None)
        dtype = _rule.state_dtype(variable.dtype)
        if self._is_factored(variable):
            rank = len(shape)
            specs = [
                ("row", shape[:-1], dtype, _placement.layout_without_axis(layout, -1, rank)),
                (
                    "col",
                    shape[:-2] + shape[-1:],
                    dtype,
                    _placement.layout_without_axis(layout, -2, rank),
                ),
            ]
        else:
            specs = [("second", shape, dtype, layout)]
        if self.beta_1 is not None:
            specs.append(("momentum", shape, self.momentum_dtype, layout))
        return specs

    def build(self, var_list):
        """Create the state of `state_specs()` for each variable."""
        if self.built:
            return
        _placement.check_rms_form(self.rms_form)  # before training, not in it
        super().build(var_list)
        self._states = []
        for variable in var_list:
            prefix = getattr(variable, "path", variable.name).replace("/", "_")
            state = {
                kind: self.add_variable(shape, dtype=dtype, layout=layout, name=f"{prefix}_{kind}")
                for kind, shape, dtype, layout in self.state_specs(variable)
            }
            self._states.append(VariableState(*(state.get(k) for k in VariableState._fields)))

    # -- the interface the plans use (`_jax.py`, `_tensorflow.py`, `_torch.py`)

    def state_of(self, variable) -> VariableState:
        """The state kept for `variable`."""
        return self._states[self._get_variable_index(variable)]

    def step_size(self, learning_rate, variable, step, dtype, rms=_rule.rms):
        """rho_t, times max(epsilon_2, RMS(variable)) with scale_parameter;
        `rms` is the backend's form of the RMS."""
        rho = _rule.relative_step(
            ops.cast(learning_rate, dtype), step, self.relative_step, self.warmup_init
        )
        if not self.scale_parameter:
            return rho
        return _rule.step_size(rho, rms(ops.cast(variable, dtype)), ops.cast(self.epsilon_2, dtype))

    def update_factors(self, state, row_mean, col_mean, decay, rows=None, rank=2):
        """Decay the factors towards the means of the clipped square
        gradient over its columns (`row_mean`) and rows (`col_mean`); return
        the row factor over its mean and the column factor, floored (for the
        rows present when `rows` is not None: the sparse axis is axis 0, the
        column factor's too when `rank` > 2)."""
        cap = _rule.limits(state.row.dtype)[1]
        self.assign(state.col, _rule.decayed(state.col, col_mean, decay, self.epsilon_1, cap))
        row_cap = cap / state.row.shape[-1]
        self.assign(state.row, _rule.decayed(state.row, row_mean, decay, self.epsilon_1, row_cap))
        row_norm, col_norm = _rule.normalized(state.row, state.col)
        return pick(rows, row_norm), pick(rows if rank > 2 else None, col_norm)

    def factored_scales(self, state, grad_square, decay, shape, form, rows=None, col_square=None):
        """Update the factors; return the row and column scales (the unclipped
        update is g_ij * row_scale_i * col_scale_j = g_ij / sqrt(v_ij)) and
        the update's mean square, had without forming the update.

        With a row-sparse gradient (`rows` not None) `grad_square` holds the
        rows present only: the factors get what the dense gradient would give
        them, and the scales come back for those rows. `col_square`, where
        given, is what the column sums of a dense gradient take instead of
        `grad_square` (`_rule.capped_square`)."""
        col_rows = rows if len(shape) > 2 else None
        if rows is None:
            col_mean = ops.mean(grad_square if col_square is None else col_square, axis=-2)
        else:
            col_sum = ops.sum(grad_square, axis=-2)
            col_mean = spread(col_rows, col_sum, state.col.shape) / shape[-2]
        row_mean = spread(rows, ops.mean(grad_square, axis=-1), state.row.shape)
        row_norm, col_norm = self.update_factors(state, row_mean, col_mean, decay, rows, len(shape))
        if rows is None and form == "platform":
            from adafactor import _jax

            weighted = _jax.weighted_row_sums_by_platform(grad_square, col_norm)
        else:  # sparse rows: the row sum, beside the row factor's
            dense_form = form if rows is None else "fused"
            weighted = _rule.weighted_row_sums(grad_square, col_norm, dense_form)
        mean_square = _rule.mean_square(weighted, row_norm, math.prod(shape))
        return ops.rsqrt(row_norm), ops.rsqrt(col_norm), mean_square

    def _full_scale(self, second, grad_square, decay, rows, shape):
        """Update a full second moment; return 1 / sqrt(v) (for the rows
        present when `rows` is not None)."""
        tiny, cap = _rule.limits(second.dtype)
        moment = _rule.decayed(second, spread(rows, grad_square, shape), decay, self.epsilon_1, cap)
        self.assign(second, moment)
        return ops.rsqrt(pick(rows, ops.maximum(second, tiny)))

    # -- one variable at a time ----------------------------------------------

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        """Keras's loop over the variables; on JAX with a `_jax.Pipeline` for
        the step compiled for the CPU (`_jax.py`), from the last variable to
        the first, the order in which backpropagation makes the gradients."""
        if keras.backend.backend() == "jax":
            from adafactor import _jax

            self._pipeline = _jax.Pipeline()
            self._in_order = _jax.InOrder(batch_split=_placement.batch_devices() > 1)
            # The step count as traced here: a conditional's branch reading
            # `iterations` would get its value before tracing.
            self._step_count = ops.convert_to_tensor(self.iterations)
            _jax.release_after_compile(grads)
            grads, trainable_variables = grads[::-1], trainable_variables[::-1]
        try:
            super()._backend_update_step(grads, trainable_variables, learning_rate)
        finally:
            self._pipeline = self._step_count = self._in_order = None

    _pipeline = _step_count = _in_order = None

    def rounding_key(self, variable):
        """The key of `variable`'s stochastic rounding at this step
        (`_rounding.key`: the seed, the step count, its index)."""
        count = self.iterations if self._step_count is None else self._step_count
        return _rounding.key(self.seed, count, self._get_variable_index(variable))

    def update_step(self, gradient, variable, learning_rate):
        """One Adafactor step for one variable, by the plan for its platform.

        A factored variable with a dense gradient takes its backend's plan
        (PyTorch in place, TensorFlow's graph executor, JAX chosen for the
        platform it is lowered for, a variable cut across devices too:
        `_jax.cut_step`); the rest (vectors, `factored=False`, sparse rows,
        TensorFlow under XLA) the generic step, `plain_step`.

        A row-sparse gradient (TensorFlow's `IndexedSlices`, JAX's `BCOO`,
        e.g. an embedding's) gives the result of the same gradient made
        dense, and, without `beta_1`, a sparse update: only the rows present
        change. The state still decays everywhere, as with the dense
        gradient: the row factor (one number a row) or, with
        `factored=False` or a rank-1 variable, the full second moment is
        rewritten. With `beta_1` every row moves with its momentum, so the
        update is dense.
        """
        if self._in_order is not None:  # JAX: one variable after another
            gradient = self._in_order.gradient_of(variable, gradient)
        state = self.state_of(variable)
        rows, gradient = split_rows(gradient)
        step = ops.cast(self.iterations + 1, _rule.state_dtype(variable.dtype))
        decay = _rule.decay_rate(step, self.beta_2_decay)
        if state.row is not None and rows is None:
            plan = _unfused_plan()
            if plan is not None:
                plan.factored_step(self, state, gradient, variable, learning_rate, step, decay)
                return
            if keras.backend.backend() == "jax":
                from adafactor import _jax

                # In the variable's dtype: cast where it is used, fused.
                if _placement.is_replicated(variable):
                    _jax.factored_step(self, state, gradient, variable, learning_rate, step, decay)
                else:
                    _jax.cut_step(self, state, gradient, variable, learning_rate, step, decay)
                return
        self.plain_step(state, gradient, variable, learning_rate, step, decay, rows)

    def plain_step(self, state, gradient, variable, learning_rate, step, decay, rows=None):
        """The generic step: the gradient cast to the state's dtype and
        clipped, once, then the second moment, the factors and the update.
        With `rows` the gradient holds those rows only (`update_step`)."""
        dtype = _rule.state_dtype(variable.dtype)
        gradient = ops.cast(gradient, dtype)
        clipped = _rule.clip_finite(gradient, _rule.largest_gradient(dtype))
        factors = self.step_factors(
            state,
            clipped,
            ops.square(clipped),
            variable,
            learning_rate,
            step,
            decay,
            _placement.rms_form(variable, self.rms_form),
            rows,
        )
        _write.apply_update(self, variable, _rule.times(clipped, factors), state.momentum, rows)

    def fused_factors(
        self, state, gradient, variable, learning_rate, step, decay, form, capped_columns=False
    ):
        """`step_factors` of a dense gradient, written for XLA: the clip
        (and a low-precision gradient's cast to float32) made in each of its
        uses, so that no clipped or float32 copy is kept. With
        `capped_columns` the column sums take `_rule.capped_square`."""
        dtype = _rule.state_dtype(variable.dtype)
        largest = _rule.largest_gradient(dtype)
        gradient = ops.cast(gradient, dtype)
        col_square = _rule.capped_square(gradient, largest) if capped_columns else None
        return self.step_factors(
            state,
            _rule.clip_finite(gradient, largest),
            _rule.clipped_square(gradient, largest),
            variable,
            learning_rate,
            step,
            decay,
            form,
            col_square=col_square,
        )

    def whole_step(
        self, state, gradient, variable, learning_rate, step, decay, form, capped_columns=False
    ):
        """The step of a variable, all of it (dense): `fused_factors`, then
        `apply_factors`."""
        factors = self.fused_factors(
            state, gradient, variable, learning_rate, step, decay, form, capped_columns
        )
        self.apply_factors(state, gradient, factors, variable)

    def apply_factors(self, state, gradient, factors, variable):
        """The clipped dense gradient times `factors`, written
        (`_write.apply_update`): the clip made here again, fused by XLA,
        rather than kept."""
        dtype = _rule.state_dtype(variable.dtype)
        clipped = _rule.clip_finite(ops.cast(gradient, dtype), _rule.largest_gradient(dtype))
        _write.apply_update(self, variable, _rule.times(clipped, factors), state.momentum)

    def step_factors(
        self,
        state,
        clipped,
        grad_square,
        variable,
        learning_rate,
        step,
        decay,
        form,
        rows=None,
        col_square=None,
    ):
        """Update the second moment (its factors, or the full one) from the
        clipped gradient and its square; return what the clipped gradient
        is multiplied by (broadcasting) to give the step before momentum:
        1 / sqrt(v), clipped to RMS `clip_threshold`, times the step size.
        A factored variable's are a column and a row vector (`col_square`:
        `factored_scales`)."""
        dtype = _rule.state_dtype(variable.dtype)
        shape = tuple(variable.shape)
        if state.row is not None:
            # 1/sqrt(v) = rsqrt(r / mean(r)) * rsqrt(c), a row vector times a
            # column vector: never 0 * inf, so a zero gradient row and column
            # stay finite, and v is never formed.
            row_scale, col_scale, mean_square = self.factored_scales(
                state, grad_square, decay, shape, form, rows, col_square
            )
        else:
            scale = self._full_scale(state.second, grad_square, decay, rows, shape)
            mean_square = ops.sum(ops.square(clipped * scale)) / math.prod(shape)
        clip = _rule.clip_divisor(mean_square, self.clip_threshold)
        factor = self.step_size(learning_rate, variable, step, dtype, self._rms()) / clip
        if state.row is not None:
            return ops.expand_dims(row_scale * factor, -1), ops.expand_dims(col_scale, -2)
        return (scale * factor,)

    @staticmethod
    def _rms():
        """The RMS of a variable in the backend's form: a norm where
        operations run unfused (no full-size square kept)."""
        plan = _unfused_plan()
        return _rule.rms if plan is None else plan.rms

    def non_default_arguments(self) -> dict[str, Any]:
        """The arguments whose values differ from the defaults, in the order
        of `get_config()`: what `repr()` (and R's `print()`) shows. Numbers
        are compared as float32, as Keras keeps its hyperparameters; a
        learning-rate schedule is its config (a dict)."""
        defaults = {}
        for function in (keras.optimizers.Optimizer.__init__, Adafactor.__init__):
            for name, parameter in inspect.signature(function).parameters.items():
                if parameter.default is not inspect.Parameter.empty:
                    defaults[name] = parameter.default
        defaults["seed"] = _global_seed()  # what seed=None gives now
        try:
            config = self.get_config()
        except Exception:  # a callable learning rate Keras cannot serialize (a lambda)
            config = {key: getattr(self, key, None) for key in defaults}
            config["learning_rate"] = _CALLABLE
        return {
            key: value
            for key, value in config.items()
            if key in defaults and not _same_value(value, defaults[key])
        }

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{key}={_shown(value)}" for key, value in self.non_default_arguments().items()
        )
        return f"Adafactor({shown})"

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            beta_2_decay=self.beta_2_decay,
            epsilon_1=self.epsilon_1,
            epsilon_2=self.epsilon_2,
            clip_threshold=self.clip_threshold,
            relative_step=self.relative_step,
            scale_parameter=self.scale_parameter,
            warmup_init=self.warmup_init,
            beta_1=self.beta_1,
            min_dim_size_to_factor=self.min_dim_size_to_factor,
            factored=self.factored,
            momentum_dtype=self.momentum_dtype,
            stochastic_rounding=self.stochastic_rounding,
            seed=self.seed,
        )
        return config
