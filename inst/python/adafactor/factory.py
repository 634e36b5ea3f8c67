"""`optimizer_adafactor()`: the factory R and Python users share.

Its signature is the Usage block of the reference page (R `NULL` is Python
`None`, R `...` is `**kwargs`, the arguments after `...` keyword-only).
Coercion and validation happen once, in `Adafactor.__init__`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from keras.optimizers.schedules import LearningRateSchedule

from adafactor.optimizer import Adafactor

LearningRate = float | LearningRateSchedule | Callable[[], float]


def optimizer_adafactor(
    learning_rate: LearningRate = 0.001,
    beta_2_decay: float = -0.8,
    epsilon_1: float = 1e-30,
    epsilon_2: float = 0.001,
    clip_threshold: float = 1.0,
    relative_step: bool = True,
    weight_decay: float | None = None,
    clipnorm: float | None = None,
    clipvalue: float | None = None,
    global_clipnorm: float | None = None,
    use_ema: bool = False,
    ema_momentum: float = 0.99,
    ema_overwrite_frequency: int | None = None,
    name: str = "adafactor",
    *,
    loss_scale_factor: float | None = None,
    gradient_accumulation_steps: int | None = None,
    **kwargs: Any,
) -> Adafactor:
    """Optimizer that implements the Adafactor algorithm.

    Adafactor is commonly used in NLP tasks, and has the advantage of taking
    less memory because it only saves partial information of previous
    gradients.

    The default argument setup is based on the original paper (see
    reference). When gradients are of dimension > 2, Adafactor optimizer will
    delete the last 2 dimensions separately in its accumulator variables.

    Args:
        learning_rate: A float, a `LearningRateSchedule` instance, or a
            callable that takes no arguments and returns the actual value to
            use. The learning rate. Defaults to 0.001.
        beta_2_decay: float, defaults to -0.8. The decay rate of beta_2.
        epsilon_1: float, defaults to 1e-30. A small offset to keep
            denominator away from 0.
        epsilon_2: float, defaults to 1e-3. A small offset to avoid learning
            rate becoming too small by time.
        clip_threshold: float, defaults to 1.0. Clipping threshold. This is a
            part of Adafactor algorithm, independent from clipnorm,
            clipvalue, and global_clipnorm.
        relative_step: bool, defaults to True. If learning_rate is a constant
            and relative_step=True, learning rate will be adjusted based on
            current iterations. This is a default learning rate decay in
            Adafactor. Unlike Keras 3.15, relative_step=False turns this
            decay off: the step size is then learning_rate itself.
        weight_decay: Float. If set, weight decay is applied.
        clipnorm: Float. If set, the gradient of each weight is individually
            clipped so that its norm is no higher than this value.
        clipvalue: Float. If set, the gradient of each weight is clipped to
            be no higher than this value.
        global_clipnorm: Float. If set, the gradient of all weights is
            clipped so that their global norm is no higher than this value.
        use_ema: Boolean, defaults to False. If True, exponential moving
            average (EMA) is applied: an exponential moving average of the
            model's weights, periodically written over the weights.
        ema_momentum: Float, defaults to 0.99. Only used if use_ema=True.
            new_average = ema_momentum * old_average
            + (1 - ema_momentum) * current_variable_value.
        ema_overwrite_frequency: Int or None, defaults to None. Only used if
            use_ema=True. Every ema_overwrite_frequency steps of iterations,
            the model variables are overwritten by their moving average. If
            None, call `optimizer.finalize_variable_values()` at the end of
            training (`fit()` does this for you).
        name: String. The name to use for momentum accumulator weights
            created by the optimizer.
        loss_scale_factor: Float or None. If a float, the loss is multiplied
            by it before computing gradients and the gradients by its inverse
            before updating variables (mixed precision training).
        gradient_accumulation_steps: Int or None. If an int, variables are
            updated every gradient_accumulation_steps steps, with the average
            of the gradients since the last update. EMA frequency looks at
            the accumulated iterations, learning rate schedules at the real
            ones.
        **kwargs: Additional arguments (R's `...`): `scale_parameter`,
            `warmup_init`, `beta_1`, `min_dim_size_to_factor`, `factored`,
            `momentum_dtype`; see `adafactor.Adafactor`. Any other name is an
            error.

    Integral numbers (R doubles such as 10, numpy integers) are accepted where
    an integer is expected, integers where a float is; a bad value raises
    `adafactor.ArgumentError` (a `ValueError`) naming the argument, the value
    received and what is accepted.

    Returns:
        An Optimizer instance (`adafactor.Adafactor`).

    Reference:
        Shazeer, N. and Stern, M. (2018). Adafactor: Adaptive Learning Rates
        with Sublinear Memory Cost. https://arxiv.org/abs/1804.04235
    """
    return Adafactor(
        learning_rate=learning_rate,
        beta_2_decay=beta_2_decay,
        epsilon_1=epsilon_1,
        epsilon_2=epsilon_2,
        clip_threshold=clip_threshold,
        relative_step=relative_step,
        weight_decay=weight_decay,
        clipnorm=clipnorm,
        clipvalue=clipvalue,
        global_clipnorm=global_clipnorm,
        use_ema=use_ema,
        ema_momentum=ema_momentum,
        ema_overwrite_frequency=ema_overwrite_frequency,
        name=name,
        loss_scale_factor=loss_scale_factor,
        gradient_accumulation_steps=gradient_accumulation_steps,
        **kwargs,
    )
