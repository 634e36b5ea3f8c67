"""Models no one here wrote, trained a few steps: an Embedding classifier,
keras_hub's T5 and GPT-2 backbones (small configs, random weights, no
downloads), and the dense-gradient layer families. Each must lower its loss
on a fixed batch, train finite, move its weights, and keep factored state.
Marked `backend`: run under TensorFlow (embedding gradients arrive as
IndexedSlices), JAX and PyTorch."""

import math

import keras
import numpy as np
import pytest

from adafactor import optimizer_adafactor

pytestmark = pytest.mark.backend

VOCABULARY = 50
SEQUENCE = 8
BATCH = 4
STEPS = 5
# Small enough that the loss falls on the fixed batch at every step for
# every model (0.01 overshoots the transformers).
LEARNING_RATE = 0.002


def head(features, classes=2):
    pooled = keras.layers.GlobalAveragePooling1D()(features)
    return keras.layers.Dense(classes)(pooled)


def embedding_classifier():
    tokens = keras.Input((SEQUENCE,), dtype="int32")
    features = keras.layers.Embedding(VOCABULARY, 16)(tokens)
    return keras.Model(tokens, head(features))


# A small configuration both keras_hub backbones take; random weights.
SMALL = dict(
    vocabulary_size=VOCABULARY,
    num_layers=2,
    num_heads=2,
    hidden_dim=64,
    intermediate_dim=128,
    dropout=0.0,
)


def keras_hub_models():
    return pytest.importorskip("keras_hub", reason="keras-hub is not installed").models


def t5():
    backbone = keras_hub_models().T5Backbone(**SMALL)
    outputs = backbone(backbone.input)["decoder_sequence_output"]
    return keras.Model(backbone.input, head(outputs))


def gpt2():
    backbone = keras_hub_models().GPT2Backbone(**SMALL, max_sequence_length=SEQUENCE)
    return keras.Model(backbone.input, head(backbone(backbone.input)))


def conv2d_batchnorm():
    images = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, activation="relu")(images)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(images, keras.layers.Dense(2)(x))


def lstm_gru():
    series = keras.Input((SEQUENCE, 5))
    x = keras.layers.LSTM(8, return_sequences=True)(series)
    x = keras.layers.GRU(8)(x)
    return keras.Model(series, keras.layers.Dense(2)(x))


def attention_layernorm():
    series = keras.Input((SEQUENCE, 16))
    x = keras.layers.MultiHeadAttention(num_heads=2, key_dim=8)(series, series)
    x = keras.layers.LayerNormalization()(x + series)
    return keras.Model(series, head(x))


def conv1d_einsum():
    series = keras.Input((SEQUENCE, 5))
    x = keras.layers.Conv1D(8, 3, padding="same")(series)
    x = keras.layers.EinsumDense("abc,cd->abd", output_shape=(None, 12))(x)
    return keras.Model(series, head(x))


MODELS = {
    "embedding": embedding_classifier,
    "t5": t5,
    "gpt2": gpt2,
    "conv2d_batchnorm": conv2d_batchnorm,
    "lstm_gru": lstm_gru,
    "attention_layernorm": attention_layernorm,
    "conv1d_einsum": conv1d_einsum,
}


def random_inputs(model, rng):
    """Random data for each model input: token ids where the input is an
    integer, an all-ones mask where it is a padding mask."""
    data = {}
    for tensor in model.inputs:
        shape = (BATCH,) + tuple(d or SEQUENCE for d in tensor.shape[1:])
        name = tensor.name
        if "padding_mask" in name:
            data[name] = np.ones(shape, "int32")
        elif "int" in str(tensor.dtype):
            data[name] = rng.integers(1, VOCABULARY, shape).astype("int32")
        else:
            data[name] = rng.normal(size=shape).astype("float32")
    if len(model.inputs) == 1:
        return next(iter(data.values()))
    return data


def state_numbers(optimizer):
    own = optimizer.variables[2:]  # after iterations and learning rate
    return sum(math.prod(v.shape) for v in own)


@pytest.fixture
def policy(request):
    keras.mixed_precision.set_dtype_policy(request.param)
    yield request.param
    keras.mixed_precision.set_dtype_policy("float32")


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"], indirect=True)
@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_trains_finite_with_factored_state(name, policy):
    keras.utils.set_random_seed(0)
    model = MODELS[name]()
    optimizer = optimizer_adafactor(learning_rate=LEARNING_RATE)
    model.compile(
        optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    rng = np.random.default_rng(0)
    x = random_inputs(model, rng)
    y = rng.integers(0, 2, BATCH)
    before = [keras.ops.convert_to_numpy(w) for w in model.trainable_weights]
    history = model.fit(x, y, epochs=STEPS, verbose=0)
    after = [keras.ops.convert_to_numpy(w) for w in model.trainable_weights]

    losses = history.history["loss"]
    assert np.all(np.isfinite(losses))
    assert losses[-1] < losses[0], f"the loss did not fall: {losses}"
    assert all(np.all(np.isfinite(w.astype("float32"))) for w in after)
    moved = sum(not np.array_equal(b, a) for b, a in zip(before, after, strict=True))
    assert moved >= len(before) // 2, f"only {moved} of {len(before)} weights moved"
    # Factored: each variable of rank >= 2 keeps its row and column factors
    # and nothing full-size; vectors keep a full second moment.
    assert state_numbers(optimizer) == sum(factored_size(w.shape) for w in model.trainable_weights)


def factored_size(shape):
    if len(shape) < 2:
        return math.prod(shape)
    return math.prod(shape[:-1]) + math.prod(shape[:-2]) * shape[-1]
