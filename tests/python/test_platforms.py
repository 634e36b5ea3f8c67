"""The step is chosen for the platform it is compiled for.

On JAX the XLA:CPU scheduling work (each factored step one conditional,
`_jax.py`) and the matrix-vector RMS form go only into a step lowered for
the CPU; a step lowered for a GPU or TPU is the plain fused step. JAX lowers
for a platform it has no device of; the CPU's XLA then compiles that
lowering, and what its simplifier keeps is counted (the platform switch
itself lowers to a conditional on a constant, which XLA inlines).
TensorFlow and PyTorch run a variable's step where the variable lives.
"""

from __future__ import annotations

import contextlib
import re
from types import SimpleNamespace

import keras
import numpy as np
import pytest

from adafactor import Adafactor, _placement, optimizer_adafactor
from conftest import dense_stack

pytestmark = pytest.mark.backend

BACKEND = keras.backend.backend()
JAX_ONLY = pytest.mark.skipif(BACKEND != "jax", reason="JAX lowers for other platforms")
LAYERS = 5  # each with a factored kernel


def compiled_on_the_cpu(lowered) -> str:
    """The optimised HLO the CPU's XLA makes of `lowered`, whichever
    platform it was lowered for."""
    from jax._src import compiler, xla_bridge
    from jax._src.lib import xla_client

    backend = xla_bridge.get_backend("cpu")
    options = compiler.get_compile_options(num_replicas=1, num_partitions=1)
    if hasattr(backend, "compile_and_load"):  # JAX >= 0.5
        devices = xla_client.DeviceList(tuple(backend.devices()[:1]))
        executable = backend.compile_and_load(lowered.as_text(), devices, options)
    else:
        executable = backend.compile(lowered.as_text(), options)
    return executable.hlo_modules()[0].to_string()


def counts(make_optimizer, platform):
    """Conditionals and dot products XLA keeps in `fit()`'s train step."""
    from adafactor import _jax

    model, data = dense_stack(make_optimizer(), width=64, layers=LAYERS, batch=8)
    hlo = compiled_on_the_cpu(_jax.lowered_train_step(model, data, (platform,)))
    return hlo.count(" conditional("), len(re.findall(r" dot\(", hlo))


OPTIONS = {"defaults": {}, "beta_1": {"beta_1": 0.9}}


@JAX_ONLY
@pytest.mark.parametrize("platform", ["cuda", "tpu"])
@pytest.mark.parametrize("options", list(OPTIONS))
def test_a_step_lowered_for_an_accelerator_is_the_plain_fused_step(platform, options):
    """No conditional of this optimizer, and the row-sum RMS form: the
    dot products are the model's own, as many as SGD's step has."""
    _, sgd_dots = counts(lambda: keras.optimizers.SGD(0.01), platform)
    conditionals, dots = counts(lambda: optimizer_adafactor(**OPTIONS[options]), platform)
    assert conditionals == 0
    assert dots == sgd_dots


def cpu_conditionals():
    """One operation per factored kernel where XLA's CPU compiler needs it
    (jaxlib >= 0.5.1), none before (`_jax.CONDITIONAL_PAYS`)."""
    from adafactor import _jax

    return LAYERS if _jax.CONDITIONAL_PAYS else 0


@JAX_ONLY
@pytest.mark.parametrize("options", list(OPTIONS))
def test_a_step_lowered_for_the_cpu_has_one_operation_per_factored_variable(options):
    """A conditional per factored kernel, each of its two (identical)
    branches with the matrix-vector product of the RMS form (on a jaxlib
    without the conditional, one such product per kernel)."""
    _, sgd_dots = counts(lambda: keras.optimizers.SGD(0.01), "cpu")
    conditionals, dots = counts(lambda: optimizer_adafactor(**OPTIONS[options]), "cpu")
    assert conditionals == cpu_conditionals()
    assert dots == sgd_dots + LAYERS * (2 if conditionals else 1)


