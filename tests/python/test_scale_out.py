"""Scale-out on Keras's own engines, on the CPU: each run in its own process
(the device count is fixed when the backend starts)."""

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent / "scale_out"


def script_env():
    return dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(
            [str(HERE)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        ),
    )


def result_of(stdout):
    line = [out for out in stdout.splitlines() if out.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT ") :])


def run_script(name, *args, timeout=600):
    env = script_env()
    result = subprocess.run(
        [sys.executable, str(HERE / name), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result_of(result.stdout)


def assert_trains(losses):
    assert all(math.isfinite(loss) for loss in losses) and losses[-1] < losses[0]


def test_jax_model_parallel_with_the_batch_on_the_model_axis_finishes():
    """Collectives in conditionals deadlocked four CPU devices (`_jax.py`'s
    one-operation step is off for variables cut across devices); a hang
    ends at the timeout, which kills the child, and fails."""
    pytest.importorskip("jax", reason="the jax backend is optional")
    result = run_script("jax_batch_on_model_axis.py", timeout=240)
    assert_trains(result["losses"])


@pytest.mark.parametrize(
    "backend,script",
    [
        ("tensorflow", ("tf_mirrored.py",)),  # MirroredStrategy
        ("jax", ("jax_distributed.py", "data")),  # DataParallel
    ],
)
def test_data_parallel_on_two_cpu_devices_matches_one_device(backend, script):
    pytest.importorskip(backend, reason=f"the {backend} backend is optional")
    result = run_script(*script)
    assert result.get("replicas", result.get("devices")) == 2
    if backend == "jax":  # the distribution was used, not only listed
        assert set(result["weight_devices"]) == set(result["state_devices"]) == {2}
        assert result["batch_axes"] == ["batch", None]
        assert result["batch_shards"] == 2
    assert result["difference"] <= 1e-6
    assert_trains(result["losses"])


def test_jax_model_parallel_holds_no_full_size_state_on_any_device():
    pytest.importorskip("jax", reason="the JAX backend is optional")
    result = run_script("jax_distributed.py", "model")
    assert result["devices"] == 2
    # The kernels are sharded: each device holds half of each.
    assert result["kernel_shard_sizes"] == [s // 2 for s in result["kernel_sizes"]]
    # The optimizer state on each device is vectors only (the factors and the
    # bias moments), a fraction of even the kernel shards it serves.
    assert result["largest_state_rank"] == 1
    assert result["state_per_device"] < sum(result["kernel_shard_sizes"]) / 4
    assert result["difference"] <= 1e-6
    assert_trains(result["losses"])


@pytest.mark.parametrize("mode", ["data", "model"])
def test_jax_replicas_round_bfloat16_weights_alike(mode):
    """Every device holding a copy of a bfloat16 weight (a replica under
    DataParallel; a shard's two copies under ModelParallel on 2 x 2) holds
    the same bits after training with stochastic rounding: the noise comes
    from the seed, the step and the positions, never from the device."""
    pytest.importorskip("jax", reason="the JAX backend is optional")
    result = run_script("jax_rounding_replicas.py", mode)
    assert result["devices"] == 4 and result["dtypes"] == ["bfloat16"]
    assert all(result["agree"])
    assert all(copies == 4 for copies in result["copies"])
    if mode == "model":  # the kernels cut in two, each part on two devices
        assert 2 in result["parts"]
    else:
        assert set(result["parts"]) == {1}
    assert_trains(result["losses"])


# The options that keep full-size state: a momentum, an unfactored moment.
FULL_SIZE_OPTIONS = {
    "beta_1": {"beta_1": 0.9},
    "factored=False": {"factored": False, "beta_1": 0.5},
}


@pytest.mark.parametrize("options", FULL_SIZE_OPTIONS.values(), ids=FULL_SIZE_OPTIONS.keys())
def test_jax_model_parallel_shards_every_state_like_its_variable(options, tmp_path):
    """Four devices, kernels of (64, 1024) and (1024, 64) sharded on their
    1024 axis: every full-size state is sharded as its variable is, a factor
    is sharded where its kept axis is, names follow the variable's path."""
    pytest.importorskip("jax", reason="the JAX backend is optional")
    result = run_script("jax_model_parallel.py", json.dumps(options), str(tmp_path))
    assert result["devices"] == 4
    model = next(iter(result["variables"])).split("/")[0]
    shards = {
        path.removeprefix(f"{model}/").replace("/", "_"): shard
        for path, shard in result["variables"].items()
    }
    assert shards["d1_kernel"] == [64, 256] and shards["d2_kernel"] == [256, 64]
    factored = options.get("factored", True)
    expected = {}
    for variable, shard in shards.items():
        if "kernel" in variable and factored:
            expected[f"{variable}_row"] = shard[:-1]
            expected[f"{variable}_col"] = shard[:-2] + shard[-1:]
        else:
            expected[f"{variable}_second"] = shard
        expected[f"{variable}_momentum"] = shard
    state = {name.removeprefix(f"{model}_"): value for name, value in result["state"].items()}
    assert {name: shard for name, (_, shard) in state.items()} == expected
    # The shards are each device's share of the state, not copies of it.
    assert state["d1_kernel_momentum"][0] == [64, 1024]
    # Training equals one device to a few float32 units (sums taken in
    # another order across the shards; 2.1e-6 with factored=False on an
    # AVX-512 host, 2026-12-07, before this release's changes too); the
    # state saves and loads sharded.
    assert result["difference"] <= 4e-6
    assert result["state_difference"] <= 4e-6
    assert_trains(result["losses"])
    assert result["loaded_state_difference"] == 0
    # memory_report() predicted what each device holds, from the layouts.
    assert result["per_device_predicted"] == result["per_device_held"]
    assert result["loaded_state_shards"] == [shard for _, shard in result["state"].values()]


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_processes(name, *args, processes=2, timeout=300, folder):
    """`processes` copies of a script on localhost, each told its id, the
    count and a free port; all ended, whatever happens. Output goes to files:
    a pipe left unread would block its writer, and the others would then
    wait for it in their collectives."""
    port = str(free_port())
    logs = [(folder / f"{name}.{i}.out", folder / f"{name}.{i}.err") for i in range(processes)]
    children = []
    try:
        for i, (out, err) in enumerate(logs):
            with out.open("w") as stdout, err.open("w") as stderr:
                children.append(
                    subprocess.Popen(
                        [sys.executable, str(HERE / name), *args, str(i), str(processes), port],
                        env=script_env(),
                        stdout=stdout,
                        stderr=stderr,
                    )
                )
        for child in children:
            child.wait(timeout=timeout)
    finally:
        for child in children:
            child.kill()
            child.wait()
    for child, (_, err) in zip(children, logs, strict=True):
        assert child.returncode == 0, err.read_text()[-3000:]
    return [result_of(out.read_text()) for out, _ in logs]


def largest_difference(a, b):
    return max(
        float(np.max(np.abs(np.asarray(u) - np.asarray(v)))) for u, v in zip(a, b, strict=True)
    )


@pytest.mark.parametrize("mode", ["data", "model"])
def test_jax_two_processes_equal_one_process(mode, tmp_path):
    """2 processes x 2 CPU devices (JAX's CPU collectives on localhost), each
    feeding its slice of every global batch, against 1 process x 4 devices:
    the same losses, weights and optimizer state (with beta_1's momentum)."""
    pytest.importorskip("jax", reason="the JAX backend is optional")
    one = run_processes("jax_processes.py", mode, processes=1, folder=tmp_path)[0]
    two = run_processes("jax_processes.py", mode, processes=2, folder=tmp_path)
    assert [r["local_devices"] for r in two] == [2, 2]
    assert one["global_devices"] == two[0]["global_devices"] == 4
    for result in two:
        np.testing.assert_allclose(result["losses"], one["losses"], rtol=1e-6)
        assert largest_difference(result["weights"], one["weights"]) <= 1e-6
        assert largest_difference(result["state"], one["state"]) <= 1e-6
        assert result["state_shards"] == one["state_shards"]
    assert_trains(one["losses"])
    if mode == "model":  # the (32, 1024) kernel's momentum: half on each device
        assert [32, 512] in one["state_shards"]


def test_tf_multi_worker_mirrored_strategy_as_keras_adam_does(tmp_path):
    """Two localhost workers (TF_CONFIG). Keras 3.15 itself cannot train this
    way (its Adam fails in fit() with "Attempt to convert a value
    (PerReplica...)", Keras issue 20585): this optimizer fails the same way,
    no worse. Where Keras's Adam trains, this optimizer must train too, the
    same on both workers."""
    pytest.importorskip("tensorflow", reason="the TensorFlow backend is optional")
    adam = run_processes("tf_multiworker.py", "adam", folder=tmp_path)
    ours = run_processes("tf_multiworker.py", "adafactor", folder=tmp_path)
    if "error" in adam[0]:
        assert "PerReplica" in adam[0]["error"]
        assert [r["error"] for r in adam + ours] == [adam[0]["error"]] * 4
    else:
        assert all(r["workers"] == 2 for r in ours)
        assert largest_difference(ours[0]["weights"], ours[1]["weights"]) == 0
        assert_trains(ours[0]["losses"])
