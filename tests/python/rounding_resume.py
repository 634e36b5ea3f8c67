"""A bfloat16 model trained two epochs at once ("whole"), or one epoch and
saved ("first") then loaded in this fresh process and trained one more
("resume"); the weights are written as float32 arrays.

Usage: rounding_resume.py <backend> whole|first|resume <folder>
"""

import os
import sys

BACKEND, MODE, FOLDER = sys.argv[1:4]
os.environ["KERAS_BACKEND"] = BACKEND
import keras  # noqa: E402
import numpy as np  # noqa: E402

from adafactor import optimizer_adafactor  # noqa: E402

rng = np.random.default_rng(3)
X = rng.normal(size=(256, 16)).astype("float32")
Y = np.tanh(X[:, :4].sum(axis=1, keepdims=True)).astype("float32")


def new_model():
    keras.utils.set_random_seed(5)
    keras.config.set_dtype_policy("bfloat16")
    model = keras.Sequential(
        [keras.Input((16,)), keras.layers.Dense(64, activation="relu"), keras.layers.Dense(1)]
    )
    model.compile(optimizer=optimizer_adafactor(), loss="mse")
    return model


def fit(model, epochs):
    model.fit(X, Y, batch_size=32, epochs=epochs, shuffle=False, verbose=0)


def save_weights(model, name):
    arrays = {
        f"weight_{i}": keras.ops.convert_to_numpy(keras.ops.cast(w, "float32"))
        for i, w in enumerate(model.weights)
    }
    np.savez(os.path.join(FOLDER, name), **arrays)


checkpoint = os.path.join(FOLDER, "first.keras")
if MODE == "whole":
    model = new_model()
    fit(model, 2)
    save_weights(model, "whole.npz")
elif MODE == "first":
    model = new_model()
    fit(model, 1)
    model.save(checkpoint)
else:
    keras.config.set_dtype_policy("bfloat16")
    model = keras.saving.load_model(checkpoint)
    fit(model, 1)
    save_weights(model, "resumed.npz")