@JAX_ONLY
def test_the_conditional_is_used_from_jaxlib_0_5_1():
    import jaxlib

    from adafactor import _jax

    release = tuple(int(part) for part in jaxlib.__version__.split(".")[:3])
    assert (release >= (0, 5, 1)) == _jax.CONDITIONAL_PAYS


@JAX_ONLY
@pytest.mark.parametrize("platform", ["cpu", "cuda", "tpu"])
def test_under_data_parallel_the_platform_decides_too(platform):
    keras.distribution.set_distribution(keras.distribution.DataParallel())
    try:
        found, _ = counts(optimizer_adafactor, platform)
    finally:
        keras.distribution.set_distribution(None)
    assert found == (cpu_conditionals() if platform == "cpu" else 0)


@contextlib.contextmanager
def cut_kernels():
    """ModelParallel on a mesh of this machine's one device, the kernels
    laid out on its "model" axis: cut across devices, as far as the step
    can tell."""
    mesh = keras.distribution.DeviceMesh((1, 1), ["batch", "model"])
    layouts = keras.distribution.LayoutMap(mesh)
    layouts[".*kernel"] = (None, "model")
    distribution = keras.distribution.ModelParallel(layout_map=layouts, batch_dim_name="batch")
    keras.distribution.set_distribution(distribution)
    try:
        yield
    finally:
        keras.distribution.set_distribution(None)


@JAX_ONLY
@pytest.mark.parametrize("platform, rms_dots", [("cpu", LAYERS), ("cuda", 0), ("tpu", 0)])
def test_variables_cut_across_devices_take_no_conditional_in_the_platforms_form(platform, rms_dots):
    """No conditional on any platform (it would hold collectives), and the
    RMS form still the platform's."""
    with cut_kernels():
        _, sgd_dots = counts(lambda: keras.optimizers.SGD(0.01), platform)
        assert counts(optimizer_adafactor, platform) == (0, sgd_dots + rms_dots)


def operations(name, platform, cut):
    """How many operations `name` the train step lowered for `platform`
    holds, its kernels cut across devices (`cut_kernels`) or whole."""
    from adafactor import _jax

    with cut_kernels() if cut else contextlib.nullcontext():
        model, data = dense_stack(optimizer_adafactor(), width=64, layers=LAYERS, batch=8)
        lowered = _jax.lowered_train_step(model, data, (platform,))
    return lowered.as_text().count(f"stablehlo.{name}")


def finiteness_tests(platform, cut):
    """How many `is_finite` tests the lowered train step holds: the clip
    makes one in each use of the gradient it is made in."""
    return operations("is_finite", platform, cut)


@JAX_ONLY
def test_variables_cut_across_devices_take_the_fused_step_only_where_lowered_for_a_gpu():
    """`_jax.cut_step`: lowered for a GPU, a cut kernel's step is a whole
    one's (the clip made in each use of the gradient, nothing kept);
    lowered for a TPU or the CPU, the generic step (the clip made once)."""
    import jax

    if jax.__version_info__ < (0, 5):
        pytest.skip("JAX < 0.5 lowers both branches of lax.platform_dependent (XLA picks one)")
    cut = {platform: finiteness_tests(platform, cut=True) for platform in ("cpu", "cuda", "tpu")}
    assert cut["cuda"] == finiteness_tests("cuda", cut=False)
    assert cut["tpu"] == cut["cpu"] < cut["cuda"]


def minimums(platform, cut):
    """How many `minimum`s the lowered train step holds (a clipped square
    has one, `_rule.capped_square` one more)."""
    return operations("minimum", platform, cut)


@JAX_ONLY
def test_only_matrices_cut_across_gpus_sum_their_columns_of_the_capped_square():
    """`_jax.cut_step`: lowered for a GPU, each cut float32 kernel's column
    sums take `_rule.capped_square`, one `minimum` more than the whole
    kernel's step; lowered for a TPU or the CPU, none (the generic step)."""
    import jax

    if jax.__version_info__ < (0, 5):
        pytest.skip("JAX < 0.5 lowers both branches of lax.platform_dependent (XLA picks one)")
    assert minimums("cuda", cut=True) == minimums("cuda", cut=False) + LAYERS
    assert minimums("tpu", cut=True) == minimums("cpu", cut=True) < minimums("cuda", cut=True)


