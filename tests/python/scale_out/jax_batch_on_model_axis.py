"""ModelParallel on four host devices, the batch cut on the same axis as the
kernels (so XLA's step holds all-to-all and all-reduce collectives): fit()
must finish. Each factored step of a cut kernel as one conditional
(`_jax.py`) deadlocked here, even one conditional at a time: the devices
waited in different collectives.

Usage: jax_batch_on_model_axis.py
"""

import os

os.environ["KERAS_BACKEND"] = "jax"
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
import keras  # noqa: E402
import numpy as np  # noqa: E402
from common import report  # noqa: E402

from adafactor import optimizer_adafactor  # noqa: E402

mesh = keras.distribution.DeviceMesh((4,), ["model"], keras.distribution.list_devices("cpu"))
layout_map = keras.distribution.LayoutMap(mesh)
layout_map[".*kernel"] = (None, "model")
keras.distribution.set_distribution(
    keras.distribution.ModelParallel(layout_map=layout_map, batch_dim_name="model")
)
inputs = keras.Input((1024,))
x = inputs
for _ in range(12):
    x = keras.layers.Dense(1024)(x)
model = keras.Model(inputs, x)
model.compile(optimizer=optimizer_adafactor(), loss="mse")
data = np.random.default_rng(0).normal(size=(256, 1024)).astype("float32") / 32
history = model.fit(data, data, batch_size=64, epochs=3, shuffle=False, verbose=0)
report(losses=history.history["loss"])
