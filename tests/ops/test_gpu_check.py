"""ops/bench/gpu-check.sh and gpu_check.py: the prepared GPU check, exercised on the CPU.

One real run of the shell script (``--no-setup --device cpu --quick``, the shipped model,
the real front ends) checks the JSON's structure, that every figure is positive and finite,
and that the capacity estimate follows from the measured rows by the stated formula. The
budget, timing and capacity logic are also checked on their own with made-up inputs.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "ops" / "bench"))

import gpu_check  # noqa: E402  (ops/bench/gpu_check.py)


def _positive_finite(x: Any) -> bool:
    return isinstance(x, int | float) and math.isfinite(x) and x > 0


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str, float]:
    out = tmp_path_factory.mktemp("gpu-check-out")
    env = {**os.environ, "OUT": str(out)}  # no --json: the default path is $OUT/gpu-check.json
    t0 = time.monotonic()
    proc = subprocess.run(
        [
            "bash",
            str(ROOT / "ops" / "bench" / "gpu-check.sh"),
            "--no-setup",
            "--device",
            "cpu",
            "--quick",
        ],
        cwd=out,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    wall = time.monotonic() - t0
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads((out / "gpu-check.json").read_text())
    assert not (out / "gpu-check.json.tmp").exists()
    return doc, proc.stdout, wall


@pytest.mark.slow
def test_quick_cpu_run_structure(quick_run: tuple[dict[str, Any], str, float]) -> None:
    doc, stdout, wall = quick_run
    assert doc["schema"] == gpu_check.SCHEMA
    assert doc["complete"] is True
    assert doc["quick"] is True
    assert doc["errors"] == []
    assert doc["env"]["device"] == "cpu"
    assert doc["env"]["torch"] == torch.__version__
    assert _positive_finite(doc["env"]["peak_rss_mb"])
    assert doc["model"]["frames"] == 43
    assert doc["model"]["in_bins"] == 12
    assert doc["model"]["encoder_precision"] == "fp32"
    # The budget held: sections stopped in time (30 s quick budget, a little slack for the
    # last call), and the whole run, start-up included, stayed near the ~60 s target.
    assert 0 < doc["elapsed_s"] <= doc["budget_s"] + 10
    assert wall < 120, f"quick CPU run took {wall:.0f} s"

    enc = doc["encoder"]
    device_rows = [r for r in enc if r["path"] == "device"]
    assert {r["precision"] for r in device_rows} == {"fp32", "bf16", "fp16"}
    assert {r["batch"] for r in device_rows} >= {64}
    assert all(r["batch"] in (64, 256) for r in enc)
    monitor_rows = [r for r in enc if r["path"] == "encoder"]
    assert monitor_rows and all(r["precision"] == "fp32" for r in monitor_rows)
    for r in enc:
        assert _positive_finite(r["chunks_per_s"]), r
        assert _positive_finite(r["median_call_s"]) and _positive_finite(r["warmup_s"])
        assert r["status"] in ("ok", "short", "warmup-only")
        # chunks/s is the batch over the median call, not some other figure.
        assert r["chunks_per_s"] == pytest.approx(r["batch"] / r["median_call_s"])

    acc = {r["precision"]: r for r in doc["accuracy"]}
    skipped = " | ".join(r["what"] for r in doc["skipped"])
    # Every case is measured or, on a machine too loaded for the budget, said to be skipped.
    for name in ("fp32", "bf16", "fp16", "encoder (fp32)"):
        assert name in acc or f"accuracy {name}" in skipped, (name, skipped)
    for r in acc.values():
        assert 0 < r["cos_min"] <= r["cos_p01"] <= r["cos_mean"] <= 1 + 1e-6
        assert r["chunks"] == gpu_check.QUICK.cos_chunks
    # bf16 (measured first) keeps 8 mantissa bits: close to fp32 but not identical.
    assert 0.99 < acc["bf16"]["cos_mean"] < 1.0
    # fp32 on the CPU against CPU fp32 is the same computation up to batching round-off.
    for name in ("fp32", "encoder (fp32)"):
        if name in acc:
            assert acc[name]["cos_min"] > 0.9999 and acc[name]["usable"]

    fe = doc["frontend"]
    measured = {(r["name"], r["path"]) for r in fe}
    assert ("hpcp", "features_batch") in measured  # F of the capacity estimate
    assert measured <= {
        ("hpcp", "features_batch"),
        ("cqt", "features_batch"),
        ("hpcp", "push_many"),
    }
    assert ("cqt", "features_batch") in measured or "frontend cqt" in skipped
    assert ("hpcp", "push_many") in measured or "push_many" in skipped
    for r in fe:
        assert _positive_finite(r["x_realtime"]), r
        assert r["x_realtime"] == pytest.approx(r["batch"] * r["seconds_each"] / r["median_call_s"])
    shapes = {r["name"]: r["shape"] for r in fe if r["path"] == "features_batch"}
    assert shapes["hpcp"][1:] == [12, 21]  # 10 s at 2.15 frames/s
    assert shapes.get("cqt", [1, 84, 21])[1:] == [84, 21]

    cap = doc["capacity"]
    assert cap["chunks_per_stream_s"] == pytest.approx(0.1)
    assert cap["monitor_batch"] == 64
    # The estimate follows from the rows: E at the monitor's batch, F = batched HPCP.
    e = next(r for r in monitor_rows if r["batch"] == 64)["chunks_per_s"]
    f = max(
        (r for r in fe if r["name"] == "hpcp" and r["path"] == "features_batch"),
        key=lambda r: r["batch"],
    )["x_realtime"]
    assert cap["encoder_chunks_per_s"] == pytest.approx(e)
    assert cap["streams"] == pytest.approx(min(e / 0.1, f))
    assert cap["binding"] == ("encoder" if e / 0.1 <= f else "frontend")
    assert _positive_finite(cap["best"]["streams"])
    if ("hpcp", "push_many") in measured:
        assert _positive_finite(cap["host_frontend"]["streams"])
    assert cap["best"]["encoder_chunks_per_s"] >= max(
        r["chunks_per_s"] for r in device_rows if r["precision"] == "fp32"
    )

    # One table on stdout, with every section and the formula.
    assert stdout.count("section  ") == 1
    for word in ("device path", "Encoder.embed_chunks", "features_batch", "capacity"):
        assert word in stdout
    assert "streams = min(E / r, F)" in stdout


@pytest.mark.slow
def test_sigterm_keeps_what_was_measured(tmp_path: Path) -> None:
    """A run stopped by SIGTERM (the shell's timeout) writes the figures it has."""
    path = tmp_path / "cut.json"
    script = str(ROOT / "ops" / "bench" / "gpu_check.py")
    proc = subprocess.Popen(
        [sys.executable, script, "--device", "cpu", "--quick", "--json", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
                if json.loads(path.read_text())["encoder"]:
                    break
            time.sleep(0.2)
        assert proc.poll() is None, "the run ended before it could be stopped"
        proc.send_signal(signal.SIGTERM)
        stdout, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM
    doc = json.loads(path.read_text())
    assert doc["complete"] is False and doc["finished_utc"]
    assert doc["encoder"] and all(_positive_finite(r["chunks_per_s"]) for r in doc["encoder"])
    assert not doc["frontend"]  # it was stopped long before the front-end section
    assert "section  " in stdout  # the table of what it has is still printed


def test_cuda_requested_without_cuda_is_refused(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA is present here")
    assert gpu_check.main(["--device", "cuda", "--json", str(tmp_path / "x.json")]) == 2
    assert not (tmp_path / "x.json").exists()


def test_default_json_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OUT", str(tmp_path))
    assert gpu_check.default_json_path() == tmp_path / "gpu-check.json"
    monkeypatch.delenv("OUT")
    assert gpu_check.default_json_path() == Path("gpu-check.json")


def test_budget_is_cut_to_the_hard_limit() -> None:
    args = gpu_check.parse_args(["--quick"])
    assert gpu_check.effective_budget(args, now=1000.0) == 30.0
    args = gpu_check.parse_args(["--started-at", "1000", "--max-total-s", "480"])
    assert gpu_check.effective_budget(args, now=1000.0) == 420.0  # the default fits
    # 300 s of set-up leave 480 - 300 - 15 s.
    assert gpu_check.effective_budget(args, now=1300.0) == pytest.approx(165.0)
    assert gpu_check.effective_budget(args, now=2000.0) == 0.0


class FakeClock:
    """A clock that only moves when a fake call runs."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_time_calls_stops_within_the_case_time() -> None:
    clock = FakeClock()
    calls: list[float] = []

    def call(cost: float = 1.0) -> None:
        calls.append(cost)
        clock.t += cost

    t = gpu_check.time_calls(
        call, lambda: None, case_s=4.5, min_case_s=100.0, max_repeats=50, clock=clock
    )
    # Warm-up (1 s) + 3 timed calls fit in 4.5 s; a 4th would end at 5 s.
    assert t.repeats == 3 and len(calls) == 4
    assert t.median_s == pytest.approx(1.0) and t.warmup_s == pytest.approx(1.0)
    assert t.status == "ok"
    assert clock.t <= 4.5


def test_time_calls_warmup_only_and_max_repeats() -> None:
    clock = FakeClock()

    def slow() -> None:
        clock.t += 10.0

    t = gpu_check.time_calls(
        slow, lambda: None, case_s=5.0, min_case_s=1.0, max_repeats=5, clock=clock
    )
    assert (t.repeats, t.status, t.median_s) == (0, "warmup-only", 10.0)

    clock.t = 0.0

    def fast() -> None:
        clock.t += 0.001

    t = gpu_check.time_calls(
        fast, lambda: None, case_s=100.0, min_case_s=100.0, max_repeats=7, clock=clock
    )
    assert t.repeats == 7


def test_budget_shares() -> None:
    clock = FakeClock()
    b = gpu_check.Budget(100.0, clock=clock)
    ends = [b.until(k) for k in gpu_check.SCHEDULE]
    assert ends == sorted(ends) and ends[-1] == pytest.approx(100.0)  # in run order, to the end
    assert b.left_in("encoder") == pytest.approx(100.0 * gpu_check.SCHEDULE["encoder"])
    clock.t = 60.0
    assert b.left() == pytest.approx(40.0) and b.elapsed() == pytest.approx(60.0)
    # A section that ran over leaves the next one only its own end, never more.
    assert b.left_in("encoder") == 0.0
    assert b.left_in("frontend") == pytest.approx(100.0 * gpu_check.SCHEDULE["frontend"] - 60.0)
    clock.t = 200.0
    assert b.left() == 0.0 and b.left_in("host_frontend") == 0.0


def _enc_row(path: str, precision: str, batch: int, cps: float) -> dict[str, Any]:
    return {"path": path, "precision": precision, "batch": batch, "chunks_per_s": cps}


def _fe_row(path: str, batch: int, xrt: float, name: str = "hpcp") -> dict[str, Any]:
    return {
        "name": name,
        "path": path,
        "device": "cuda:0",
        "batch": batch,
        "x_realtime": xrt,
        "torch_threads": 1,
    }


def test_capacity_formula_and_binding() -> None:
    enc = [
        _enc_row("device", "fp32", 64, 20_000.0),
        _enc_row("device", "fp16", 4096, 900_000.0),  # fastest, but inaccurate below
        _enc_row("device", "bf16", 4096, 500_000.0),
        _enc_row("encoder", "bf16", 256, 40_000.0),
        _enc_row("encoder", "bf16", 64, 10_000.0),
    ]
    acc = [
        {"precision": "fp32", "usable": True},
        {"precision": "bf16", "usable": True},
        {"precision": "fp16", "usable": False},
    ]
    fe = [
        _fe_row("features_batch", 1, 900.0),
        _fe_row("features_batch", 64, 30_000.0),
        _fe_row("features_batch", 64, 99.0, name="cqt"),  # not the HPCP model's front end
        _fe_row("push_many", 64, 700.0),
    ]
    cap = gpu_check.capacity(enc, acc, fe, chunks_per_stream_s=0.1, monitor_batch=64)
    # E = the Encoder path at batch 64 (10,000 chunks/s) -> 100,000 streams; F = 30,000.
    assert cap["encoder_chunks_per_s"] == 10_000.0
    assert cap["streams_encoder_bound"] == pytest.approx(100_000.0)
    assert cap["frontend_x_realtime"] == 30_000.0
    assert cap["streams"] == pytest.approx(30_000.0) and cap["binding"] == "frontend"
    # Best usable precision is bf16 (fp16 failed the accuracy check).
    assert cap["best"]["encoder_case"] == "device path bf16 batch 4096"
    assert cap["best"]["streams"] == pytest.approx(30_000.0)
    # With today's host-CPU front end the bound is 700 streams.
    assert cap["host_frontend"]["streams"] == pytest.approx(700.0)
    assert cap["host_frontend"]["binding"] == "frontend"

    # A slow encoder binds; the nearest measured batch stands in for a missing 64.
    slow = [_enc_row("encoder", "fp32", 256, 30.0), _enc_row("encoder", "fp32", 1024, 40.0)]
    cap = gpu_check.capacity(slow, [], fe[:2], chunks_per_stream_s=0.1, monitor_batch=64)
    assert cap["encoder_case"] == "Encoder.embed_chunks fp32 batch 256"
    assert cap["streams"] == pytest.approx(300.0) and cap["binding"] == "encoder"
    assert "best" not in cap and "host_frontend" not in cap
    assert "streams = min(E / r, F)" in cap["formula"]


def test_hpcp_chunks_are_chroma_windows() -> None:
    from streamcover.audio.frontend import make_frontend
    from streamcover.config import FrontEndSettings

    fe = make_frontend(FrontEndSettings(name="hpcp"))
    chunks = gpu_check.hpcp_chunks(fe, 22.0, 300, 12)
    assert chunks.shape == (300, 12, 43) and chunks.dtype == np.float32
    assert np.isfinite(chunks).all() and chunks.min() >= 0 and chunks.max() <= 1 + 1e-6
    # 22 s give 47 frames -> 5 windows; the next 5 are the same windows a semitone up.
    assert np.array_equal(chunks[5], np.roll(chunks[0], 1, axis=0))
    assert not np.array_equal(chunks[0], chunks[1])
    # Chord music, not noise: each frame's chroma has a clear peak.
    assert float(np.median(chunks.max(axis=1))) == pytest.approx(1.0)
    assert float(np.median(chunks.mean(axis=1))) < 0.6
    assert np.array_equal(gpu_check.synth_music(22_050, 1.0), gpu_check.synth_music(22_050, 1.0))


def test_table_lists_every_row() -> None:
    doc: dict[str, Any] = {
        "encoder": [
            {**_enc_row("device", "bf16", 64, 1234.4)},
            {**_enc_row("encoder", "bf16", 64, 999.0)},
        ],
        "accuracy": [
            {"precision": "bf16", "cos_mean": 0.99971, "cos_min": 0.9991},
            {"precision": "encoder (bf16)", "cos_mean": 0.99972, "cos_min": 0.9992},
        ],
        "frontend": [
            {**_fe_row("features_batch", 16, 5000.0), "seconds_each": 60.0, "cpu_corr": 0.99999}
        ],
        "capacity": {
            "streams": 5000.0,
            "streams_encoder_bound": 9990.0,
            "frontend_x_realtime": 5000.0,
            "encoder_case": "Encoder.embed_chunks bf16 batch 64",
            "binding": "frontend",
        },
    }
    text = gpu_check.table(doc)
    lines = text.splitlines()
    assert len(lines) == 2 + 4
    assert "1234" in lines[2] and "cos 0.99971" in lines[2]
    assert "Encoder.embed_chunks" in lines[3] and "cos 0.99972" in lines[3]
    assert "hpcp features_batch cuda:0" in lines[4] and "r 0.99999 vs cpu" in lines[4]
    assert "5000" in lines[5] and "live streams" in lines[5]
    assert "E/r 9990, F 5000, bound: frontend" in lines[5]
