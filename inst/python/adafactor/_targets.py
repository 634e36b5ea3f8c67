"""The accelerators a training step can be compiled for here, by the names
people use ("v5e 2x2", "H100 x 4"), with each device's memory. Data only
(no JAX): `_arguments` shows what `compiled_for` accepts from it, and
`_compile` compiles for it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

# Each TPU generation's memory (HBM) a chip, as JAX reports it (Google Cloud's
# TPU pages), and the dimensions of its slices' topology ("2x2", "2x2x1").
# v4 is left out: libtpu's compile-only v4 devices are TensorCores, two a
# chip, where a v4 training job sees one device a chip (megacore).
TPU_MEMORY = {"v5e": 16 << 30, "v5p": 95 << 30, "v6e": 32 << 30}
TPU_DIMENSIONS = {"v5e": 2, "v5p": 3, "v6e": 2}

# What XLA:GPU needs of a card to compile for it: a
# stream_executor.GpuTargetConfigProto, written from these numbers (openxla/xla
# xla/backends/gpu/target_config/specs/ has the full descriptions).
# `device_memory_size` is the memory the card reports.
GPU_CARDS = {
    "H100": dict(
        description="NVIDIA H100 80GB HBM3",
        capability=(9, 0),
        cores=132,
        fpus_per_core=128,
        shared_memory_per_core=233472,
        shared_memory_per_block_optin=232448,
        threads_per_core_limit=2048,
        memory_bandwidth=3352320000000,
        l2_cache_size=52428800,
        clock_rate_ghz=1.98,
        device_memory_size=84942979072,
    ),
    # xla/backends/gpu/target_config/specs/a100_sxm_80.txtpb
    "A100": dict(
        description="NVIDIA A100-SXM4-80GB",
        capability=(8, 0),
        cores=108,
        fpus_per_core=64,
        shared_memory_per_core=167936,
        shared_memory_per_block_optin=166912,
        threads_per_core_limit=2048,
        memory_bandwidth=2039040000000,
        l2_cache_size=41943040,
        clock_rate_ghz=1.41,
        device_memory_size=85100068864,
    ),
    # L4 and T4 have no spec in XLA: CUDA's deviceQuery on each card, the
    # shared memory of their compute capability (CUDA Programming Guide).
    "L4": dict(
        description="NVIDIA L4",
        capability=(8, 9),
        cores=58,
        fpus_per_core=128,
        shared_memory_per_core=102400,
        shared_memory_per_block_optin=101376,
        threads_per_core_limit=1536,
        memory_bandwidth=300048000000,
        l2_cache_size=50331648,
        clock_rate_ghz=2.04,
        device_memory_size=23612293120,
    ),
    "T4": dict(
        description="Tesla T4",
        capability=(7, 5),
        cores=40,
        fpus_per_core=64,
        shared_memory_per_core=65536,
        shared_memory_per_block_optin=65536,
        threads_per_core_limit=1024,
        memory_bandwidth=320064000000,
        l2_cache_size=4194304,
        clock_rate_ghz=1.59,
        device_memory_size=15843721216,
    ),
}
GPU_TARGET = """
gpu_device_info {{
  threads_per_block_limit: 1024 threads_per_warp: 32 shared_memory_per_block: 49152
  shared_memory_per_core: {shared_memory_per_core} threads_per_core_limit: {threads_per_core_limit}
  core_count: {cores} fpus_per_core: {fpus_per_core} block_dim_limit_x: 2147483647
  block_dim_limit_y: 65535 block_dim_limit_z: 65535 memory_bandwidth: {memory_bandwidth}
  l2_cache_size: {l2_cache_size} clock_rate_ghz: {clock_rate_ghz}
  device_memory_size: {device_memory_size}
  shared_memory_per_block_optin: {shared_memory_per_block_optin}
  cuda_compute_capability {{ major: {capability[0]} minor: {capability[1]} }}
  registers_per_core_limit: 65536 registers_per_block_limit: 65536
}}
platform_name: "CUDA" dnn_version_info {{ major: 9 minor: 8 }}
runtime_version {{ major: 12 minor: 9 }} device_description_str: "{description}"
"""
GPU_COUNTS = range(1, 9)  # the cards of one host


@dataclass(frozen=True)
class Target:
    """An accelerator to compile for, by the name people use: a TPU slice
    ("v5e 2x2") or GPUs of one host ("H100 x 4")."""

    name: str  # as written back to the user: "v5e 2x2", "H100 x 4"
    platform: str  # "tpu" or "gpu"
    chip: str  # "v5e", "H100"
    shape: str  # the slice's topology ("2x2"), or the count of cards ("4")
    device_count: int
    device_memory_bytes: int


# What `compiled_for` accepts, in words (shown in R and Python alike).
ACCEPTED_TARGETS = (
    f"one or more accelerator names: a TPU slice as '<generation> <topology>' "
    f"(generation {', '.join(TPU_MEMORY)}; e.g. 'v5e 2x2', 'v5p 2x2x1', 'v6e 1x1' for one chip) "
    f"or GPUs as '<card> x <count>' (card {', '.join(GPU_CARDS)}; count "
    f"{GPU_COUNTS[0]} to {GPU_COUNTS[-1]}; e.g. 'H100 x 4', 'L4 x 1')"
)


def target(name) -> Target | None:
    """The `Target` that `name` names, or None."""
    text = " ".join(str(name).split()) if isinstance(name, str) else None
    tpu = text and re.fullmatch(r"(?i)(v\d+[a-z]?)[ :-]((?:\d+x)+\d+)", text)
    if tpu and tpu.group(1).lower() in TPU_MEMORY:
        chip, shape = tpu.group(1).lower(), tpu.group(2).lower()
        count = math.prod(int(d) for d in shape.split("x"))
        if count >= 1 and shape.count("x") == TPU_DIMENSIONS[chip] - 1:
            return Target(f"{chip} {shape}", "tpu", chip, shape, count, TPU_MEMORY[chip])
    gpu = text and re.fullmatch(r"(?i)([a-z]\d+)\s?x\s?(\d+)", text)
    cards = {card.lower(): card for card in GPU_CARDS}
    if gpu and gpu.group(1).lower() in cards and int(gpu.group(2)) in GPU_COUNTS:
        card, count = cards[gpu.group(1).lower()], int(gpu.group(2))
        memory = GPU_CARDS[card]["device_memory_size"]
        return Target(f"{card} x {count}", "gpu", card, str(count), count, memory)
    return None
