"""ScriptBatcher: calls that arrive together run as one batch, and each caller gets its own
answer or its own error. The batch runner here is a plain coroutine, so the test sees the
batches; tests/store/test_conformance.py runs the real thing against redis-server."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from relay.store.base import StoreUnavailable
from relay.store.redis_batch import ScriptBatcher


class Runner:
    """Answers each call with its first argument doubled; remembers each batch."""

    def __init__(self) -> None:
        self.batches: list[list[Any]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail: Exception | None = None

    async def __call__(self, calls: list[list[Any]]) -> list[Any]:
        self.batches.append([args[0] for args in calls])
        await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        return [ValueError("refused") if args[0] < 0 else args[0] * 2 for args in calls]


async def test_calls_queued_while_a_batch_runs_go_together_in_the_next() -> None:
    runner = Runner()
    batcher = ScriptBatcher(runner, max_batch=3)
    runner.gate.clear()
    first = asyncio.create_task(batcher.call([1]))
    await asyncio.sleep(0)
    await asyncio.sleep(0)  # the first batch is out, waiting for its answer
    later = [asyncio.create_task(batcher.call([n])) for n in range(2, 7)]
    await asyncio.sleep(0)
    runner.gate.set()
    assert await first == 2
    assert await asyncio.gather(*later) == [4, 6, 8, 10, 12]
    assert runner.batches == [[1], [2, 3, 4], [5, 6]]


async def test_each_caller_gets_its_own_error() -> None:
    batcher = ScriptBatcher(Runner())
    results = await asyncio.gather(
        batcher.call([1]), batcher.call([-1]), batcher.call([3]), return_exceptions=True
    )
    assert results[0] == 2 and results[2] == 6
    assert isinstance(results[1], ValueError) and str(results[1]) == "refused"


async def test_an_unanswered_batch_fails_every_call_in_it_and_the_next_batch_runs() -> None:
    runner = Runner()
    batcher = ScriptBatcher(runner)
    runner.fail = StoreUnavailable("redis store redis://127.0.0.1:1/0: connection refused")
    results = await asyncio.gather(batcher.call([1]), batcher.call([2]), return_exceptions=True)
    assert [str(r) for r in results] == [
        "redis store redis://127.0.0.1:1/0: connection refused"
    ] * 2
    assert all(isinstance(r, StoreUnavailable) for r in results)
    runner.fail = None
    assert await batcher.call([5]) == 10


async def test_a_caller_that_goes_away_does_not_disturb_the_others() -> None:
    runner = Runner()
    batcher = ScriptBatcher(runner)
    runner.gate.clear()
    leaving = asyncio.create_task(batcher.call([1]))
    staying = asyncio.create_task(batcher.call([2]))
    await asyncio.sleep(0)
    leaving.cancel()
    runner.gate.set()
    assert await staying == 4
    with pytest.raises(asyncio.CancelledError):
        await leaving


async def test_an_unexpected_error_fails_its_batch_only_and_the_queue_goes_on() -> None:
    gate = asyncio.Event()

    async def run(calls: list[list[Any]]) -> list[Any]:
        await gate.wait()
        if calls[0][0] == "poison":  # say, a value redis-py cannot encode
            raise UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed")
        return [args[0] for args in calls]

    batcher = ScriptBatcher(run)
    poisoned = asyncio.create_task(batcher.call(["poison"]))
    await asyncio.sleep(0)
    await asyncio.sleep(0)  # the first batch is out
    queued = asyncio.create_task(batcher.call(["fine"]))
    await asyncio.sleep(0)
    gate.set()
    with pytest.raises(StoreUnavailable, match="redis batch failed: UnicodeEncodeError"):
        await poisoned
    assert await asyncio.wait_for(queued, 1.0) == "fine"
