"""The Redis password (SPEC 7) never shows: not in `relay check`, a log line, an error,
/readyz, nor a repr. A real redis-server with requirepass."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from relay.config import load
from relay.store import open_store
from tests.support.fake_discord import FakeDiscord
from tests.support.processes import RelayProcesses, run_cli
from tests.support.redis_server import RedisServer
from tests.support.secrets import watch
from tests.test_several_processes import write_config

PASSWORD = "redis-pw-Zq8x3LkT"
watch(PASSWORD)


async def test_the_redis_password_is_never_shown(
    tmp_path: Path, processes: RelayProcesses, discord: FakeDiscord
) -> None:
    redis = RedisServer(tmp_path / "redis", password=PASSWORD).start()
    try:
        config = write_config(tmp_path, discord, redis.url)
        assert PASSWORD in config.read_text()

        status, out = await run_cli("check", "-c", str(config))
        assert status == 0 and PASSWORD not in out
        loaded = load(str(config))
        assert PASSWORD not in repr(loaded) and PASSWORD not in str(loaded.store)
        assert f"127.0.0.1:{redis.port}" in repr(loaded.store)
        assert PASSWORD not in repr(open_store(loaded.store.url))

        wrong = tmp_path / "wrong.yaml"
        wrong.write_text(config.read_text().replace(PASSWORD, "not-the-password"))
        status, out = await run_cli("serve", "-c", str(wrong))
        assert status == 1
        assert out.splitlines()[-1].startswith(
            f"relay serve: cannot start: redis store redis://127.0.0.1:{redis.port}/0:"
        )
        assert "not-the-password" not in out

        relay = await processes.start(config)
        redis.kill()
        async with aiohttp.ClientSession() as http, http.get(relay.base_url + "/readyz") as ready:
            answer = await ready.text()
        assert ready.status == 503 and PASSWORD not in answer
        assert await relay.terminate() == 0
        assert PASSWORD not in relay.log()
    finally:
        redis.stop()
