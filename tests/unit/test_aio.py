from __future__ import annotations

import asyncio
from pathlib import Path

import evstate.aio
from evstate import UpdateOp


def test_async_facade_round_trip(tmp_path: Path) -> None:
    async def main() -> None:
        async with await evstate.aio.open(tmp_path) as store:
            assert (await store.set("s", "k", {"n": 1}))["old_value"] is None
            await asyncio.gather(
                *(store.update("s", "k", [UpdateOp.increment("n", 1)]) for _ in range(50))
            )
            assert await store.get("s", "k") == {"n": 51}
            assert await store.list("s") == {"k": {"n": 51}}
            assert await store.list_groups() == {"groups": ["s"]}
            assert await store.call("state::get", {"scope": "s", "key": "k"}) == {"n": 51}
            assert await store.delete("s", "k") == {"n": 51}
            await store.flush()

    asyncio.run(main())


def test_event_loop_keeps_running_during_durable_writes(tmp_path: Path) -> None:
    async def main() -> int:
        ticks = 0
        stop = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not stop.is_set():
                ticks += 1
                await asyncio.sleep(0)

        async with await evstate.aio.open(tmp_path, fsync="always") as store:
            task = asyncio.create_task(ticker())
            for i in range(30):
                await store.set("s", str(i), i)
            stop.set()
            await task
        return ticks

    assert asyncio.run(main()) > 30


def test_async_store_covers_history_at_triggers_and_upkeep(tmp_path: Path) -> None:
    async def main() -> None:
        astore = await evstate.aio.open(tmp_path / "store")
        async with astore:
            seen: list[int] = []
            astore.trigger("t", lambda e: seen.append(e.revision))
            await astore.set("s", "k", 1)
            await astore.set("s", "k", 2, ttl_ms=60_000)
            assert [e.new_value for e in await astore.history("s", "k")] == [1, 2]
            assert len(await astore.events()) == 2
            assert (await astore.at(1)).get("s", "k") == 1
            assert await astore.ttl("s", "k") is not None
            assert await astore.snapshot() == 2
            assert (await astore.stats())["revision"] == 2
            assert await astore.verify() == []
            assert await astore.expire() == 0
            await astore.wait_for_triggers(timeout=10)
            assert seen == [1, 2]
            assert (await astore.trigger_status())["t"]["cursor"] == 2
            restored = await astore.restore_to(tmp_path / "copy", 1)
            assert restored.endswith("copy")

    asyncio.run(main())
