"""The one place a step's new values are written: the momentum (with
`beta_1`), then the variable, cast to its dtype (a bfloat16 or float16 one
rounded stochastically, `_rounding.py`, unless `stochastic_rounding` is
off). Every plan ends here.

PyTorch writes in place (its eager expressions would each make a full-size
tensor): the same rule in its in-place form, beside the Keras-ops one.
"""

from __future__ import annotations

import functools

import keras
from keras import ops

from adafactor import _rounding, _rule
from adafactor._sparse import join_rows, spread


def apply_update(optimizer, variable, update, momentum, rows=None) -> None:
    """`variable -= update`, after the momentum (a Keras variable, or None
    without `beta_1`) has taken `update` into its moving average and the
    average has become the update. `update` is in the state's dtype; with a
    row-sparse gradient (`rows` not None) it holds those rows only, and
    without a momentum only they are written."""
    if keras.backend.backend() == "torch" and rows is None:
        _apply_in_place(optimizer, variable, update, momentum)
        return
    shape = tuple(variable.shape)
    if momentum is not None:
        update = spread(rows, ops.cast(update, "float32"), shape)
        if keras.backend.standardize_dtype(momentum.dtype) == "float32":
            # m += (1 - beta_1) (u - m): the rule, in place as Keras's Adam.
            optimizer.assign_add(momentum, (1 - optimizer.beta_1) * (update - momentum))
            update = ops.convert_to_tensor(momentum)
        else:
            # In float32; stored rounded, used as is.
            update = _rule.momentum(ops.cast(momentum, "float32"), update, optimizer.beta_1)
            optimizer.assign(momentum, ops.cast(update, momentum.dtype))
        rows = None  # the momentum moves every row
    if _rounding.rounds(variable, optimizer.stochastic_rounding):
        _assign_rounded(optimizer, variable, update, rows)
        return
    update = ops.cast(update, variable.dtype)
    if rows is not None:
        update = join_rows(rows, update, shape)
    optimizer.assign_sub(variable, update)


def _assign_rounded(optimizer, variable, update, rows) -> None:
    """`variable - update` computed in float32 and rounded stochastically:
    the whole variable (XLA fuses it into one pass), or on TensorFlow with
    a row-sparse update the rows present only. (On JAX the rows of a sparse
    gradient include padding, a zero update at a row that may also be
    present: the update is spread instead; rows without one stay exact.)"""
    key = optimizer.rounding_key(variable)
    shape = tuple(variable.shape)
    if rows is not None and keras.backend.backend() == "tensorflow":
        old = ops.take(ops.convert_to_tensor(variable), rows, axis=0)
        new = ops.cast(old, "float32") - ops.cast(update, "float32")
        noise = _rounding.noise(_rounding.row_positions(rows, shape), key, variable.dtype)
        new = _rounding.rounded(new, noise, variable.dtype)
        optimizer.assign(variable, join_rows(rows, new, shape))
        return
    update = spread(rows, ops.cast(update, "float32"), shape)
    optimizer.assign(variable, _new_value(ops.convert_to_tensor(variable), update, key))


def _rounded_difference(value, update, key):
    """`value - update` (float32) rounded stochastically to `value`'s dtype."""
    new = ops.cast(value, "float32") - update
    return _rounding.rounded_new_value(new, key, value.dtype)


def _new_value(value, update, key):
    """`_rounded_difference`; on TensorFlow compiled by XLA as one kernel
    where the graph executor would make each of its values a full-size
    tensor (`make bench`, 12 x Dense(4096) in bfloat16, fit()'s peak above
    SGD's: +4.3 x the parameters unfused, +0.88 x compiled; +0.63 x rounded
    to nearest)."""
    if keras.backend.backend() == "tensorflow":
        return _tensorflow_kernel()(value, update, key)
    return _rounded_difference(value, update, key)


@functools.cache
def _tensorflow_kernel():
    import tensorflow as tf

    return tf.function(_rounded_difference, jit_compile=True, autograph=False)


def _apply_in_place(optimizer, variable, update, momentum) -> None:
    """PyTorch: `update` (a tensor this step made, so it may be overwritten)
    becomes the momentum's new value in place, then leaves the variable."""
    import torch

    with torch.no_grad():
        update = ops.convert_to_tensor(update)
        if momentum is not None:
            # (1 - beta_1) u + beta_1 m in the state's dtype; stored rounded.
            beta_1 = optimizer.beta_1
            update.mul_(1 - beta_1).add_(momentum.value, alpha=beta_1)
            momentum.value.copy_(update)
        if _rounding.rounds(variable, optimizer.stochastic_rounding):
            _assign_rounded_in_place(optimizer, variable, update)
        else:
            variable.value.sub_(update.to(variable.value.dtype))


# PyTorch rounds a variable this many entries at a time: the noise and the
# rounding's temporaries stay this small (4 MiB in float32).
CHUNK = 1 << 20


def _assign_rounded_in_place(optimizer, variable, update) -> None:
    """`_assign_rounded` in place: the new value made in `update`'s buffer
    (float32), rounded and written a chunk at a time, with the same noise
    as the Keras-ops form."""
    key = optimizer.rounding_key(variable)
    target = variable.value.view(-1)
    new = update.reshape(-1)
    for start in range(0, new.numel(), CHUNK):
        part = new[start : start + CHUNK]
        part.neg_().add_(target[start : start + CHUNK])
        target[start : start + CHUNK].copy_(
            _rounding.rounded_new_value(part, key, variable.dtype, start)
        )
