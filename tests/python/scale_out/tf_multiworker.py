"""MultiWorkerMirroredStrategy with localhost workers (TF_CONFIG).

    tf_multiworker.py <optimizer> <worker_index> <num_workers> <port>

optimizer: "adafactor" or "adam". The workers listen on <port> and the ports
after it. Each worker trains the same model on the same global batches
(tf.data, sharded by the strategy) and prints one RESULT line: its losses
and weights, or the error Keras raised.
"""

import json
import os
import sys

OPTIMIZER, WORKER, WORKERS, PORT = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ["TF_CONFIG"] = json.dumps(
    {
        "cluster": {"worker": [f"localhost:{PORT + i}" for i in range(WORKERS)]},
        "task": {"type": "worker", "index": WORKER},
    }
)
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from common import build_model, data, report  # noqa: E402

from adafactor import optimizer_adafactor  # noqa: E402

strategy = tf.distribute.MultiWorkerMirroredStrategy()
x, y = data()
dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
try:
    with strategy.scope():
        model = build_model(keras)
        optimizer = (
            optimizer_adafactor(learning_rate=0.05, beta_1=0.9)
            if OPTIMIZER == "adafactor"
            else keras.optimizers.Adam(0.01)
        )
        model.compile(
            optimizer=optimizer,
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
    history = model.fit(dataset, epochs=2, verbose=0)
    report(
        workers=strategy.num_replicas_in_sync,
        losses=history.history["loss"],
        weights=[w.tolist() for w in model.get_weights()],
    )
except Exception as error:  # noqa: BLE001 - reported, and the test reads it
    report(error=f"{type(error).__name__}: {str(error).splitlines()[0]}"[:300])
