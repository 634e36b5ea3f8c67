"""Will it fit? The memory article's worked example, in Python: keras_hub's
Gemma causal LM at 4.7 billion parameters (3 layers of width 8192, its
256,000-token vocabulary), laid out by Gemma's own layout map on 4 devices,
asked of 4 H100s, 4 T4s and a v5e 2x2 TPU slice, with each optimizer. No
weight is made: the model is built inside a StatelessScope and compiled for
from its shapes. `make bench` runs it in the accelerator environment and
keeps what it printed (bench/results/will_it_fit_python.txt)."""

import os

# Before JAX starts: four host devices for Keras's device mesh, and JAX on
# this CPU (the accelerators are compiled for, not used).
os.environ["KERAS_BACKEND"] = "jax"
os.environ["JAX_PLATFORMS"] = "cpu"
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"

import keras  # noqa: E402
import keras_hub  # noqa: E402
import numpy as np  # noqa: E402

from adafactor import memory_report, optimizer_adafactor  # noqa: E402

mesh = keras.distribution.DeviceMesh((1, 4), ["batch", "model"])
layout_map = keras_hub.models.GemmaBackbone.get_layout_map(mesh)
keras.distribution.set_distribution(
    keras.distribution.ModelParallel(layout_map=layout_map, batch_dim_name="batch")
)
with keras.StatelessScope(initialize_variables=False):
    backbone = keras_hub.models.GemmaBackbone(
        vocabulary_size=256000,
        num_layers=3,
        num_query_heads=32,
        num_key_value_heads=32,
        hidden_dim=8192,
        intermediate_dim=49152,
        head_dim=256,
    )
model = keras_hub.models.GemmaCausalLM(backbone=backbone, preprocessor=None)
model.compile(optimizer=optimizer_adafactor(), loss="sparse_categorical_crossentropy")

tokens = np.zeros((4, 512), "int32")  # a batch: 4 sequences of 512 tokens
report = memory_report(
    model,
    batch=({"token_ids": tokens, "padding_mask": tokens}, tokens),
    compiled_for=["H100 x 4", "T4 x 4", "v5e 2x2"],
)
print(report)
