"""`make bench`: this Adafactor against Keras's Adafactor and Adam.

Prints, for the backend in KERAS_BACKEND (tensorflow or jax), on a
transformer-shaped parameter set (per layer four d x d and two d x 4d
matrices, plus vectors) and on an embedding-heavy one (a 32k x 512 table
before a small stack; on TensorFlow its gradient is row-sparse, so the
sparse path's cost is measured): optimizer state bytes / parameter bytes, the median
jit-compiled step time, the peak memory of a step, and the ratios
this / Keras Adafactor and this / Adam, all from one run. Runs unchanged on
the CPU and on a GPU (larger d there). Machines are noisy: medians, ratios.

    KERAS_BACKEND=jax python bench/bench.py [--d 512] [--layers 4] [--steps 30]

With BENCH_HLO_DIR set, the JAX run also writes each compiled step's HLO
there (which kernels XLA made).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time

import keras
import numpy as np

import adafactor
import results  # bench/results.py: this script's folder is on the path

BACKEND = keras.backend.backend()


def parameter_shapes(d: int, layers: int) -> list[tuple[int, ...]]:
    per_layer = [(d, d)] * 4 + [(d, 4 * d), (4 * d, d)] + [(d,)] * 4 + [(4 * d,)]
    return per_layer * layers


def embedding_gradient(values, indices, shape):
    """An embedding's gradient as the backend hands it over in training:
    TensorFlow's IndexedSlices; on JAX, jax.grad's dense array (Keras's own
    optimizers also fail under jit on a BCOO with repeated rows)."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        return tf.IndexedSlices(
            tf.constant(values), tf.constant(indices), tf.constant(shape, tf.int64)
        )
    dense = np.zeros(shape, "float32")
    np.add.at(dense, indices, values)
    return keras.ops.convert_to_tensor(dense)


def nbytes(variables) -> int:
    return sum(
        math.prod(v.shape) * np.dtype(keras.backend.standardize_dtype(v.dtype)).itemsize
        for v in variables
    )


class Contender:
    def __init__(self, label, make, rms_form=None):
        self.label, self.make, self.rms_form = label, make, rms_form


CONTENDERS = [
    Contender("adafactor (matvec RMS)", adafactor.optimizer_adafactor, "matvec"),
    Contender("adafactor (fused RMS)", adafactor.optimizer_adafactor, "fused"),
    Contender("keras Adafactor", keras.optimizers.Adafactor),
    Contender("keras Adam", keras.optimizers.Adam),
]


def measure_jax(optimizer, variables, grads, args, label):
    import jax

    optimizer.build(variables)
    train = [v.value for v in variables]
    state = [v.value for v in optimizer.variables]

    def step(train, state, grads):
        return optimizer.stateless_apply(state, grads, train)

    jitted = jax.jit(step, donate_argnums=(0, 1))
    compiled = jitted.lower(train, state, grads).compile()
    save_hlo(compiled.as_text(), label)
    memory = compiled.memory_analysis()
    peak = None
    if memory is not None:
        peak = (
            memory.argument_size_in_bytes
            + memory.output_size_in_bytes
            - memory.alias_size_in_bytes
            + memory.temp_size_in_bytes
        )
    times = []
    for i in range(args.steps + 5):
        start = time.perf_counter()
        train, state = compiled(train, state, grads)
        jax.block_until_ready(train)
        if i >= 5:
            times.append(time.perf_counter() - start)
    return statistics.median(times), peak


def save_hlo(text, label):
    """With BENCH_HLO_DIR set, keep the compiled step's HLO (what XLA fused)."""
    folder = os.environ.get("BENCH_HLO_DIR")
    if folder:
        name = "".join(c if c.isalnum() else "-" for c in label)
        with open(os.path.join(folder, f"{name}.hlo.txt"), "w") as file:
            file.write(text)


def measure_torch(optimizer, variables, grads, args, label):
    """PyTorch runs eagerly (Keras's torch optimizers too): the step as
    `fit()` takes it, `apply` on the variables' device."""
    import torch

    optimizer.build(variables)
    sync = torch.cuda.synchronize if args.gpu else (lambda: None)
    times = []
    for i in range(args.steps + 5):
        start = time.perf_counter()
        optimizer.apply(grads, variables)
        sync()
        if i >= 5:
            times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() if args.gpu else None
    return statistics.median(times), peak


def on_gpu() -> bool:
    """Whether the backend runs its steps on a GPU (JAX's default device,
    TensorFlow's and PyTorch's visible GPUs, where they place variables)."""
    if BACKEND == "jax":
        import jax

        return jax.default_backend() != "cpu"
    if BACKEND == "torch":
        import torch

        return torch.cuda.is_available()
    import tensorflow as tf

    return bool(tf.config.list_logical_devices("GPU"))


def measure_tensorflow(optimizer, variables, grads, args, label):
    import tensorflow as tf

    optimizer.build(variables)

    @tf.function(jit_compile=True)
    def step(grads):
        optimizer.apply(grads, variables)
        return optimizer.iterations

    peak = None
    times = []
    for i in range(args.steps + 5):
        if args.gpu and i == 4:
            tf.config.experimental.reset_memory_stats("GPU:0")
        start = time.perf_counter()
        step(grads).numpy()
        if i >= 5:
            times.append(time.perf_counter() - start)
    if args.gpu:
        peak = tf.config.experimental.get_memory_info("GPU:0")["peak"]
    return statistics.median(times), peak


