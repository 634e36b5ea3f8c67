"""Each device's peak in fit()'s JAX step, as XLA:TPU (v5e) and XLA:GPU
(H100) compile it here (`bench/accelerator_memory.py`, the same code), per
device above SGD's step, as a multiple of the parameter bytes that device
holds. The targets: this optimizer's defaults +0.10 (the floor is one of
the 12 layers' gradients at a time, +0.083), with beta_1 +1.10 (its float32
momentum is 1.0), with a bfloat16 momentum +0.60. The compilers' output is
deterministic for the pinned versions (constraints/accelerators.txt).
Where a case misses them (the memory article says which, and why), the
bench records it; the cases here all reach them."""

from __future__ import annotations

import functools

import pytest

import accelerator_memory as bench

TARGETS = {"adafactor": 0.10, "adafactor beta_1": 1.10, "adafactor beta_1 bf16": 0.60}
COMPILERS = ("tpu", "gpu")


@functools.cache
def figures(compiler, distribution, dtype, optimizer):
    """One device's figures, and the parameter bytes it holds."""
    return bench.measure(compiler, "dense", distribution, dtype, optimizer)


def above_sgd(compiler, distribution, dtype, optimizer, measure="peak_bytes"):
    """One device's `measure` above SGD's, x the parameter bytes it holds."""
    sgd, parameters = figures(compiler, distribution, dtype, "SGD")
    step, _ = figures(compiler, distribution, dtype, optimizer)
    return (getattr(step, measure) - getattr(sgd, measure)) / parameters


@pytest.mark.parametrize("optimizer", list(TARGETS))
@pytest.mark.parametrize("distribution", ["one device", "DataParallel", "Megatron"])
@pytest.mark.parametrize("compiler", COMPILERS)
def test_each_devices_peak_is_within_its_target(compiler, distribution, optimizer):
    assert above_sgd(compiler, distribution, "float32", optimizer) <= TARGETS[optimizer]


def test_column_sums_of_the_clipped_square_write_it_out_under_megatron_on_gpus(monkeypatch):
    """The planted defect: with the clip's finiteness test in the square a
    GPU's column sums take (`_rule.capped_square` made `clipped_square`),
    XLA:GPU writes the square of each column-cut kernel out in full
    (+0.135): the target fails."""
    from adafactor import _rule

    monkeypatch.setattr(_rule, "capped_square", _rule.clipped_square)
    sgd, parameters = figures("gpu", "Megatron", "float32", "SGD")
    step, _ = bench.measure("gpu", "dense", "Megatron", "float32", "adafactor")
    assert (step.peak_bytes - sgd.peak_bytes) / parameters > TARGETS["adafactor"]


@pytest.mark.parametrize("distribution", ["one device", "DataParallel"])
@pytest.mark.parametrize("compiler", COMPILERS)
def test_with_bfloat16_weights_too(compiler, distribution):
    """(Under DataParallel XLA:TPU reaches it with its updates unordered:
    +0.08, against +0.26 in order, `_jax.InOrder`.)"""
    assert above_sgd(compiler, distribution, "bfloat16", "adafactor") <= TARGETS["adafactor"]


def test_gemma_under_its_own_layout_map_on_gpus():
    """keras_hub's Gemma (127 M parameters) under its layout map, compiled
    for 4 H100s: its kernels are cut across the devices, and their step
    on a GPU is the one written for XLA (`_jax.cut_step`; the generic
    step's clipped copy of each gradient held +0.175)."""
    sgd, parameters = bench.measure("gpu", "Gemma", "Gemma layout map", "float32", "SGD")
    step, _ = bench.measure("gpu", "Gemma", "Gemma layout map", "float32", "adafactor")
    assert (step.peak_bytes - sgd.peak_bytes) / parameters <= TARGETS["adafactor"]


def test_adam_holds_two_more_copies_so_the_measure_sees_state():
    """The instrument counts state: Adam's two float32 moments."""
    assert 1.95 <= above_sgd("tpu", "one device", "float32", "Adam") <= 2.15


def test_updates_left_to_the_scheduler_hold_gradients_alive():
    """The planted defect: without `_jax.InOrder` XLA:TPU schedules the
    updates late, with more than one layer's gradient alive (+0.18): the
    target fails."""
    sgd, parameters = figures("tpu", "one device", "float32", "SGD")
    step, _ = bench.measure("tpu", "dense", "one device", "float32", "adafactor, updates unordered")
    assert (step.peak_bytes - sgd.peak_bytes) / parameters > TARGETS["adafactor"]


# The bytes the step moves beyond SGD's step (XLA's cost model), against
# Adam's: at most Adam's. XLA:TPU on one device reaches 2.08 x Adam's: it
# fuses Adam's update into the gradient's matrix product, while this rule
# needs the whole gradient's statistics first (the gradient written and
# read three times, the variable read for its RMS: 5 x the parameters
# against Adam's 4, and the compiler's copies to on-chip memory; the
# benchmarks article). Held there, so that it cannot get worse unnoticed.
BYTES_SHORTFALL = {("tpu", "one device"): 1.2}


@pytest.mark.parametrize("distribution", ["one device", "Megatron"])
@pytest.mark.parametrize("compiler", COMPILERS)
def test_the_step_moves_no_more_than_adams_beyond_sgds(compiler, distribution):
    moved = above_sgd(compiler, distribution, "float32", "adafactor", "bytes_accessed")
    adam = above_sgd(compiler, distribution, "float32", "Adam", "bytes_accessed")
    assert moved <= adam * (1 + BYTES_SHORTFALL.get((compiler, distribution), 0.0))
