"""The one place a step's new values are written: the momentum (with
`beta_1`), then the variable, cast to its dtype. Every plan ends here.

PyTorch writes in place (its eager expressions would each make a full-size
tensor): the same rule in its in-place form, beside the Keras-ops one.
"""

from __future__ import annotations

import keras
from keras import ops

from adafactor import _rule
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
    update = ops.cast(update, variable.dtype)
    if rows is not None and momentum is None:
        update = join_rows(rows, update, shape)
    optimizer.assign_sub(variable, update)


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
        variable.value.sub_(update.to(variable.value.dtype))
