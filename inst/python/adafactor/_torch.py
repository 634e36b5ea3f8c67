"""PyTorch: the factored step in place.

PyTorch runs eagerly: every expression makes a new full-size tensor, alive
while referenced, so the generic step (`Adafactor.update_step`, Keras ops)
holds several copies of a matrix at once. This is the same math, for a
factored variable and a dense gradient, with at most one full-size
temporary alive at a time (after Keras's `torch_*.py` optimizers, which
update in place beside the one Keras-ops source).
"""

from __future__ import annotations

import math

import torch
from keras import ops

from adafactor import _rule, _write


def rms(x):
    """sqrt(mean(x ** 2)) as a norm: no square of `x` kept."""
    return torch.linalg.vector_norm(x) / math.sqrt(x.numel())


def factored_step(optimizer, state, gradient, variable, learning_rate, step, decay):
    """One step of `optimizer` for `variable` (its `state`, a dense
    gradient), in place, in the state's dtype (float32 for float16 and
    bfloat16 variables)."""
    shape = tuple(variable.shape)
    with torch.no_grad():
        dtype = state.row.value.dtype
        largest = _rule.largest_gradient(str(dtype).removeprefix("torch."))
        # The gradient in its own dtype (a NumPy array, as `apply_gradients`
        # may be given, made a tensor): each full-size float32 value below
        # is made from it when needed, never a float32 copy kept beside.
        grad = ops.convert_to_tensor(gradient)
        # (clip(g))^2 = min(g^2, largest^2): the clipped gradient's square.
        square = grad.to(dtype, copy=True).square_().clamp_(max=largest * largest)
        # The matrix-vector form: the row-sum form divides a full-size copy.
        row_scale, col_scale, mean_square = optimizer.factored_scales(
            state, square, decay, shape, "matvec"
        )
        del square
        clip = _rule.clip_divisor(mean_square, optimizer.clip_threshold)
        state_dtype = str(dtype).removeprefix("torch.")
        factor = optimizer.step_size(learning_rate, variable, step, state_dtype, rms) / clip
        # The one full-size temporary (the square is gone).
        update = grad.to(dtype, copy=True).clamp_(-largest, largest)
        update.mul_(torch.unsqueeze(row_scale * factor, -1))
        update.mul_(torch.unsqueeze(col_scale, -2))
        # An infinite or NaN gradient makes the variable NaN, as elsewhere;
        # told from two scalars, without a full-size mask.
        finite = torch.isfinite(torch.amax(grad)) & torch.isfinite(torch.amin(grad))
        update.add_(torch.where(finite, 0.0, float("nan")))
        _write.apply_update(optimizer, variable, update, state.momentum)
