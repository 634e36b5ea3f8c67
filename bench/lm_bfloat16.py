"""`make bench`, part four: do bfloat16 weights learn? A keras_hub GPT-2
backbone (a small config, random weights) trained as a byte-level language
model on text every machine has, the Python standard library's own source
files, with float32 weights, bfloat16 weights rounded stochastically (this
optimizer's default) and rounded to nearest, and Keras's Adam and AdamW with
bfloat16 variables and with `mixed_bfloat16` (float32 weights, bfloat16
compute). Each run in a child process: its loss curve (training loss every
few steps, and the held-out loss at the end), the bytes its weights and
optimizer state take, and its peak memory (RSS; at this size mostly the
runtime's own).

    python bench/lm_bfloat16.py [--backend jax] [--steps 400]

Writes `bench/results/lm_bfloat16.csv` (one row a run: final losses, peak,
versions), `bench/results/lm_bfloat16_curves.csv` (step, run, loss) and the
chart `man/figures/lm-bfloat16.png` (R's png()).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sysconfig
from pathlib import Path

import numpy as np

import results  # bench/results.py: this script's folder is on the path

HERE = Path(__file__).resolve().parent
FIGURE = HERE.parent / "man" / "figures" / "lm-bfloat16.png"

# name: (dtype policy, optimizer expression)
RUNS = {
    "adafactor float32": ("float32", "optimizer_adafactor()"),
    "adafactor bfloat16, stochastic rounding": ("bfloat16", "optimizer_adafactor()"),
    "adafactor bfloat16, round to nearest": (
        "bfloat16",
        "optimizer_adafactor(stochastic_rounding=False)",
    ),
    "Adam bfloat16": ("bfloat16", "keras.optimizers.Adam(1e-3)"),
    "AdamW bfloat16": ("bfloat16", "keras.optimizers.AdamW(1e-3)"),
    "Adam mixed_bfloat16": ("mixed_bfloat16", "keras.optimizers.Adam(1e-3)"),
    "AdamW mixed_bfloat16": ("mixed_bfloat16", "keras.optimizers.AdamW(1e-3)"),
}
SEQUENCE = 128
BATCH = 16
EVERY = 10  # steps between recorded training losses


def stdlib_bytes() -> tuple[bytes, bytes]:
    """The standard library's top-level `.py` files, in name order: the
    training text (all but every tenth file) and the held-out text."""
    files = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))
    train = b"".join(f.read_bytes() for i, f in enumerate(files) if i % 10)
    held_out = b"".join(f.read_bytes() for i, f in enumerate(files) if i % 10 == 0)
    return train, held_out


def windows(text: bytes, count: int, rng):
    """`count` random windows of SEQUENCE + 1 bytes: inputs and next bytes."""
    data = np.frombuffer(text, dtype=np.uint8).astype("int32")
    starts = rng.integers(0, len(data) - SEQUENCE - 1, count)
    chunks = np.stack([data[s : s + SEQUENCE + 1] for s in starts])
    return chunks[:, :-1], chunks[:, 1:]


def language_model(keras):
    import keras_hub

    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=256,
        num_layers=4,
        num_heads=4,
        hidden_dim=256,
        intermediate_dim=1024,
        max_sequence_length=SEQUENCE,
        dropout=0.0,
    )
    tokens = keras.Input((SEQUENCE,), dtype="int32", name="token_ids")
    mask = keras.ops.ones_like(tokens)
    features = backbone({"token_ids": tokens, "padding_mask": mask})
    logits = keras.layers.Dense(256)(features)
    return keras.Model(tokens, logits)


def child(backend: str, run: str, steps: int) -> None:
    os.environ["KERAS_BACKEND"] = backend
    import keras

    from adafactor import optimizer_adafactor  # noqa: F401  (used in eval)

    policy, expression = RUNS[run]
    keras.utils.set_random_seed(0)
    keras.config.set_dtype_policy(policy)
    rng = np.random.default_rng(0)
    train, held_out = stdlib_bytes()
    x, y = windows(train, steps * BATCH, rng)
    x_test, y_test = windows(held_out, 32 * BATCH, rng)
    model = language_model(keras)
    model.compile(
        optimizer=eval(expression),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    curve = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if (batch + 1) % EVERY == 0:
                curve.append((batch + 1, float(logs["loss"])))

    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0, callbacks=[Record()])
    held_out_loss = float(model.evaluate(x_test, y_test, batch_size=BATCH, verbose=0))
    print(
        "RESULT "
        + json.dumps(
            {
                "curve": curve,
                "held_out_loss": held_out_loss,
                "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "parameters": int(sum(np.prod(v.shape) for v in model.trainable_variables)),
                "weights_and_state_mib": held_mib(model),
                "versions": results.versions(backend),
            }
        )
    )


def held_mib(model) -> float:
    """What the weights and the optimizer's state take, exactly: the bytes
    a larger model's training holds beside its gradients and activations."""
    from adafactor.memory import itemsize

    variables = [*model.trainable_variables, *model.optimizer.variables]
    return sum(int(np.prod(v.shape)) * itemsize(v.dtype) for v in variables) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backends", nargs="+", default=["jax"])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    parser.add_argument("--results", type=Path, default=results.RESULTS)
    parser.add_argument("--child", nargs=3)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]))
        return
    rows, curves = [], []
    for backend in args.backends:
        measured = {
            run: results.run_child(__file__, backend, [run, str(args.steps)], timeout=3600)
            for run in args.runs
        }
        reference = measured.get("adafactor float32")
        for run, result in measured.items():
            if result is None:
                continue
            final = result["curve"][-1][1]
            over = result["held_out_loss"] / reference["held_out_loss"] if reference else None
            rows.append(
                {
                    "backend": backend,
                    "versions": result["versions"],
                    "run": run,
                    "steps": args.steps,
                    "parameters": result["parameters"],
                    "final_training_loss": round(final, 4),
                    "held_out_loss": round(result["held_out_loss"], 4),
                    "held_out_over_float32": None if over is None else round(over, 4),
                    "weights_and_state_mib": round(result["weights_and_state_mib"], 1),
                    "peak_mib": round(result["peak_mib"]),
                }
            )
            curves += [
                {"backend": backend, "run": run, "step": step, "loss": round(loss, 4)}
                for step, loss in result["curve"]
            ]
            print(
                f"{backend:10} {run:40} held-out {result['held_out_loss']:.4f}"
                f" ({'-' if over is None else f'{over:.3f}'} x float32)"
                f"  weights+state {result['weights_and_state_mib']:5.1f} MiB"
                f"  peak {result['peak_mib']:6.0f} MiB",
                flush=True,
            )
    table = results.write("lm_bfloat16", rows, args.results)
    curve_table = results.write("lm_bfloat16_curves", curves, args.results)
    chart = FIGURE if args.results == results.RESULTS else args.results / "lm-bfloat16.png"
    chart.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["Rscript", str(HERE / "lm_bfloat16_chart.R"), str(curve_table), str(table), str(chart)],
        check=True,
    )
    print(f"Table: {table}\nCurves: {curve_table}\nChart: {chart}")


if __name__ == "__main__":
    main()
