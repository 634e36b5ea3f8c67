"""Against another Adafactor no one here wrote: torch.optim's.

The numerics article says `torch.optim.Adafactor(lr=1e-2, beta2_decay=-0.8,
eps=(None, 1e-3), d=1.0)` is this optimizer with `learning_rate = 1e-2,
epsilon_2 = 1e-3, clip_threshold = 1` only while the gradients' mean squares
stay above about 1.2e-7 (torch's first epsilon, float32's machine epsilon,
is a floor where ours is added to g^2). Both halves are checked here.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from adafactor import optimizer_adafactor

SHAPES = [(6, 5), (5,), (3, 4, 7)]
STEPS = 10


def final_values(scale):
    """Both optimizers' variables after the same gradients (N(0, scale^2)),
    and where they started."""
    torch = pytest.importorskip("torch", reason="torch.optim's Adafactor needs torch")
    start = [np.random.default_rng(0).normal(size=s).astype("float32") for s in SHAPES]
    rng = np.random.default_rng(1)
    grads = [[(rng.normal(size=s) * scale).astype("float32") for s in SHAPES] for _ in range(STEPS)]
    ours = optimizer_adafactor(learning_rate=1e-2, epsilon_2=1e-3, clip_threshold=1.0)
    variables = [keras.Variable(v) for v in start]
    for step in grads:
        ours.apply([keras.ops.convert_to_tensor(g) for g in step], variables)
    parameters = [torch.nn.Parameter(torch.tensor(v)) for v in start]
    theirs = torch.optim.Adafactor(
        parameters, lr=1e-2, beta2_decay=-0.8, eps=(None, 1e-3), d=1.0, foreach=False
    )
    for step in grads:
        for parameter, g in zip(parameters, step, strict=True):
            parameter.grad = torch.tensor(g)
        theirs.step()
    return (
        [keras.ops.convert_to_numpy(v) for v in variables],
        [p.detach().numpy() for p in parameters],
        start,
    )


def relative_differences(scale):
    """Each variable's largest difference over its largest displacement."""
    ours, theirs, start = final_values(scale)
    return [
        np.abs(o - t).max() / np.abs(t - s).max()
        for o, t, s in zip(ours, theirs, start, strict=True)
    ]


def test_torch_optims_adafactor_takes_the_same_steps_for_ordinary_gradients():
    assert max(relative_differences(1.0)) < 1e-5


def test_torch_optims_adafactor_leaves_ours_where_mean_squares_fall_below_its_floor():
    # Gradients of 1e-5: mean squares of 1e-10, below 1.19e-7. The factored
    # variables' steps differ by a tenth of their size; the vector's, whose
    # full second moment torch floors only at eps^2, do not.
    matrix, vector, rank_3 = relative_differences(1e-5)
    assert matrix > 0.05 and rank_3 > 0.05
    assert vector < 1e-5
