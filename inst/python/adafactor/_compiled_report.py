"""Will it fit? `memory_report(model, batch=..., compiled_for=...)`: fit()'s
JAX step for `model` and a batch, compiled for each accelerator named (a TPU
slice, GPUs of a host) with each optimizer, and each device's peak beside
its memory. The compile needs the variables' shapes only (`_compile`), so a
model built inside `keras.StatelessScope(initialize_variables=False)` is
planned for without its weights being made.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import keras

from adafactor import _compile
from adafactor._arguments import ArgumentError, error_message
from adafactor._table import Report, table
from adafactor._targets import target


class CompiledReport(Report):
    """Rows (dicts) of `memory_report(..., compiled_for=...)`: a row an
    accelerator and optimizer. Prints as a table."""

    SHOWN = (
        ("compiled_for", "accelerator"),
        ("optimizer", "optimizer"),
        ("devices", "devices"),
        ("per_device_peak_bytes", "peak/device"),
        ("device_memory_bytes", "memory"),
        ("fits", "fits"),
        ("state_per_device", "state/device"),
    )

    def __str__(self) -> str:
        cells = [tuple(title for _, title in self.SHOWN)]
        cells += [tuple(_cell(key, _value(row, key)) for key, _ in self.SHOWN) for row in self]
        return table(cells)


def _value(row: dict, key: str):
    """The row's `key`; "state_per_device": the optimizer state one device
    holds (all of it without a distribution)."""
    if key == "state_per_device":
        shared = row["per_device_bytes"]
        return row["state_bytes"] if shared is None else shared
    return row[key]


def _cell(key: str, value) -> str:
    if key == "per_device_peak_bytes" and value is None:
        return "out of memory"
    if key.endswith("_bytes") or key == "state_per_device":
        return size_text(value)
    if isinstance(value, bool):
        return "yes" if value else "NO"
    return str(value)


def size_text(size: float) -> str:
    """Bytes in B, KiB, MiB, GiB or TiB, as R's print shows them."""
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    power = min(int(math.log(max(size, 1), 1024)), len(units) - 1)
    return f"{size} B" if power == 0 else f"{size / 1024**power:.1f} {units[power]}"


def compiled_report(model, static_rows, optimizers, batch, compiled_for) -> CompiledReport:
    """`static_rows` (memory_report's, by optimizer) with each target's
    compiled per-device peak; `optimizers` maps each row's optimizer name to
    a function making that optimizer."""
    targets = _targets(compiled_for)
    specs = batch_specs(batch)
    _check_model(model)
    data = _shape_dtype_structs(specs)
    devices_used = _compile.mesh_device_count()
    report = CompiledReport()
    for chosen in targets:
        devices = _compile.target_devices(chosen, devices_used)
        for row in static_rows:
            peak, refusal = _peak(model, optimizers[row["optimizer"]](), data, devices)
            report.append(
                dict(
                    row,
                    compiled_for=chosen.name,
                    devices=devices_used,
                    per_device_peak_bytes=peak,
                    device_memory_bytes=chosen.device_memory_bytes,
                    fits=peak is not None and peak <= chosen.device_memory_bytes,
                    compiler_refused=refusal,
                )
            )
    return report


def _peak(model, optimizer, data, devices) -> tuple[int | None, str | None]:
    """One device's peak in `model`'s step with `optimizer` (in place of
    the model's own for the compile, which is given back after); or None
    and the compiler's words where it refuses a step that cannot fit
    (XLA:TPU does: RESOURCE_EXHAUSTED, out of memory)."""
    import jax

    own = model.optimizer
    model.optimizer = optimizer
    try:
        compiled = _compile_step(model, data, devices)
    except jax.errors.JaxRuntimeError as error:
        if "RESOURCE_EXHAUSTED" not in str(error):
            raise
        return None, str(error).strip()
    finally:
        model.optimizer = own
    return _compile.peak_bytes(compiled), None


def _compile_step(model, data, devices):
    try:
        return _compile.compile_train_step(model, data, devices)
    except (ValueError, TypeError) as error:
        shapes = keras.tree.map_structure(lambda a: (tuple(a.shape), str(a.dtype)), data)
        raise ArgumentError(
            f"`batch` must be a batch the model trains on ({_inputs_of(model)}, and the "
            f"targets its loss takes); compiling its step said: {_plain(error)} "
            f"Received: batch of shapes {shapes}"
        ) from error


def _plain(error) -> str:
    """Keras's message without its terminal colours and call trailer."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error)).split("Arguments received by")[0]
    return " ".join(text.split())


def _inputs_of(model) -> str:
    try:
        shapes = [tuple(tensor.shape) for tensor in model.inputs]
    except (AttributeError, ValueError):
        return "the inputs it was built for"
    return f"inputs of shape {', '.join(map(str, shapes))}"


def _check_model(model) -> None:
    if keras.backend.backend() != "jax":
        raise ValueError(
            "compiled_for compiles fit()'s JAX step, and Keras runs on "
            f"{keras.backend.backend()} here: set KERAS_BACKEND=jax before Keras starts "
            "(keras3::use_backend('jax') in R). The report without compiled_for works on "
            "every backend."
        )
    if not isinstance(model, keras.Model) or not getattr(model, "compiled", False):
        raise ArgumentError(
            "`model` must be a compiled Keras model with compiled_for (its fit() step is "
            "what is compiled, with its loss and metrics): call compile(loss = ...) first. "
            f"Received: model={type(model).__name__}"
        )


def _targets(compiled_for) -> list:
    names = [compiled_for] if isinstance(compiled_for, str) else compiled_for
    if not isinstance(names, list | tuple) or not names:
        raise ArgumentError(error_message("compiled_for", repr(compiled_for)))
    targets = [target(name) for name in names]
    for name, chosen in zip(names, targets, strict=True):
        if chosen is None:
            raise ArgumentError(error_message("compiled_for", repr(name)))
    return targets


@dataclass(frozen=True)
class _Spec:
    """A batch's array, as its shape and dtype."""

    shape: tuple
    dtype: str


def batch_specs(batch):
    """`batch` (x, or (x, y) or (x, y, sample_weight), as fit() takes a
    batch; each an array or a full shape with a dtype) as `_Spec`s, nested
    alike. Floats of 64 bits become Keras's float type, as fit()'s data
    adapters make them."""
    if batch is None or isinstance(batch, str):
        raise ArgumentError(error_message("batch", repr(batch)))
    if isinstance(batch, list):
        batch = tuple(batch)

    def spec(leaf):
        shape, dtype = getattr(leaf, "shape", None), getattr(leaf, "dtype", None)
        if shape is None or dtype is None or any(d is None for d in shape):
            raise ArgumentError(error_message("batch", f"a part {_describe(leaf)}"))
        dtype = keras.backend.standardize_dtype(dtype)
        if dtype == "float64":
            dtype = keras.config.floatx()
        return _Spec(tuple(int(d) for d in shape), dtype)

    return keras.tree.map_structure(spec, batch)


def _shape_dtype_structs(specs):
    import jax

    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype), specs)


def _describe(leaf) -> str:
    shape = getattr(leaf, "shape", None)
    if shape is None:
        return f"{type(leaf).__name__} {leaf!r}"[:80]
    return f"of shape {tuple(shape)}"
