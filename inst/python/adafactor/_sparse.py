"""Row-sparse gradients: TensorFlow's `IndexedSlices` and JAX's `BCOO`.

An embedding's gradient on TensorFlow is an `IndexedSlices`: the rows of the
table that the batch looked up (a row once per lookup, so a row may repeat)
and their values. The optimizer sees it as `(indices, values)` with each row
once, updates its state as the dense gradient would, and hands the variable
a sparse update of the same rows.
"""

from __future__ import annotations

import keras
from keras import ops


def split_rows(gradient):
    """`(indices, values)` of a row-sparse gradient, each row once (repeated
    rows summed, as the dense gradient sums them); `(None, gradient)` for a
    dense one. A sparse layout other than rows comes back dense."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        if isinstance(gradient, tf.IndexedSlices):
            rows, position = tf.unique(gradient.indices)
            values = tf.math.unsorted_segment_sum(gradient.values, position, tf.shape(rows)[0])
            return rows, values
    elif backend == "jax":
        from jax.experimental import sparse

        if isinstance(gradient, sparse.JAXSparse):
            if (
                isinstance(gradient, sparse.BCOO)
                and gradient.n_batch == 0
                and gradient.n_sparse == 1
            ):
                return _bcoo_rows(gradient)
            return None, gradient.todense()
    return None, gradient


def _bcoo_rows(gradient):
    # Under jit the number of distinct rows must be static: sum_duplicates
    # pads with zero rows at an out-of-range index. Clamped into range, a
    # padding row adds zero wherever it is scattered and is never NaN where
    # it is gathered (jnp.take fills out-of-range gathers with NaN).
    summed = gradient.sum_duplicates(nse=gradient.nse, remove_zeros=False)
    rows = ops.minimum(summed.indices[:, 0], gradient.shape[0] - 1)
    return rows, summed.data


def join_rows(rows, values, shape):
    """The backend's row-sparse tensor of `shape` holding `values` at `rows`;
    `self.assign_sub` turns it into a scatter on the variable."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.IndexedSlices(values, rows, tf.constant(shape, rows.dtype))
    from jax.experimental import sparse

    return sparse.BCOO((values, ops.expand_dims(rows, -1)), shape=shape)


def spread(rows, values, shape):
    """`values` at `rows` of a dense zero tensor of `shape` (the identity for
    a dense gradient, `rows` None)."""
    if rows is None:
        return values
    return ops.scatter(ops.expand_dims(rows, -1), values, shape)


def pick(rows, dense):
    """The `rows` of `dense` (all of it for a dense gradient, `rows` None)."""
    return dense if rows is None else ops.take(dense, rows, axis=0)
