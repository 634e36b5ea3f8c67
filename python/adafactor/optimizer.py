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
from typing import Any

import keras
import numpy as np
from keras import ops

from adafactor._arguments import EXTRA_ARGUMENTS, coerce_arguments
from adafactor._sparse import join_rows, pick, split_rows, spread

# Variables of these dtypes keep their state and compute their update in
# float32: epsilon_1 = 1e-30 underflows to zero in float16.
_LOW_PRECISION = ("float16", "bfloat16")

# How w_i = sum_j g2_ij / b_j (for the update's RMS) is computed; `make
# bench` times both:
#   "fused":  a row sum beside the row factor's, which XLA takes in the same
#             pass over the gradient (fastest on an H200 with JAX);
#   "matvec": a matrix-vector product (fastest on CPUs, where XLA's
#             reductions are slow and its matrix-vector product fast);
#   "auto":   "fused" on an accelerator, "matvec" on the CPU.
RMS_FORM = "auto"
_RMS_FORMS = ("auto", "fused", "matvec")

# The arguments this class keeps; the rest go to Keras's base optimizer.
_OWN_ARGUMENTS = (
    "beta_2_decay",
    "epsilon_1",
    "epsilon_2",
    "clip_threshold",
    "relative_step",
) + EXTRA_ARGUMENTS


def _limits(dtype) -> tuple[float, float]:
    """The floor and the cap of second-moment values. The floor (the smallest
    normal number) keeps epsilon_1 = 0 from dividing by zero; the cap keeps
    sums of squares that overflow finite. Both keep 1 / v a normal number
    (CPUs flush subnormals to zero, and inf * 0 is NaN): the cap 1/16 of
    the floor's inverse, since 1 / cap computed in a TensorFlow graph can
    round below the floor, where it was flushed to zero (a rank-3 variable
    with gradients of 1e30 took a wrong step; found by
    test_a_step_compiled_as_fit_compiles_it_moves_as_the_reference)."""
    tiny = float(np.finfo(keras.backend.standardize_dtype(dtype)).tiny)
    return tiny, 1 / (16 * tiny)


def _largest_gradient(dtype) -> float:
    """The largest gradient entry kept as it is: its square is at most the
    cap. A larger one (|g| > ~2e18 in float32) is clipped to it, so that its
    square stays finite and the step equals the one the same direction gets
    from smaller gradients (Adafactor's step does not depend on the
    gradient's scale), where an infinite square would clip it to zero."""
    return math.sqrt(_limits(dtype)[1])


def rms_form_override() -> str | None:
    """RMS_FORM when it forces a form (tests, `make bench`); None for "auto"."""
    if RMS_FORM not in _RMS_FORMS:
        raise ValueError(
            f"adafactor.optimizer.RMS_FORM must be one of "
            f"{', '.join(map(repr, _RMS_FORMS))}; got {RMS_FORM!r}."
        )
    return None if RMS_FORM == "auto" else RMS_FORM


def _rms_form(variable) -> str:
    """RMS_FORM, with "auto" resolved by the device `variable` lives on (on
    JAX the platform the step is lowered for decides instead: `_jax.py`)."""
    return rms_form_override() or ("fused" if _on_accelerator(variable) else "matvec")


def _on_accelerator(variable) -> bool:
    """Whether `variable` lives on a GPU or TPU: TensorFlow and PyTorch run
    a variable's step where the variable is (not wherever a GPU is visible:
    a model kept on the CPU of a GPU machine takes the CPU's form)."""
    if keras.backend.backend() == "torch":
        return variable.value.device.type != "cpu"
    # TensorFlow: the tf.Variable's placement (a graph's tensors have none);
    # Keras's TensorFlow optimizer hands `update_step` the tf.Variable itself.
    device = str(getattr(getattr(variable, "_value", variable), "device", "")).upper()
    return "GPU:" in device or "TPU:" in device


def _layout_without_axis(layout, axis, rank):
    """A variable's layout (a Keras `TensorLayout` or a JAX `NamedSharding`)
    with `axis` removed: the layout of a factor that reduces over it. None
    (replicated, or no distribution) stays None."""
    if isinstance(layout, keras.distribution.TensorLayout):
        axes = list(layout.axes)
        del axes[axis]
        return keras.distribution.TensorLayout(axes, layout.device_mesh)
    spec = getattr(layout, "spec", None)
    if spec is None:
        return None
    import jax

    axes = list(spec) + [None] * (rank - len(spec))  # a spec may omit trailing axes
    del axes[axis]
    return jax.sharding.NamedSharding(layout.mesh, jax.sharding.PartitionSpec(*axes))


