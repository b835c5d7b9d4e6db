#!/usr/bin/env python3
"""Open N concurrent slow streaming chat requests against mockllm and check they all end in
[DONE]. While they run, sample the server's thread count from /proc/PID/status.

usage: concurrent_streams.py PORT PID N CHUNK_DELAY_MS TIME_LIMIT_S
Prints one JSON line: {"ok":N,"failed":N,"threads":[...samples...],"max_open":N,"secs":S}
"""
import asyncio
import json
import sys
import time

PORT, PID, N, DELAY, LIMIT = (int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]),
                              int(sys.argv[4]), float(sys.argv[5]))

BODY = json.dumps({"model": "gpt-4o", "stream": True,
                   "messages": [{"role": "user", "content": "one two three four five six"}]})
REQ = ("POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
       "Content-Type: application/json\r\nx-mock-chunk-delay-ms: %d\r\nx-mock-chunks: 25\r\n"
       "Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (DELAY, len(BODY), BODY)).encode()

opened = 0
max_open = 0


async def one(sem_start):
    global opened, max_open
    try:
        async with sem_start:
            r, w = await asyncio.open_connection("127.0.0.1", PORT)
        opened += 1
        max_open = max(max_open, opened)
        try:
            w.write(REQ)
            await w.drain()
            data = await r.read()  # until close
        finally:
            opened -= 1
            w.close()
        return b"data: [DONE]" in data and b"200 OK" in data.split(b"\r\n", 1)[0]
    except Exception as e:  # noqa: BLE001
        sys.stderr.write("stream failed: %r\n" % (e,))
        return False


def threads():
    try:
        with open("/proc/%d/status" % PID) as f:
            for line in f:
                if line.startswith("Threads:"):
                    return int(line.split()[1])
    except OSError:
        return -1
    return -1


async def sampler(samples, stop):
    while not stop.is_set():
        samples.append(threads())
        await asyncio.sleep(0.2)


async def main():
    samples = []
    stop = asyncio.Event()
    sem = asyncio.Semaphore(500)  # pace the connects a little, not the streams
    t0 = time.monotonic()
    st = asyncio.ensure_future(sampler(samples, stop))
    tasks = [asyncio.ensure_future(one(sem)) for _ in range(N)]
    try:
        res = await asyncio.wait_for(asyncio.gather(*tasks), LIMIT)
    except asyncio.TimeoutError:
        res = [t.done() and not t.cancelled() and t.result() for t in tasks]
        for t in tasks:
            t.cancel()
    stop.set()
    await st
    ok = sum(1 for x in res if x)
    print(json.dumps({"ok": ok, "failed": N - ok, "threads": sorted(set(samples)),
                      "max_open": max_open, "secs": round(time.monotonic() - t0, 2)}))


asyncio.run(main())