def step_a_cut_kernel(grads, platform, monkeypatch):
    """A (6, 5) kernel cut across devices (`cut_kernels`) stepped eagerly by
    `grads` with the step `platform` takes (eagerly, JAX's default platform
    decides); its value and the optimizer's state after each step."""
    import jax

    with cut_kernels():
        start = np.random.default_rng(0).normal(size=(6, 5)).astype("float32")
        kernel = keras.Variable(start, name="kernel")
        assert not _placement.is_replicated(kernel)
        optimizer = optimizer_adafactor()
        with monkeypatch.context() as patch:
            patch.setattr(jax, "default_backend", lambda: platform)
            trajectory = []
            for gradient in grads:
                optimizer.apply([keras.ops.convert_to_tensor(gradient)], [kernel])
                trajectory.append([np.asarray(v) for v in (kernel, *optimizer.variables[1:])])
    return trajectory


@JAX_ONLY
def test_a_matrix_cut_across_gpus_steps_as_the_generic_step_even_beyond_the_clip(monkeypatch):
    """The capped square the GPU's column sums take gives the factors and
    the variable the generic step gives them, gradients whose squares
    overflow float32 included (entries up to 3e38 clipped to 2.3e18)."""
    rng = np.random.default_rng(1)
    grads = [rng.normal(size=(6, 5)).astype("float32") for _ in range(5)]
    grads[1][2, 3], grads[2][0, 1], grads[3][4, 4] = 1e30, -3e38, 2e19
    on_gpu = step_a_cut_kernel(grads, "gpu", monkeypatch)
    generic = step_a_cut_kernel(grads, "cpu", monkeypatch)
    for gpu_step, generic_step in zip(on_gpu, generic, strict=True):
        for gpu_value, generic_value in zip(gpu_step, generic_step, strict=True):
            np.testing.assert_allclose(gpu_value, generic_value, rtol=1e-6, atol=0)


@JAX_ONLY
def test_an_infinite_gradient_poisons_a_matrix_cut_across_gpus_too(monkeypatch):
    """The capped square counts an infinite entry as the largest finite
    square in its column's sum; the entry still makes its variable NaN."""
    grads = [np.random.default_rng(1).normal(size=(6, 5)).astype("float32")]
    grads[0][2, 3] = np.inf
    kernel, _, _, col = step_a_cut_kernel(grads, "gpu", monkeypatch)[-1]
    assert np.isnan(kernel).any()
    assert np.isfinite(col).all()


@JAX_ONLY
@pytest.mark.parametrize(
    "platform, barriers", [("cpu", 0), ("cuda", 2 * LAYERS - 1), ("tpu", 2 * LAYERS - 1)]
)
@pytest.mark.parametrize("distributed", [False, True])
def test_updates_follow_one_another_only_where_lowered_for_an_accelerator(
    platform, barriers, distributed
):
    """`_jax.InOrder`: each variable's gradient after the new value of the
    one updated before it (an optimization barrier between each pair of
    the stack's 10 variables) in a step lowered for a GPU or TPU; none in a
    step lowered for the CPU, which orders its updates itself. The same for
    variables cut across devices. (XLA:CPU's own compile drops the barriers,
    so the lowering is read.)"""
    import jax

    from adafactor import _jax

    if platform == "cpu" and jax.__version_info__ < (0, 5):
        pytest.skip("JAX < 0.5 lowers both branches of lax.platform_dependent (XLA picks one)")

    if distributed:
        mesh = keras.distribution.DeviceMesh((1, 1), ["batch", "model"])
        layouts = keras.distribution.LayoutMap(mesh)
        layouts[".*kernel"] = (None, "model")
        keras.distribution.set_distribution(
            keras.distribution.ModelParallel(layout_map=layouts, batch_dim_name="batch")
        )
    try:
        model, data = dense_stack(optimizer_adafactor(), width=64, layers=LAYERS, batch=8)
        lowered = _jax.lowered_train_step(model, data, (platform,))
    finally:
        keras.distribution.set_distribution(None)
    assert lowered.as_text().count("stablehlo.optimization_barrier") == barriers


