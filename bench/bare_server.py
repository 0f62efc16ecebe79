"""The baseline for bench/run.py: an aiohttp app whose one POST handler reads the body and
answers 200. It runs on the same Python, aiohttp and plain asyncio event loop as relay, so
the ratio relay/bare measures relay's own work (verify, parse, route, store, log).

    python bench/bare_server.py --port 8081 [--path /webhook]
"""

from __future__ import annotations

import argparse

from aiohttp import web


async def _handle(request: web.Request) -> web.Response:
    await request.read()
    return web.json_response({"status": "ok"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/webhook")
    args = parser.parse_args()
    app = web.Application()
    app.router.add_post(args.path, _handle)
    web.run_app(app, host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
