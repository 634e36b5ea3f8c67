"""An independent Adafactor in float64 numpy, written from the published
formulas (Shazeer & Stern 2018, Algorithms 4 and 5; Hugging Face's options),
with the full second moment formed explicitly: the oracle for the tests."""

from __future__ import annotations

import numpy as np


def _stored(momentum, dtype):
    """The momentum as kept between steps: rounded to `dtype`
    (round-to-nearest-even, ml_dtypes' bfloat16), the step itself unrounded."""
    if dtype == "float32":
        return momentum
    import ml_dtypes

    return momentum.astype(np.float32).astype(ml_dtypes.bfloat16).astype(np.float64)


def _rms(x):
    return np.sqrt(np.mean(np.square(x)))


class NumpyAdafactor:
    def __init__(
        self,
        learning_rate=0.001,
        beta_2_decay=-0.8,
        epsilon_1=1e-30,
        epsilon_2=1e-3,
        clip_threshold=1.0,
        relative_step=True,
        scale_parameter=True,
        warmup_init=False,
        beta_1=None,
        min_dim_size_to_factor=None,
        factored=True,
        momentum_dtype="float32",
    ):
        self.__dict__.update(locals())
        self.state = {}
        self.t = 0

    def _factored(self, shape):
        if not self.factored or len(shape) < 2:
            return False
        return min(shape[-2:]) >= (self.min_dim_size_to_factor or 1)

    def step(self, params, grads):
        self.t += 1
        t = self.t
        for i, (p, g) in enumerate(zip(params, grads, strict=True)):
            g = g.astype(np.float64)
            s = self.state.setdefault(i, {})
            if self.warmup_init:
                rho = min(1e-6 * t, 1 / np.sqrt(t))
            elif self.relative_step:
                rho = min(self.learning_rate, 1 / np.sqrt(t))
            else:
                rho = self.learning_rate
            alpha = rho * (max(self.epsilon_2, _rms(p)) if self.scale_parameter else 1)
            beta_2 = 1 - t**self.beta_2_decay
            g2 = g * g + self.epsilon_1
            if self._factored(p.shape):
                r = s.get("r", np.zeros(p.shape[:-1]))
                c = s.get("c", np.zeros(p.shape[:-2] + p.shape[-1:]))
                s["r"] = r = beta_2 * r + (1 - beta_2) * g2.mean(-1)
                s["c"] = c = beta_2 * c + (1 - beta_2) * g2.mean(-2)
                v = (r / r.mean(-1, keepdims=True))[..., None] * c[..., None, :]
            else:
                v = s.get("v", np.zeros(p.shape))
                s["v"] = v = beta_2 * v + (1 - beta_2) * g2
            u = g / np.sqrt(v)
            u = u / max(1.0, _rms(u) / self.clip_threshold)
            update = alpha * u
            if self.beta_1 is not None:
                m = s.get("m", np.zeros(p.shape))
                update = self.beta_1 * m + (1 - self.beta_1) * update
                s["m"] = _stored(update, self.momentum_dtype)
            params[i] = p - update
        return params
