"""The peers notifyctl is measured against, each run as its own process by bench/broadcast.py.

    python bench/peers.py postloop URL N [--workers 64]   # plain aiohttp POSTs, keep-alive
    bench/.venv/bin/python bench/peers.py apprise URL N    # Apprise's Python API, one notify() per message

Each prints one JSON line: {"sent": ..., "failed": ..., "elapsed_s": ...} measured around the
sending loop only (imports and set-up excluded); the caller adds the OS view (wall, CPU, RSS).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

BODY = {"type": "user.welcome", "user_id": "u1", "first_name": "Name1", "product_name": "Acme Cloud"}


async def post_loop(url: str, n: int, workers: int) -> tuple[int, int]:
    import aiohttp

    body = json.dumps(BODY).encode()
    headers = {"content-type": "application/json"}
    remaining = iter(range(n))
    sent = failed = 0
    connector = aiohttp.TCPConnector(limit=workers)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=10)) as session:

        async def worker() -> None:
            nonlocal sent, failed
            for _ in remaining:
                try:
                    async with session.post(url, data=body, headers=headers) as response:
                        ok = 200 <= response.status < 300
                except (aiohttp.ClientError, TimeoutError):
                    ok = False
                if ok:
                    sent += 1
                else:
                    failed += 1

        await asyncio.gather(*(worker() for _ in range(workers)))
    return sent, failed


def apprise_loop(url: str, n: int) -> tuple[int, int]:
    import apprise  # type: ignore[import-not-found]  # only in bench/.venv

    notifier = apprise.Apprise()
    # json://host:port/ posts {"title", "body", "type", ...} to http://host:port/
    target = url.replace("http://", "json://", 1)
    if not notifier.add(target):
        raise SystemExit(f"apprise refused {target}")
    sent = failed = 0
    for i in range(n):
        if notifier.notify(title="Welcome", body=f"Hello Name{i}, welcome to Acme Cloud"):
            sent += 1
        else:
            failed += 1
    return sent, failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("peer", choices=["postloop", "apprise"])
    parser.add_argument("url")
    parser.add_argument("n", type=int)
    parser.add_argument("--workers", type=int, default=64)
    args = parser.parse_args()
    started = time.perf_counter()
    if args.peer == "postloop":
        sent, failed = asyncio.run(post_loop(args.url, args.n, args.workers))
    else:
        sent, failed = apprise_loop(args.url, args.n)
    elapsed = time.perf_counter() - started
    json.dump({"sent": sent, "failed": failed, "elapsed_s": elapsed}, sys.stdout)
    print()


if __name__ == "__main__":
    main()