MEASURES = {"jax": measure_jax, "tensorflow": measure_tensorflow, "torch": measure_torch}


def run(args, shapes, tokens=None) -> list[dict]:
    """Every contender on `shapes`; with `tokens`, the first shape is an
    embedding table whose gradient is row-sparse, `tokens` rows a step
    (Zipf-distributed ids, so rows repeat, as in text)."""
    rng = np.random.default_rng(0)
    initial = [rng.normal(scale=0.02, size=s).astype("float32") for s in shapes]
    grad_values = [rng.normal(scale=1e-3, size=s).astype("float32") for s in shapes]
    if tokens:
        ids = np.minimum(rng.zipf(1.2, tokens) - 1, shapes[0][0] - 1)
        lookup = rng.normal(scale=1e-3, size=(tokens,) + shapes[0][1:])
        grad_values[0] = (lookup.astype("float32"), ids.astype("int64"))
    measure = MEASURES[BACKEND]
    rows = []
    for contender in CONTENDERS:
        variables = [keras.Variable(v) for v in initial]
        grads = [keras.ops.convert_to_tensor(g) for g in grad_values[tokens and 1 :]]
        if tokens:
            grads.insert(0, embedding_gradient(*grad_values[0], shapes[0]))
        optimizer = contender.make()
        if contender.rms_form:
            optimizer.rms_form = contender.rms_form
        seconds, peak = measure(optimizer, variables, grads, args, contender.label)
        params = nbytes(variables)
        rows.append(
            dict(
                label=contender.label,
                params=params,
                state=nbytes(optimizer.variables),
                seconds=seconds,
                peak=peak,
            )
        )
    return rows


def ratio(a, b):
    return "n/a" if a is None or b is None else f"{a / b:.3f}"


def report(rows, args, title, parameter_set):
    """Print the table; return its rows for the results file."""
    params = rows[0]["params"]
    print(
        f"\n{title}; backend {BACKEND} on {'GPU' if args.gpu else 'CPU'}: "
        f"{params / 2**20:.1f} MiB of float32 parameters; median of "
        f"{args.steps} steps\n"
    )
    keras_adafactor, adam = rows[-2], rows[-1]
    print(
        "| optimizer | state / params | step ms | peak step MiB | peak / (params + grads) "
        "| state vs Keras Adafactor | time vs Keras Adafactor | time vs Adam |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        peak = "n/a" if row["peak"] is None else f"{row['peak'] / 2**20:.1f}"
        print(
            f"| {row['label']} | {row['state'] / params:.4f} "
            f"| {row['seconds'] * 1e3:.2f} | {peak} "
            f"| {ratio(row['peak'], 2 * params)} "
            f"| {ratio(row['state'], keras_adafactor['state'])} "
            f"| {ratio(row['seconds'], keras_adafactor['seconds'])} "
            f"| {ratio(row['seconds'], adam['seconds'])} |"
        )
    return [
        dict(
            versions=results.versions(BACKEND),
            device="gpu" if args.gpu else "cpu",
            parameters=parameter_set,
            parameter_mib=round(params / 2**20, 1),
            optimizer=row["label"],
            state_over_parameters=round(row["state"] / params, 4),
            step_ms=round(row["seconds"] * 1e3, 3),
            peak_over_parameters_and_gradients=ratio(row["peak"], 2 * params),
            time_vs_keras_adafactor=ratio(row["seconds"], keras_adafactor["seconds"]),
            time_vs_adam=ratio(row["seconds"], adam["seconds"]),
        )
        for row in rows
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--d", type=int, default=None, help="model width (default 512 on CPU, 2048 on GPU)"
    )
    parser.add_argument(
        "--layers", type=int, default=None, help="layers (default 4 on CPU, 5 on GPU: ~1 GiB)"
    )
    parser.add_argument(
        "--steps", type=int, default=None, help="timed steps (default 30 on CPU, 100 on GPU)"
    )
    parser.add_argument(
        "--vocabulary", type=int, default=32000, help="rows of the embedding table (default 32000)"
    )
    parser.add_argument(
        "--tokens",
        type=int,
        default=1024,
        help="tokens a step in the embedding case (default 1024)",
    )
    parser.add_argument(
        "--write",
        action="store_true",
        help="write the tables to bench/results/step_time_<backend>.csv (make bench)",
    )
    args = parser.parse_args()
    args.gpu = on_gpu()
    args.d = args.d or (2048 if args.gpu else 512)
    args.layers = args.layers or (5 if args.gpu else 4)
    args.steps = args.steps or (100 if args.gpu else 30)
    table = report(
        run(args, parameter_shapes(args.d, args.layers)),
        args,
        f"Transformer-shaped, d={args.d}, {args.layers} layers",
        f"transformer d={args.d} x {args.layers}",
    )
    # An embedding-heavy model: a 32k x 512 table (1024 tokens a step)
    # before a small T5-sized stack (d=512, 2 layers).
    embedding = [(args.vocabulary, 512)] + parameter_shapes(512, 2)
    gradient = "sparse" if BACKEND == "tensorflow" else "dense"
    table += report(
        run(args, embedding, tokens=args.tokens),
        args,
        f"Embedding {args.vocabulary} x 512 ({args.tokens} tokens a step, "
        f"{gradient} gradient) + d=512, 2 layers",
        f"embedding {args.vocabulary} x 512, {gradient} gradient",
    )
    if args.write:
        print(f"\n{results.write(f'step_time_{BACKEND}', table)}")


if __name__ == "__main__":
    main()