def _is_replicated(variable) -> bool:
    """Whether every device holds all of `variable` (no Keras distribution,
    `DataParallel`, or a layout that cuts no axis): its step then needs no
    collective. Unknown layouts count as cut."""
    layout = getattr(variable, "_layout", None)
    if layout is None:
        return True
    if isinstance(layout, keras.distribution.TensorLayout):
        axes = layout.axes
    else:
        axes = getattr(layout, "spec", None)
    return axes is not None and all(axis is None for axis in axes)


def _unfused_backend():
    """Where each operation runs unfused, one full-size result at a time
    (PyTorch; TensorFlow without XLA), `_torch` or `_tensorflow`: their
    `factored_step` (the same math with fewer full-size temporaries) and
    `rms`. None where a compiler fuses the step (JAX; TensorFlow under
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


def _clip_finite(gradient, largest):
    """`gradient` with finite entries clipped to +-`largest`; an infinite
    entry stays infinite and poisons the variable, as in Keras's Adam."""
    return ops.where(ops.isfinite(gradient), ops.clip(gradient, -largest, largest), gradient)


def _rms(x):
    """sqrt(mean(x ** 2)); where operations run unfused, the backend's own
    (a norm: no full-size square kept)."""
    unfused = _unfused_backend()
    if unfused is not None:
        return unfused.rms(x)
    return ops.sqrt(ops.mean(ops.square(x)))


def _times(gradient, factors):
    """`gradient` times each of `factors` (broadcasting)."""
    for factor in factors:
        gradient = gradient * factor
    return gradient


