"""Planted defects: does the suite catch them? (`make mutants`)

Each mutant is a small defect planted in a copy of the package (or of a test
script): a wrong number where this package promises better than Keras. The
tests named beside it run against the copy and must fail; the same tests
must pass on an unplanted copy first, or a "catch" would prove nothing.
Slow (a backend start per mutant), so kept out of `make test`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COPIED = ("inst/python/adafactor", "tests/python", "inst/reference")
OPTIMIZER = "inst/python/adafactor/optimizer.py"
RULE = "inst/python/adafactor/_rule.py"
OPTIMIZER_TESTS = "tests/python/test_optimizer.py"
OPTIONS_TESTS = "tests/python/test_options.py"


@dataclass
class Mutant:
    defect: str
    path: str
    replacements: list[tuple[str, str]]
    tests: list[str]  # pytest arguments: files, node ids, -k expressions
    backend: str = "tensorflow"


ROUNDING = "inst/python/adafactor/_rounding.py"
ROUNDING_TESTS = "tests/python/test_rounding.py"

MUTANTS = [
    Mutant(
        "bfloat16 values always truncated (no noise)",
        ROUNDING,
        [('ops.view(value, "int32") + noise', 'ops.view(value, "int32") + 0 * noise')],
        [ROUNDING_TESTS, "-k", "unbiased or mean_of_many or below_half"],
        backend="torch",
    ),
    Mutant(
        "the same rounding noise every step",
        ROUNDING,
        [('mix(ops.cast(count, "int32") + seed)', 'mix(0 * ops.cast(count, "int32") + seed)')],
        [ROUNDING_TESTS, "-k", "each_step_draws_new_noise"],
    ),
    Mutant(
        "JAX's one-operation CPU step reads the step count from before tracing",
        OPTIMIZER,
        [
            (
                "count = self.iterations if self._step_count is None else self._step_count",
                "count = self.iterations",
            )
        ],
        [ROUNDING_TESTS, "-k", "each_step_draws_new_noise"],
        backend="jax",
    ),
    Mutant(
        "float32 variables rounded too",
        ROUNDING,
        [
            (
                "return enabled and dtype in DROPPED_BITS",
                "return enabled",
            ),
            (
                "DROPPED_BITS[keras.backend.standardize_dtype(dtype)]",
                "DROPPED_BITS.get(keras.backend.standardize_dtype(dtype), 16)",
            ),
        ],
        [ROUNDING_TESTS, "-k", "float32_variables_are_never_rounded"],
        backend="jax",
    ),
    Mutant(
        "a step 1.5 x too large where a gradient row and column are zero",
        OPTIMIZER,
        [
            (
                "dtype, self._rms()) / clip\n",
                "dtype, self._rms()) / clip\n"
                "        factor = factor * ops.where(ops.min(ops.abs(clipped)) == 0, 1.5, 1.0)\n",
            )
        ],
        [OPTIMIZER_TESTS, "-k", "zero_gradient_row_and_column"],
        backend="jax",  # the generic step; TensorFlow and PyTorch have their own
    ),
    Mutant(
        "TensorFlow's step 1.5 x too large where a gradient row and column are zero",
        "inst/python/adafactor/_tensorflow.py",
        [
            (
                "step, dtype, rms) / clip\n",
                "step, dtype, rms) / clip\n"
                "    factor = factor * tf.where(tf.reduce_min(tf.abs(gradient)) == 0, 1.5, 1.0)\n",
            )
        ],
        [OPTIMIZER_TESTS, "-k", "zero_gradient_row_and_column"],
    ),
    Mutant(
        "bfloat16 variables never updated",
        OPTIMIZER,
        [
            (
                "        state = self.state_of(variable)\n        dtype",
                "        if keras.backend.standardize_dtype(variable.dtype) == 'bfloat16':\n"
                "            return\n"
                "        state = self.state_of(variable)\n        dtype",
            )
        ],
        [OPTIMIZER_TESTS, "-k", "low_precision_variables_move"],
    ),
    Mutant(
        "epsilon_1 hard-coded to 1e-30",
        OPTIMIZER,
        [("decay, self.epsilon_1, ", "decay, 1e-30, ")],
        [OPTIONS_TESTS, "-k", "epsilons"],
    ),
    Mutant(
        "epsilon_2 hard-coded to 1e-3",
        OPTIMIZER,
        [("ops.cast(self.epsilon_2, dtype)", "ops.cast(1e-3, dtype)")],
        [OPTIONS_TESTS, "-k", "epsilons"],
    ),
    Mutant(
        "warmup_init dropped from get_config()",
        OPTIMIZER,
        [("            warmup_init=self.warmup_init,\n", "")],
        ["tests/python/test_factory.py", "-k", "config"],
    ),
    Mutant(
        "warmup_init one step ahead",
        RULE,
        [("1e-6 * step", "1e-6 * (step + 1)")],
        [OPTIONS_TESTS, "-k", "warmup_init_step_by_step"],
    ),
    Mutant(
        "variables frozen wherever abs(g) > 1e15",
        OPTIMIZER,
        [
            (
                "        _write.apply_update(self, variable, _rule.times(clipped, factors), "
                "state.momentum, rows)\n",
                "        frozen = ops.max(ops.abs(gradient)) > 1e15\n"
                "        clipped = ops.where(frozen, 0 * clipped, clipped)\n"
                "        _write.apply_update(self, variable, _rule.times(clipped, factors), "
                "state.momentum, rows)\n",
            )
        ],
        [OPTIMIZER_TESTS, "-k", "extreme_gradient_magnitudes"],
    ),
    Mutant(
        "a step up the gradient (the loss rises, weights still move)",
        "inst/python/adafactor/_write.py",
        [
            ("optimizer.assign_sub(variable, update)", "optimizer.assign_add(variable, update)"),
            ("variable.value.sub_(", "variable.value.add_("),
        ],
        ["tests/python/test_models.py", "-k", "conv1d_einsum or attention"],
    ),
    Mutant(
        "JAX's factored step as separate operations (every gradient alive at once)",
        "inst/python/adafactor/_jax.py",
        [("    if not one_operation:\n", "    if True:\n")],
        ["tests/python/test_memory.py", "-k", "compiled_step"],
        backend="jax",
    ),
    Mutant(
        "JAX's updates all started at once (no limit in flight)",
        "inst/python/adafactor/_jax.py",
        [("IN_FLIGHT = 6", "IN_FLIGHT = 10**6")],
        ["tests/python/test_memory.py", "-k", "every_gradient"],
        backend="jax",
    ),
    Mutant(
        "JAX's one-operation step off under any Keras distribution",
        "inst/python/adafactor/_placement.py",
        [("return axes is not None and all(axis is None for axis in axes)", "return False")],
        ["tests/python/test_memory.py", "-k", "data_parallel"],
        backend="jax",
    ),
    Mutant(
        "JAX's one-operation step for variables cut across devices (deadlocks)",
        OPTIMIZER,
        [
            (
                'keras.backend.backend() == "jax" and _placement.is_replicated(variable)',
                'keras.backend.backend() == "jax"',
            )
        ],
        ["tests/python/test_scale_out.py", "-k", "batch_on_the_model_axis"],
        backend="jax",
    ),
    Mutant(
        "JAX's CPU conditional in a step lowered for a GPU or TPU",
        "inst/python/adafactor/_jax.py",
        [("default=branch(elsewhere)", "default=branch(on_cpu)")],
        ["tests/python/test_platforms.py"],
        backend="jax",
    ),
    Mutant(
        "JAX's CPU RMS form (matrix-vector) in a step lowered for a GPU or TPU",
        "inst/python/adafactor/_jax.py",
        [('compute(*arguments, forced or "fused")', 'compute(*arguments, forced or "matvec")')],
        ["tests/python/test_platforms.py"],
        backend="jax",
    ),
    Mutant(
        "JAX's compiler memory never handed back (the event missed)",
        "inst/python/adafactor/_jax.py",
        [("    if event == COMPILE_EVENT and _Release.pending:", "    if False:")],
        ["tests/python/test_memory.py", "-k", "free_heap"],
        backend="jax",
    ),
    Mutant(
        "TensorFlow's column scale as a plain product (grappler: a full-size outer product)",
        "inst/python/adafactor/_tensorflow.py",
        [
            (
                "update = tf.math.multiply_no_nan(update, tf.expand_dims",
                "update = tf.math.multiply(update, tf.expand_dims",
            )
        ],
        ["tests/python/test_memory.py", "-k", "graph_step"],
    ),
    Mutant(
        "TensorFlow's momentum read at the step's start (every variable's at once)",
        "inst/python/adafactor/_tensorflow.py",
        [("    with tf.control_dependencies([update]):", "    if True:")],
        ["tests/python/test_memory.py", "-k", "momentum_after"],
    ),
    Mutant(
        "JAX DataParallel silently not set (one device does the work)",
        "tests/python/scale_out/jax_distributed.py",
        [
            (
                "keras.distribution.set_distribution(keras.distribution.DataParallel("
                "devices=devices))",
                "pass",
            )
        ],
        ["tests/python/test_scale_out.py", "-k", "data_parallel and jax"],
    ),
]


def copy_tree(destination: Path) -> None:
    for part in COPIED:
        shutil.copytree(
            ROOT / part, destination / part, ignore=shutil.ignore_patterns("__pycache__")
        )


def plant(tree: Path, mutant: Mutant) -> None:
    file = tree / mutant.path
    text = file.read_text()
    for old, new in mutant.replacements:
        if old not in text:
            raise SystemExit(f"mutant {mutant.defect!r}: {old!r} not found in {mutant.path}")
        text = text.replace(old, new)
    file.write_text(text)


def run_tests(tree: Path, tests: list[str], backend: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(tree / "inst" / "python"), KERAS_BACKEND=backend)
    command = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests]
    return subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True)


def main(only: list[str]) -> int:
    """Every mutant, or those whose defect contains one of `only`."""
    rows, missed = [], 0
    with tempfile.TemporaryDirectory() as scratch:
        for number, mutant in enumerate(MUTANTS):
            if only and not any(word in mutant.defect for word in only):
                continue
            clean, planted = Path(scratch, f"clean{number}"), Path(scratch, f"mutant{number}")
            copy_tree(clean)
            copy_tree(planted)
            plant(planted, mutant)
            baseline = run_tests(clean, mutant.tests, mutant.backend)
            if baseline.returncode != 0:
                print(baseline.stdout[-3000:])
                raise SystemExit(f"the tests for {mutant.defect!r} fail without the defect")
            caught = run_tests(planted, mutant.tests, mutant.backend).returncode != 0
            missed += not caught
            tests = f"{mutant.backend}: {' '.join(mutant.tests)}"
            rows.append((mutant.defect, tests, "caught" if caught else "MISSED"))
            print(f"{rows[-1][2]:7} {mutant.defect}", flush=True)
    print("\n| planted defect | tests | result |\n|---|---|---|")
    for defect, tests, result in rows:
        print(f"| {defect} | `{tests}` | {result} |")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
