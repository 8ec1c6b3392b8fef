"""streamcover.monitor.profile: the benchmark's per-stage CPU profile. Off it does nothing;
on, stages are exclusive and the pipeline's events are the same as without it."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from monitor_harness import frames_of
from monitor_world import World

from streamcover.monitor.engine import build_engine
from streamcover.monitor.metrics import Metrics
from streamcover.monitor.pipeline import InRecord, Pipeline
from streamcover.monitor.profile import ENV, StageProfile


def _spin(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_off_by_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(ENV, raising=False)
    prof = Metrics().profile
    assert not prof.enabled
    with prof.stage("x"):
        pass
    prof.batch_start(3, None)
    prof.batch_end(1)
    prof.dump()
    assert prof.stages == {} and not prof.batches


def test_env_switches_it_on(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(ENV, str(tmp_path / "p"))
    assert Metrics().profile.enabled


def test_nested_stages_are_exclusive_and_dumped(tmp_path: Path) -> None:
    prof = StageProfile(tmp_path)
    prof.batch_start(5, time.time() * 1000 - 250)
    with prof.stage("outer"):
        _spin(0.03)
        with prof.stage("inner"):
            _spin(0.05)
        with prof.stage("inner"):
            _spin(0.02)
    prof.batch_end(2)
    outer, inner = prof.stages["outer"], prof.stages["inner"]
    assert inner[2] == 2 and outer[2] == 1
    assert 0.065 <= inner[0] / 1e9 <= 0.2
    assert 0.025 <= outer[0] / 1e9 <= 0.08  # its own time only
    prof.dump()
    d = json.loads(next(tmp_path.glob("stages-*.json")).read_text())
    assert set(d["stages"]) == {"outer", "inner"}
    _t, records, windows, age, wall, cpu, _runq, _oncpu = d["batches"][0]
    assert (records, windows) == (5, 2)
    assert 0.2 <= age <= 5.0
    assert cpu >= 0.09 and wall >= cpu - 0.01
    assert "MainThread" in d["threads"] and d["peak_rss_mib"] > 0


def test_wrap_times_a_method_once(tmp_path: Path) -> None:
    class Searcher:
        def __init__(self) -> None:
            self.verifier = self

        def candidates(self, x: int) -> int:
            _spin(0.01)
            return x + 1

        def verify(self) -> str:
            return "ok"

    s = Searcher()
    first, second = StageProfile(tmp_path), StageProfile(tmp_path)
    first.instrument_searcher(s)
    second.instrument_searcher(s)  # re-instrumenting replaces, never stacks
    assert s.candidates(1) == 2 and s.verify() == "ok"
    assert "stage1" not in first.stages
    assert second.stages["stage1"][2] == 1 and second.stages["stage3"][2] == 1


@pytest.fixture(scope="module")
def engine(world: World) -> Any:
    return build_engine(world.settings)


def test_pipeline_events_unchanged_with_profile(world: World, engine: Any, tmp_path: Path) -> None:
    frames = frames_of(world.settings, "live-1", np.concatenate(
        [world.copy_of("work-0", 41.0), world.copy_of("work-2", 41.0)]), "live")
    recs = [InRecord("audio", 0, i, b"live-1", f, int(time.time() * 1000)) for i, f in enumerate(frames)]
    batches = [recs[i : i + 7] for i in range(0, len(recs), 7)]

    def run(metrics: Metrics, eng: Any) -> list[tuple[str, str, str | None]]:
        p = Pipeline(world.settings, eng, metrics)
        return [(e.event_id, e.kind, e.reference_id) for b in batches for e in p.process(b).events]

    plain = run(Metrics(), engine)
    profiled_engine = copy.copy(engine)
    profiled_engine.searcher = copy.copy(engine.searcher)  # the wrappers stay on the copy
    metrics = Metrics()
    metrics.profile = StageProfile(tmp_path)
    assert run(metrics, profiled_engine) == plain
    assert plain
    stages = metrics.profile.stages
    for name in ("decode", "resample", "hpcp", "encoder", "stage1", "stage2", "decision",
                 "checkpoint", "pipeline_other"):
        assert stages[name][2] > 0, name
    assert len(metrics.profile.batches) == len(batches)