def _clipped_square(gradient, largest):
    """`_clip_finite(gradient, largest) ** 2`, exactly, from the gradient
    itself: XLA then fuses the clip into both of its users (this square and
    the update) instead of keeping a clipped copy of the gradient."""
    square = ops.square(gradient)
    return ops.where(ops.isfinite(gradient), ops.minimum(square, largest * largest), square)


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
                name=name,
                **kwargs,
            )
        )
        own = {key: arguments.pop(key) for key in _OWN_ARGUMENTS}
        super().__init__(**arguments)  # Keras's base arguments
        for key, value in own.items():
            setattr(self, key, value)

    # -- state -------------------------------------------------------------

    def _is_factored(self, variable) -> bool:
        shape = variable.shape
        if not self.factored or len(shape) < 2:
            return False
        smallest = self.min_dim_size_to_factor or 1
        return min(shape[-2], shape[-1]) >= smallest

    @staticmethod
    def _state_dtype(variable) -> str:
        dtype = keras.backend.standardize_dtype(variable.dtype)
        return "float32" if dtype in _LOW_PRECISION else dtype

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
        dtype = self._state_dtype(variable)
        if self._is_factored(variable):
            specs = [
                ("row", shape[:-1], dtype, _layout_without_axis(layout, -1, len(shape))),
                (
                    "col",
                    shape[:-2] + shape[-1:],
                    dtype,
                    _layout_without_axis(layout, -2, len(shape)),
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
        rms_form_override()  # a bad RMS_FORM fails here, before training
        super().build(var_list)
        self._row, self._col, self._second, self._momentum = [], [], [], []
        for variable in var_list:
            prefix = getattr(variable, "path", variable.name).replace("/", "_")
            state = {
                kind: self.add_variable(shape, dtype=dtype, layout=layout, name=f"{prefix}_{kind}")
                for kind, shape, dtype, layout in self.state_specs(variable)
            }
            self._row.append(state.get("row"))
            self._col.append(state.get("col"))
            self._second.append(state.get("second"))
            self._momentum.append(state.get("momentum"))

    # -- math --------------------------------------------------------------

    def _step_size(self, learning_rate, variable, step, dtype):
        """rho_t, times max(epsilon_2, RMS(variable)) when scale_parameter."""
        if self.warmup_init:
            rho = ops.minimum(1e-6 * step, ops.rsqrt(step))
        elif self.relative_step:
            rho = ops.minimum(ops.cast(learning_rate, dtype), ops.rsqrt(step))
        else:
            rho = ops.cast(learning_rate, dtype)
        if not self.scale_parameter:
            return rho
        rms = _rms(ops.cast(variable, dtype))
        return ops.maximum(ops.cast(self.epsilon_2, dtype), rms) * rho

    def _factored_scales(self, row, col, grad_square, decay, rows, shape, form):
        """Update the factors; return the row and column scales (the unclipped
        update is g_ij * row_scale_i * col_scale_j = g_ij / sqrt(v_ij)) and
        the update's mean square, had without forming the update:
        sum_ij g2_ij / (a_i b_j) = sum_i w_i / a_i, w_i = sum_j g2_ij / b_j.

        With a row-sparse gradient (`rows` not None) `grad_square` holds the
        rows present only: the factors get what the dense gradient would give
        them, and the scales come back for those rows."""
        # The sparse axis is axis 0: the column factor's too when rank > 2.
        col_rows = rows if len(shape) > 2 else None
        if rows is None:
            col_mean = ops.mean(grad_square, axis=-2)
        else:
            col_mean = spread(col_rows, ops.sum(grad_square, axis=-2), col.shape) / shape[-2]
        row_mean = spread(rows, ops.mean(grad_square, axis=-1), row.shape)
        row_norm, col_norm = self._new_factors(row, col, col_mean, row_mean, decay, rows, shape)
        if rows is None and form == "matvec":
            weighted = ops.squeeze(ops.matmul(grad_square, ops.expand_dims(1 / col_norm, -1)), -1)
        else:  # a row sum beside row_mean's: one pass over the gradient
            weighted = ops.sum(grad_square / ops.expand_dims(col_norm, -2), axis=-1)
        mean_square = ops.sum(weighted / row_norm) / math.prod(shape)
        return ops.rsqrt(row_norm), ops.rsqrt(col_norm), mean_square

    def _new_factors(self, row, col, col_mean, row_mean, decay, rows, shape):
        """Decay the factors towards the means of the clipped square gradient
        over its rows (`col_mean`) and columns (`row_mean`); return the
        column factor and the row factor over its mean, floored (for the
        rows present when `rows` is not None)."""
        tiny, cap = _limits(row.dtype)
        col_rows = rows if len(shape) > 2 else None
        self.assign(col, ops.minimum(decay * col + (1 - decay) * (col_mean + self.epsilon_1), cap))
        self.assign(
            row,
            ops.minimum(
                decay * row + (1 - decay) * (row_mean + self.epsilon_1), cap / row.shape[-1]
            ),
        )
        row_norm = pick(rows, ops.maximum(row / ops.mean(row, axis=-1, keepdims=True), tiny))
        return row_norm, pick(col_rows, ops.maximum(col, tiny))

    def _full_scale(self, second, grad_square, decay, rows, shape):
        """Update a full second moment; return 1 / sqrt(v) (for the rows
        present when `rows` is not None)."""
        tiny, cap = _limits(second.dtype)
        regulated = spread(rows, grad_square, shape) + self.epsilon_1
        self.assign(second, ops.minimum(decay * second + (1 - decay) * regulated, cap))
        return ops.rsqrt(pick(rows, ops.maximum(second, tiny)))

    # -- one variable at a time ----------------------------------------------

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        """Keras's loop over the variables; on JAX with a `_jax.Pipeline` for
        the step compiled for the CPU (`_jax.py`), from the last variable to
        the first, the order in which backpropagation makes the gradients."""
        if keras.backend.backend() == "jax":
            from adafactor import _jax

            self._pipeline = _jax.Pipeline()
            _jax.release_after_compile(grads)
            grads, trainable_variables = grads[::-1], trainable_variables[::-1]
        try:
            super()._backend_update_step(grads, trainable_variables, learning_rate)
        finally:
            self._pipeline = None

    def update_step(self, gradient, variable, learning_rate):
        """One Adafactor step for one variable.

        A row-sparse gradient (TensorFlow's `IndexedSlices`, JAX's `BCOO`,
        e.g. an embedding's) gives the result of the same gradient made
        dense, and, without `beta_1`, a sparse update: only the rows present
        change. The state still decays everywhere, as with the dense
        gradient: the row factor (one number a row) or, with
        `factored=False` or a rank-1 variable, the full second moment is
        rewritten. With `beta_1` every row moves with its momentum, so the
        update is dense.
        """
        index = self._get_variable_index(variable)
        dtype = self._state_dtype(variable)
        rows, gradient = split_rows(gradient)
        step = ops.cast(self.iterations + 1, dtype)
        decay = 1 - ops.power(step, self.beta_2_decay)
        dense_factored = self._row[index] is not None and rows is None
        unfused = _unfused_backend() if dense_factored else None
        if unfused is not None:
            largest = _largest_gradient(dtype)
            unfused.factored_step(
                self, gradient, variable, learning_rate, index, step, decay, largest
            )
            return
        gradient = ops.cast(gradient, dtype)
        if dense_factored and keras.backend.backend() == "jax":
            from adafactor import _jax

            _jax.factored_step(self, gradient, variable, learning_rate, index, step, decay)
            return
        clipped = _clip_finite(gradient, _largest_gradient(dtype))
        factors = self._update_factors(
            clipped,
            ops.square(clipped),
            variable,
            learning_rate,
            index,
            rows,
            step,
            decay,
            _rms_form(variable),
        )
        self._apply_update(_times(clipped, factors), variable, index, rows)

    def fused_factors(self, gradient, variable, learning_rate, index, step, decay, form):
        """`_update_factors` of a dense gradient, written for XLA: the clip
        made in each of its uses, so that no clipped copy is kept."""
        largest = _largest_gradient(self._state_dtype(variable))
        return self._update_factors(
            _clip_finite(gradient, largest),
            _clipped_square(gradient, largest),
            variable,
            learning_rate,
            index,
            None,
            step,
            decay,
            form,
        )

    def whole_step(self, gradient, variable, learning_rate, index, step, decay, form):
        """The step of a variable without momentum, all of it (dense)."""
        factors = self.fused_factors(gradient, variable, learning_rate, index, step, decay, form)
        self.apply_factors(gradient, factors, variable, index)

    def apply_factors(self, gradient, factors, variable, index):
        """The clipped dense gradient times `factors`, applied (`_apply_update`):
        the clip made here again, fused by XLA, rather than kept."""
        clipped = _clip_finite(gradient, _largest_gradient(self._state_dtype(variable)))
        self._apply_update(_times(clipped, factors), variable, index, None)

    def _update_factors(
        self, clipped, grad_square, variable, learning_rate, index, rows, step, decay, form
    ):
        """Update the second moment (its factors, or the full one) from the
        clipped gradient and its square; return what the clipped gradient
        is multiplied by (broadcasting) to give the step before momentum:
        1 / sqrt(v), clipped to RMS `clip_threshold`, times the step size.
        A factored variable's are a column and a row vector."""
        dtype = self._state_dtype(variable)
        shape = tuple(variable.shape)
        row, col = self._row[index], self._col[index]
        if row is not None:
            # 1/sqrt(v) = rsqrt(r / mean(r)) * rsqrt(c), a row vector times a
            # column vector: never 0 * inf, so a zero gradient row and column
            # stay finite, and v is never formed.
            row_scale, col_scale, mean_square = self._factored_scales(
                row, col, grad_square, decay, rows, shape, form
            )
        else:
            scale = self._full_scale(self._second[index], grad_square, decay, rows, shape)
            mean_square = ops.sum(ops.square(clipped * scale)) / math.prod(shape)
        clip = ops.maximum(1.0, ops.sqrt(mean_square) / self.clip_threshold)
        factor = self._step_size(learning_rate, variable, step, dtype) / clip
        if row is not None:
            return ops.expand_dims(row_scale * factor, -1), ops.expand_dims(col_scale, -2)
        return (scale * factor,)

    def _apply_update(self, update, variable, index, rows):
        """Momentum (with beta_1), then `variable -= update`."""
        momentum = self._momentum[index]
        shape = tuple(variable.shape)
        if momentum is not None:
            update = spread(rows, ops.cast(update, "float32"), shape)
            if keras.backend.standardize_dtype(momentum.dtype) == "float32":
                # m += (1 - beta_1) (u - m), in place as Keras's Adam does.
                self.assign_add(momentum, (1 - self.beta_1) * (update - momentum))
                update = ops.convert_to_tensor(momentum)
            else:
                # In float32; stored rounded, used as is.
                update = self.beta_1 * ops.cast(momentum, "float32") + (1 - self.beta_1) * update
                self.assign(momentum, ops.cast(update, momentum.dtype))
        update = ops.cast(update, variable.dtype)
        if rows is not None and momentum is None:
            update = join_rows(rows, update, shape)
        self.assign_sub(variable, update)

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
        )
        return config
