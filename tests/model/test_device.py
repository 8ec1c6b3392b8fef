"""Device choice, thread configuration and autocast."""

from __future__ import annotations

import pytest
import torch

from streamcover.device import autocast, configure_threads, physical_cores, select_device


def test_auto_picks_cuda_only_when_present() -> None:
    want = "cuda" if torch.cuda.is_available() else "cpu"
    assert select_device("auto").type == want
    assert select_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_gpu_is_a_clear_error() -> None:
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        select_device("cuda")


def test_unknown_device_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        select_device("tpu")


def test_threads_default_to_physical_cores() -> None:
    before = torch.get_num_threads()
    try:
        n = configure_threads(0)
        assert n == physical_cores() >= 1
        assert torch.get_num_threads() == n
        assert configure_threads(1) == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ValueError):
        configure_threads(-1)


def test_autocast_is_fp32_on_cpu_unless_bf16_asked() -> None:
    a = torch.rand(4, 4)
    with autocast(torch.device("cpu")):
        assert (a @ a).dtype == torch.float32
    with autocast(torch.device("cpu"), cpu_bf16=True):
        assert (a @ a).dtype == torch.bfloat16


def test_search_threads_cap_faiss_and_every_blas() -> None:
    import faiss
    from threadpoolctl import threadpool_info

    from streamcover.device import configure_search_threads

    torch_before = torch.get_num_threads()
    try:
        assert configure_search_threads(1) == 1
        assert faiss.omp_get_max_threads() == 1
        blas = [p for p in threadpool_info() if p["user_api"] == "blas"]
        assert blas and all(p["num_threads"] == 1 for p in blas)
        assert torch.get_num_threads() == torch_before  # torch's pool is not ours to set
        assert configure_search_threads(0) == physical_cores()
        assert faiss.omp_get_max_threads() == physical_cores()
    finally:
        configure_search_threads(0)
    with pytest.raises(ValueError, match=">= 0"):
        configure_search_threads(-1)
