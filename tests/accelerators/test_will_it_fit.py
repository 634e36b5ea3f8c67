"""Will it fit? `memory_report(..., compiled_for=...)` against the
accelerator-memory instrument (`bench/accelerator_memory.py`, which
compiles the same step by its own code), and on a model known not to fit
with Adam."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import accelerator_memory as bench
from adafactor import ArgumentError, memory_report, optimizer_adafactor
from adafactor._targets import GPU_CARDS

INSTRUMENT = {"adafactor": "adafactor", "Adam": "Adam", "SGD": "SGD"}


@pytest.fixture
def megatron():
    bench.set_distribution("Megatron")
    yield
    keras.distribution.set_distribution(None)


@pytest.mark.parametrize("compiler,name", [("tpu", "v5e 2x2"), ("gpu", "H100 x 4")])
def test_the_report_is_the_instruments_figure(megatron, compiler, name):
    model, data = bench.dense_model(optimizer_adafactor())
    rows = {row["optimizer"]: row for row in memory_report(model, batch=data, compiled_for=name)}
    # The state each device holds of a model whose weights were never made,
    # from the layouts the distribution gives: Adam's two moments.
    assert rows["Adam"]["per_device_bytes"] == 2 * bench.parameter_bytes(model, 4)
    for ours, theirs in INSTRUMENT.items():
        figures, _ = bench.measure(compiler, "dense", "Megatron", "float32", theirs)
        bench.set_distribution("Megatron")  # measure() leaves none set
        assert rows[ours]["per_device_peak_bytes"] == figures.peak_bytes, ours
        assert rows[ours]["devices"] == 4
        assert rows[ours]["compiled_for"] == name


def big_dense(width=16384, layers=5):
    """1.34 billion parameters (5.4 GB), never made: the compile reads shapes."""
    optimizer = keras.optimizers.SGD()  # its iteration count is made from a value
    with keras.StatelessScope(initialize_variables=False):
        model = keras.Sequential(
            [keras.Input((width,))] + [keras.layers.Dense(width) for _ in range(layers)]
        )
        model.compile(optimizer=optimizer, loss="mse")
    return model, (np.zeros((8, width), "float32"),) * 2


def test_a_model_too_big_for_adam_on_one_card_is_reported_so():
    model, batch = big_dense()
    rows = {
        row["optimizer"]: row for row in memory_report(model, batch=batch, compiled_for="T4 x 1")
    }
    parameters = rows["Adam"]["parameter_bytes"]
    memory = GPU_CARDS["T4"]["device_memory_size"]
    for row in rows.values():
        assert row["device_memory_bytes"] == memory
        assert row["fits"] == (row["per_device_peak_bytes"] <= memory)
    # Adam holds the weights and two moments (3 copies) and gradients.
    assert rows["Adam"]["per_device_peak_bytes"] > 3 * parameters > memory
    assert not rows["Adam"]["fits"] and not rows["AdamW"]["fits"]
    # This optimizer: SGD's step, and one layer's gradient at a time (+0.25).
    assert rows["adafactor"]["per_device_peak_bytes"] <= (
        rows["SGD"]["per_device_peak_bytes"] + 0.26 * parameters
    )
    assert rows["adafactor"]["fits"]


def test_where_xla_tpu_refuses_the_step_it_does_not_fit():
    """XLA:TPU will not compile a step that exceeds the chip's memory: Adam's
    three copies of 1.6 billion parameters (19.3 GB) on a 16 GiB chip."""
    model, batch = big_dense(layers=6)
    rows = {r["optimizer"]: r for r in memory_report(model, batch=batch, compiled_for="v5e 1x1")}
    assert rows["Adam"]["per_device_peak_bytes"] is None
    assert "RESOURCE_EXHAUSTED" in rows["Adam"]["compiler_refused"]
    assert not rows["Adam"]["fits"]
    assert rows["adafactor"]["fits"] and rows["adafactor"]["compiler_refused"] is None
    assert rows["adafactor"]["per_device_peak_bytes"] < 2**34


def test_a_batch_the_model_does_not_take_names_what_it_takes():
    model, _ = big_dense(width=64, layers=1)
    wrong = (np.zeros((8, 32), "float32"), np.zeros((8, 64), "float32"))
    with pytest.raises(
        ArgumentError,
        match=r"`batch` must be a batch the model trains on "
        r"\(inputs of shape \(None, 64\).*expected axis -1 of input shape to have "
        r"value 64, but received input with shape \(8, 32\) Received: batch of shapes",
    ):
        memory_report(model, batch=wrong, compiled_for="L4 x 1")


def test_a_mesh_larger_than_the_accelerator_is_an_error(megatron):
    model, data = bench.dense_model(optimizer_adafactor())
    with pytest.raises(ValueError, match="'H100 x 2' has 2 device\\(s\\), and the Keras"):
        memory_report(model, batch=data, compiled_for="H100 x 2")


def test_the_report_prints_a_table_a_person_reads():
    model, batch = big_dense(width=256, layers=2)
    report = memory_report(model, batch=batch, compiled_for=["v5e 1x1", "A100 x 1"])
    lines = str(report).splitlines()
    assert lines[0].split()[:3] == ["accelerator", "optimizer", "devices"]
    assert len(lines) == 1 + 2 * 5
    assert lines[1].split()[:2] == ["v5e", "1x1"] and "16.0 GiB" in lines[1]
    assert "79.3 GiB" in lines[-1] and lines[-1].split()[-3] == "yes"
