"""TensorFlow: the factored step with fewer full-size temporaries.

Keras compiles no XLA for TensorFlow on a CPU (its default `jit_compile`
there): TensorFlow's graph executor then makes each
operation's full-size result and keeps it while a later operation needs it.
The generic step (`Adafactor.update_step`, Keras ops) held a clipped copy of
the gradient, a mask and the gradient's square beside the gradient: 2.25 x a
variable at its peak, where SGD holds the gradient alone (1 x; TensorFlow's
allocator, one 8192 x 8192 variable). This is the same math for a factored
variable and a dense gradient without them:

- the means of g^2 over rows and columns are squared Euclidean norms
  (`reduce_euclidean_norm` squares inside its reduction: no square kept);
- the gradient is clipped only when an entry is beyond the limit;
- the update's mean square is taken from the update itself, which is made
  in the gradient's own buffer (TensorFlow reuses the buffer of an input no
  other operation still needs), then scaled and applied there.
"""

from __future__ import annotations

import math

import tensorflow as tf

from adafactor import _rule, _write


def runs_unfused() -> bool:
    """Whether the ops being made run one by one, unfused (eagerly or in a
    graph TensorFlow executes itself), not in a graph XLA compiles
    (`jit_compile=True`: Keras's default on a GPU), which fuses them, as on
    JAX, and has no EuclideanNorm kernel. TensorFlow's own test for it."""
    from tensorflow.python.ops import control_flow_util

    return not control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())


def _clip_if_needed(gradient, largest):
    """The gradient clipped to +-`largest` (infinite entries kept, so that
    they poison the variable), or the gradient itself, uncopied, when no
    entry is beyond it (told from two scalars; a NaN fails both tests)."""
    within = (tf.reduce_max(gradient) <= largest) & (tf.reduce_min(gradient) >= -largest)
    return tf.cond(within, lambda: gradient, lambda: _rule.clip_finite(gradient, largest))


def _mean_square(x, shape, axis=None):
    """mean(x ** 2) over `axis`, without a square of `x` kept; `shape` is
    the variable's (a gradient's static shape may be unknown in a graph)."""
    count = math.prod(shape) if axis is None else shape[axis]
    return tf.square(tf.math.reduce_euclidean_norm(x, axis=axis)) / count


def rms(x):
    """sqrt(mean(x ** 2)) of a tensor of static shape, as a Euclidean norm
    (which squares inside its reduction)."""
    return tf.math.reduce_euclidean_norm(x) / math.sqrt(math.prod(x.shape))


def factored_step(optimizer, state, gradient, variable, learning_rate, step, decay):
    """One step of `optimizer` for `variable` (its `state`, a dense
    gradient), in the state's dtype (float32 for float16 and bfloat16
    variables)."""
    shape = tuple(variable.shape)
    dtype = state.row.dtype
    gradient = _clip_if_needed(tf.cast(gradient, dtype), _rule.largest_gradient(dtype))
    col_mean, row_mean = _mean_square(gradient, shape, -2), _mean_square(gradient, shape, -1)
    row_norm, col_norm = optimizer.update_factors(state, row_mean, col_mean, decay)
    # The gradient's last use, multiplied in its own buffer: only once both
    # factors exist (the executor would otherwise start on the row scale
    # while the column sums still read the gradient, and copy it); the
    # column scale by MulNoNan, which grappler's arithmetic optimizer leaves
    # alone (it turns g * a * b into g * (a * b), a full-size outer product).
    # MulNoNan(x, y) is x * y where y != 0, and a column scale never is 0.
    with tf.control_dependencies([row_norm, col_norm]):
        update = gradient * tf.expand_dims(tf.math.rsqrt(row_norm), -1)
    update = tf.math.multiply_no_nan(update, tf.expand_dims(tf.math.rsqrt(col_norm), -2))
    # The update's mean square from the update itself (TensorFlow's form of
    # `_rule.mean_square`: no square of the gradient kept).
    clip = _rule.clip_divisor(_mean_square(update, shape), optimizer.clip_threshold)
    factor = optimizer.step_size(learning_rate, variable, step, dtype, rms) / clip
    update = update * factor
    # The momentum read only now: the executor would read (and, bfloat16,
    # widen) every variable's momentum at the step's start, all at once.
    with tf.control_dependencies([update]):
        _write.apply_update(optimizer, variable, update, state.momentum)
