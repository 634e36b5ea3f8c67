"""Stochastic rounding of a low-precision variable's new value (Keras ops).

A step of Adafactor's defaults moves a weight by about 1e-3 of the weights'
RMS, less than half the spacing of bfloat16 numbers (2^-8 relative): rounded
to the nearest bfloat16, most steps are thrown away and the model stops
learning. Rounded stochastically, the new value w - u (in float32) becomes
the bfloat16 number above or below it with the probabilities that make its
expectation w - u, so small steps add up (tensor2tensor's
`utils/quantization.py` did this for Adafactor's bfloat16 weights).

The rounding: random integers below 2^k (k the bits float32 has beyond the
dtype's mantissa, 16 for bfloat16) are added to the float32 bit pattern,
whose last k bits are then cleared. The carry reaches the kept bits with
probability (dropped bits) / 2^k: exactly the distance to the lower
neighbour over the spacing. An exact value (last k bits zero) never moves;
infinities stay infinite.

The random integers are counter-based: a hash (MurmurHash3's finalizer) of
each entry's position in the variable and of a key made from the seed, the
step count and the variable's index. Nothing but the seed is kept: a run
repeats bit for bit, a restored checkpoint (its step count) continues as the
run it was saved from, and every replica and process, computing the same
positions and key, rounds alike. The same integers on every backend: what
`tests/python/test_rounding.py` checks against NumPy.
"""

from __future__ import annotations

import math

import keras
from keras import ops

# Bits of float32's 23-bit mantissa that each dtype does not keep.
DROPPED_BITS = {"bfloat16": 16, "float16": 13}


def _int32(value: int) -> int:
    """A 32-bit pattern as the int32 with the same bits."""
    return ((value & 0xFFFFFFFF) ^ 0x80000000) - 0x80000000


# MurmurHash3's finalizer constants and the golden ratio's, as int32.
_MIX_1 = _int32(0x85EBCA6B)
_MIX_2 = _int32(0xC2B2AE35)
_GOLDEN = _int32(0x9E3779B9)


def rounds(variable, enabled: bool) -> bool:
    """Whether `variable` is rounded stochastically (`enabled` on, and its
    dtype one of `DROPPED_BITS`); float32 and float64 never are."""
    dtype = keras.backend.standardize_dtype(variable.dtype)
    return enabled and dtype in DROPPED_BITS


def _shift_right(x, bits: int):
    """Logical shift right of int32 bit patterns (no backend needs uint32)."""
    return ops.bitwise_and(ops.right_shift(x, bits), (1 << (32 - bits)) - 1)


def mix(x):
    """MurmurHash3's 32-bit finalizer, in int32 arithmetic that wraps."""
    x = ops.bitwise_xor(x, _shift_right(x, 16)) * _MIX_1
    x = ops.bitwise_xor(x, _shift_right(x, 13)) * _MIX_2
    return ops.bitwise_xor(x, _shift_right(x, 16))


def key(seed: int, count, index: int):
    """The key of one variable's rounding at one step: an int32 scalar from
    the seed, the step count (the optimizer's `iterations`, a tensor) and
    the variable's index in the optimizer."""
    # The seed hashed first: seeds s and s + 1 share no step's noise.
    seed = mix(ops.convert_to_tensor(_int32(seed), "int32"))
    step_key = mix(ops.cast(count, "int32") + seed)
    return mix(step_key + _int32(index * 0x61C88647))


def noise(positions, key, dtype):
    """Random integers in [0, 2^k) for the entries at `positions` (int32,
    row-major positions in the variable), k = `DROPPED_BITS[dtype]`: the
    hash's high bits."""
    dropped = DROPPED_BITS[keras.backend.standardize_dtype(dtype)]
    return _shift_right(mix(positions * _GOLDEN + key), 32 - dropped)


def positions(shape, start: int = 0):
    """The row-major positions of a tensor of `shape`, from `start`."""
    count = math.prod(shape)
    return ops.reshape(ops.arange(start, start + count, dtype="int32"), shape)


def rounded(value, noise, dtype):
    """`value` (float32) rounded to `dtype` stochastically with `noise`."""
    dropped = DROPPED_BITS[keras.backend.standardize_dtype(dtype)]
    bits = ops.bitwise_and(ops.view(value, "int32") + noise, _int32(-(1 << dropped)))
    return ops.cast(ops.view(bits, "float32"), dtype)


def rounded_new_value(value, key, dtype, start: int = 0):
    """`value` (float32, a whole variable or its entries from position
    `start` on) rounded to `dtype` with the noise of `key`."""
    return rounded(value, noise(positions(tuple(value.shape), start), key, dtype), dtype)


def row_positions(rows, shape):
    """The positions of the entries of `rows` (axis 0) of a tensor of
    `shape`: the noise a row gets is the one it gets in a dense step."""
    row_size = math.prod(shape[1:])
    within = positions(shape[1:])
    starts = ops.reshape(ops.cast(rows, "int32") * row_size, (-1,) + (1,) * (len(shape) - 1))
    return starts + within
