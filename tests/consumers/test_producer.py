"""The live-capture buffer: bounded in samples, drops made visible, order kept."""

from __future__ import annotations

import asyncio

import numpy as np

from consumers.producer import CaptureBuffer


def test_capture_buffer_drops_beyond_its_bound_and_says_where() -> None:
    async def run() -> list[object]:
        buf = CaptureBuffer(max_samples=10)
        for n in (4, 4, 4, 3, 1):  # 4 + 4 fit; 4 and 3 are dropped (merged); 1 fits again
            buf.put(np.full(n, n, dtype=np.float32))
        assert buf.buffered == 9 and buf.dropped == 7
        got: list[object] = [await buf.get() for _ in range(4)]
        buf.put(np.zeros(10, dtype=np.float32))  # room again once the loop has caught up
        buf.finish()
        got += [await buf.get(), await buf.get()]
        return got

    got = asyncio.run(run())
    kinds = [("drop", g) if isinstance(g, int) else ("end", None) if g is None
             else ("block", len(g)) for g in got]  # type: ignore[arg-type]
    assert kinds == [("block", 4), ("block", 4), ("drop", 7), ("block", 1), ("block", 10),
                     ("end", None)]


def test_capture_buffer_get_waits_for_the_callback() -> None:
    async def run() -> object:
        buf = CaptureBuffer(max_samples=100)
        loop = asyncio.get_running_loop()
        loop.call_later(0.05, buf.put, np.ones(5, dtype=np.float32))
        return await asyncio.wait_for(buf.get(), timeout=5)

    got = asyncio.run(run())
    assert isinstance(got, np.ndarray) and len(got) == 5
