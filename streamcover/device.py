"""Where torch work runs: device choice, CPU thread count and mixed precision.

One place decides these so the monitor, catalog builds, training and benchmarks behave
the same: CUDA whenever present, otherwise the CPU with one intra-op thread per physical
core (hyper-threads and oversubscription only slow convolutions down).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import torch

# OMP_WAIT_POLICY=PASSIVE (spinning OpenMP threads starve a shared 2-core machine) is set
# in streamcover/__init__.py, which runs before this module and before torch loads.


def select_device(pref: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when present, else CPU; ``"cpu"``, ``"cuda"``, ``"cuda:N"`` as asked.

    Asking for CUDA on a machine without it is an error rather than a silent CPU run.
    """
    if isinstance(pref, torch.device):
        pref = str(pref)
    pref = pref.strip().lower()
    if pref == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if pref == "cpu":
        return torch.device("cpu")
    if pref == "cuda" or pref.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {pref!r} requested but CUDA is not available here")
        dev = torch.device(pref)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise RuntimeError(
                f"device {pref!r} requested but only {torch.cuda.device_count()} GPU(s) exist"
            )
        return dev
    raise ValueError(f"unknown device {pref!r}; expected 'auto', 'cpu', 'cuda' or 'cuda:N'")


def physical_cores() -> int:
    """Physical cores available to this process (affinity-aware, hyper-threads counted once)."""
    try:
        allowed = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return max(1, (os.cpu_count() or 2) // 2)
    cores: set[tuple[str, str]] = set()
    for cpu in allowed:
        topo = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            core = (topo / "core_id").read_text().strip()
            pkg = (topo / "physical_package_id").read_text().strip()
        except OSError:
            return len(allowed)
        cores.add((pkg, core))
    return max(1, len(cores))


_configured: int | None = None


def configure_threads(n: int = 0) -> int:
    """Set torch's intra-op threads to ``n`` (0 = physical cores); return the count used.

    Inter-op threads are set to 1 once, before any parallel work, because the encoder's
    graph is a chain: a second pool would only compete for the same cores.
    """
    global _configured
    if n < 0:
        raise ValueError(f"thread count must be >= 0, got {n}")
    threads = n or physical_cores()
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    if _configured is None:
        with contextlib.suppress(RuntimeError):  # too late once the pool has started
            torch.set_num_interop_threads(1)
    _configured = threads
    return threads


def configure_search_threads(n: int = 1) -> int:
    """Limit the BLAS libraries (numpy's and faiss's) and faiss's OpenMP pool to ``n``
    threads (0 = physical cores) for this process; return the count used.

    Catalog queries are small: a 60 s query is five HNSW searches and one matrix of a
    few thousand rows. Split over two threads, each part waits for the other to wake,
    and on a shared VM that wait is what sets the tail: at 1M chunks, per-pass p99 was
    10.9 / 15.0 / 11.0 ms with two BLAS threads and 10.7 / 9.0 / 9.2 with one
    (docs/catalog.md). Concurrency belongs to
    the streams and processes, not to one query. Torch's own pool is
    :func:`configure_threads`'s business and is left alone.
    """
    if n < 0:
        raise ValueError(f"thread count must be >= 0, got {n}")
    threads = n or physical_cores()
    import faiss
    from threadpoolctl import threadpool_limits

    faiss.omp_set_num_threads(threads)
    # Process-wide until changed again (the limiter restores nothing unless asked to).
    threadpool_limits(limits=threads, user_api="blas")
    return threads


def gpu_autocast_dtype(device: torch.device) -> torch.dtype:
    """bf16 where the GPU supports it (no overflow), else fp16."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


@contextlib.contextmanager
def autocast(device: torch.device, enabled: bool = True, cpu_bf16: bool = False) -> Iterator[None]:
    """Mixed precision for inference: fp16/bf16 autocast on CUDA, fp32 on CPU by default.

    CPU bf16 is opt-in (``cpu_bf16``) since it is only faster where the CPU has native
    bf16 matmul (see ``ops/bench/bench_encoder.py``).
    """
    if enabled and device.type == "cuda":
        with torch.autocast("cuda", dtype=gpu_autocast_dtype(device)):
            yield
    elif enabled and cpu_bf16 and device.type == "cpu":
        with torch.autocast("cpu", dtype=torch.bfloat16):
            yield
    else:
        yield


M = TypeVar("M", bound="torch.nn.Module")


def to_channels_last(module: M, device: torch.device) -> M:
    """``module`` on ``device`` with its 4-D weights channels-last, the layout the encoder's
    convolutions run fastest in on this CPU (about 1.3x per training step, docs/training.md) and
    on GPUs with tensor cores. Feed it ``x.contiguous(memory_format=torch.channels_last)``;
    state dicts are saved contiguous either way (``model/checkpoint.py``)."""
    return module.to(device).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
