"""The Adafactor rule, once: small pure functions of arrays (Keras ops).

Every plan of the step (`optimizer.py`'s generic one, `_jax.py`,
`_tensorflow.py`, `_torch.py`) computes with these; none keeps state or
reads a variable. For a gradient g of an n x m matrix at step t (Shazeer and
Stern, 2018, as Keras 3.15 writes it):

- the factors decay towards the means of g^2 + epsilon_1 over columns (the
  row factor r) and rows (the column factor c): `decayed`;
- 1 / sqrt(v) = rsqrt(r / mean(r)) * rsqrt(c), a column times a row vector,
  never formed: `normalized`;
- the update g / sqrt(v) is divided by max(1, RMS(update) / clip_threshold),
  its mean square taken from the factors: `weighted_row_sums`, `mean_square`,
  `clip_divisor`;
- the step size is rho_t times max(epsilon_2, RMS(variable)): `step_size`;
- with beta_1, the moving average of the update: `momentum`.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

# Variables of these dtypes keep their state and compute their update in
# float32: epsilon_1 = 1e-30 underflows to zero in float16.
LOW_PRECISION = ("float16", "bfloat16")

# How w_i = sum_j g2_ij / b_j (for the update's RMS) is computed:
#   "fused":  a row sum beside the row factor's, which XLA takes in the same
#             pass over the gradient (fastest on an H200 with JAX);
#   "matvec": a matrix-vector product (fastest on CPUs, where XLA's
#             reductions are slow and its matrix-vector product fast).
RMS_FORMS = ("fused", "matvec")


def state_dtype(dtype) -> str:
    """The dtype a variable of `dtype` keeps its state and computes in."""
    dtype = keras.backend.standardize_dtype(dtype)
    return "float32" if dtype in LOW_PRECISION else dtype


def limits(dtype) -> tuple[float, float]:
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


def largest_gradient(dtype) -> float:
    """The largest gradient entry kept as it is: its square is at most the
    cap. A larger one (|g| > ~2e18 in float32) is clipped to it, so that its
    square stays finite and the step equals the one the same direction gets
    from smaller gradients (Adafactor's step does not depend on the
    gradient's scale), where an infinite square would clip it to zero."""
    return math.sqrt(limits(dtype)[1])


def clip_finite(gradient, largest):
    """`gradient` with finite entries clipped to +-`largest`; an infinite
    entry stays infinite and poisons the variable, as in Keras's Adam."""
    return ops.where(ops.isfinite(gradient), ops.clip(gradient, -largest, largest), gradient)


def clipped_square(gradient, largest):
    """`clip_finite(gradient, largest) ** 2`, exactly, from the gradient
    itself: XLA then fuses the clip into both of its users (this square and
    the update) instead of keeping a clipped copy of the gradient."""
    square = ops.square(gradient)
    return ops.where(ops.isfinite(gradient), ops.minimum(square, largest * largest), square)


def capped_square(gradient, largest):
    """`min(gradient ** 2, largest ** 2)`: `clipped_square` of every finite
    entry, in two operations instead of four; an infinite entry counts as
    the largest finite square instead of infinity. For column sums only
    (`_jax.cut_step`): XLA:GPU's fusion cost model keeps this square inside
    a column sum, where it writes the four-operation one out in full. An
    infinite entry still makes its row sum, the update's RMS and so its
    variable non-finite (from `clipped_square` and `clip_finite`)."""
    return ops.minimum(ops.square(gradient), largest * largest)


def times(gradient, factors):
    """`gradient` times each of `factors` (broadcasting)."""
    for factor in factors:
        gradient = gradient * factor
    return gradient


def decay_rate(step, beta_2_decay):
    """beta_2 at step t: 1 - t^beta_2_decay."""
    return 1 - ops.power(step, beta_2_decay)


def decayed(old, mean, decay, epsilon_1, cap):
    """A second-moment estimate (a factor, or the full moment) decayed
    towards `mean` (of g^2) + epsilon_1, capped."""
    return ops.minimum(decay * old + (1 - decay) * (mean + epsilon_1), cap)


def normalized(row, col):
    """The row factor over its mean and the column factor, floored: their
    reciprocal square roots times each other are 1 / sqrt(v)."""
    tiny = limits(row.dtype)[0]
    row_norm = ops.maximum(row / ops.mean(row, axis=-1, keepdims=True), tiny)
    return row_norm, ops.maximum(col, tiny)


def weighted_row_sums(grad_square, col_norm, form):
    """w_i = sum_j g2_ij / b_j, in `form` (RMS_FORMS)."""
    if form == "matvec":
        return ops.squeeze(ops.matmul(grad_square, ops.expand_dims(1 / col_norm, -1)), -1)
    return ops.sum(grad_square / ops.expand_dims(col_norm, -2), axis=-1)


def mean_square(weighted, row_norm, count):
    """The unclipped update's mean square, sum_ij g2_ij / (a_i b_j) / count
    = sum_i w_i / a_i / count, without forming the update."""
    return ops.sum(weighted / row_norm) / count


def clip_divisor(mean_square_of_update, clip_threshold):
    """What the update is divided by: max(1, RMS(update) / clip_threshold)."""
    return ops.maximum(1.0, ops.sqrt(mean_square_of_update) / clip_threshold)


def relative_step(learning_rate, step, relative, warmup_init):
    """rho_t: min(1e-6 t, 1/sqrt(t)) with warmup_init, min(learning_rate,
    1/sqrt(t)) with relative_step, else learning_rate."""
    if warmup_init:
        return ops.minimum(1e-6 * step, ops.rsqrt(step))
    if relative:
        return ops.minimum(learning_rate, ops.rsqrt(step))
    return learning_rate


def step_size(rho, variable_rms, epsilon_2):
    """rho_t times max(epsilon_2, RMS(variable)) (scale_parameter)."""
    return ops.maximum(epsilon_2, variable_rms) * rho


def rms(x):
    """sqrt(mean(x ** 2))."""
    return ops.sqrt(ops.mean(ops.square(x)))


def momentum(old, update, beta_1):
    """beta_1 m + (1 - beta_1) u: the moving average of the final update."""
    return beta_1 * old + (1 - beta_1) * update
