"""A small model and data shared by the scale-out scripts; each script runs in
its own process (the device count is fixed when a backend starts) and prints
one JSON line with what it measured."""

import json

import numpy as np


def data(n=128):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(n, 32)).astype("float32")
    y = (x[:, :3].sum(axis=1) > 0).astype("int32")
    return x, y


def build_model(keras):
    keras.utils.set_random_seed(4)
    return keras.Sequential(
        [
            keras.Input((32,)),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(2),
        ]
    )


def train(keras, optimizer_adafactor):
    x, y = data()
    model = build_model(keras)
    model.compile(
        optimizer=optimizer_adafactor(learning_rate=0.05),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    history = model.fit(x, y, batch_size=32, epochs=3, shuffle=False, verbose=0)
    return model, history.history["loss"]


def max_difference(a, b):
    return float(
        max(np.abs(np.asarray(u) - np.asarray(v)).max() for u, v in zip(a, b, strict=True))
    )


def report(**values):
    print("RESULT " + json.dumps(values))