@JAX_ONLY
@pytest.mark.parametrize("platform, barriers", [("cpu", 0), ("cuda", 2 * LAYERS - 1), ("tpu", 0)])
def test_with_the_batch_split_across_devices_a_tpus_updates_are_left_unordered(
    platform, barriers, monkeypatch
):
    """Under data parallelism (said here of the one device) every gradient
    is summed across the devices: XLA:TPU then holds less with its updates
    left to its scheduler, XLA:GPU with them in order (`_jax.InOrder`)."""
    import jax

    from adafactor import _jax

    if barriers == 0 and jax.__version_info__ < (0, 5):
        pytest.skip("JAX < 0.5 lowers both branches of lax.platform_dependent (XLA picks one)")
    monkeypatch.setattr(_placement, "batch_devices", lambda: 4)
    model, data = dense_stack(optimizer_adafactor(), width=64, layers=LAYERS, batch=8)
    lowered = _jax.lowered_train_step(model, data, (platform,))
    assert lowered.as_text().count("stablehlo.optimization_barrier") == barriers


@pytest.mark.parametrize(
    "axes, shape, batch_axis, split",
    [
        (["batch"], (4,), "batch", 4),
        (["batch", "model"], (1, 4), "batch", 1),
        (["batch", "model"], (2, 4), "batch", 2),
        (["model"], (4,), "model", 4),
        (["model"], (4,), None, 1),
    ],
)
def test_the_devices_a_batch_is_split_over_come_from_the_distributions_batch_axis(
    axes, shape, batch_axis, split, monkeypatch
):
    mesh = SimpleNamespace(axis_names=axes, shape=shape)
    distribution = SimpleNamespace(device_mesh=mesh, batch_dim_name=batch_axis)
    monkeypatch.setattr(keras.distribution, "distribution", lambda: distribution)
    assert _placement.batch_devices() == split


def test_without_a_distribution_the_batch_is_on_one_device():
    assert keras.distribution.distribution() is None
    assert _placement.batch_devices() == 1


@JAX_ONLY
def test_a_forced_rms_form_holds_on_every_platform(monkeypatch):
    monkeypatch.setattr(Adafactor, "rms_form", "matvec")
    _, sgd_dots = counts(lambda: keras.optimizers.SGD(0.01), "cuda")
    assert counts(optimizer_adafactor, "cuda") == (0, sgd_dots + LAYERS)


def fake_variable(device):
    """A stand-in with a variable's device, as each backend reports it."""
    if BACKEND == "torch":
        return SimpleNamespace(value=SimpleNamespace(device=SimpleNamespace(type=device)))
    return SimpleNamespace(_value=SimpleNamespace(device=f"/job:localhost/task:0/device:{device}"))


@pytest.mark.skipif(BACKEND == "jax", reason="on JAX the lowering platform decides")
def test_the_variables_device_decides_the_rms_form_on_tensorflow_and_pytorch():
    accelerator, cpu = ("cuda", "cpu") if BACKEND == "torch" else ("GPU:0", "CPU:0")
    assert _placement.rms_form(fake_variable(accelerator), "auto") == "fused"
    assert _placement.rms_form(fake_variable(cpu), "auto") == "matvec"
    # A real variable of this CPU machine, also as a traced graph sees it.
    variable = keras.Variable(np.zeros((3, 2), "float32"))
    assert _placement.rms_form(variable, "auto") == "matvec"
    if BACKEND == "tensorflow":
        import tensorflow as tf

        # Keras's TensorFlow optimizer hands update_step the tf.Variable.
        assert _placement.rms_form(SimpleNamespace(device="/device:GPU:0"), "auto") == "fused"
        assert _placement.rms_form(variable.value, "auto") == "matvec"
        forms = []
        tf.function(lambda: forms.append(_placement.rms_form(variable, "auto")))()
        assert forms == ["matvec"]
