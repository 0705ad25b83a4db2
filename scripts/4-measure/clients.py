"""HTTP clients that put a server under load, for `make bench` and the tests: slow, many, or steady.

- slow_header_attack: many connections that send a request's headers one line a second and never
  finish them (a "slowloris"), reconnecting when the server closes them; the clients that got a
  connection, the connections opened (reconnections included) and those refused are counted apart.
  Meanwhile a normal client asks for /healthz ten times a second on schedule, each time on a new
  connection, and its latency is recorded.
- keepalive_crowd: a thousand connections opened first, then each asked for /healthz twice, the
  second time on the same, kept-alive connection, all of them at once.
- fixed_rate: requests sent at a fixed rate whatever the server does (an open-loop generator), on
  reused connections, each timed from when it was due to be sent. A closed-loop tool such as wrk
  waits for each answer before sending again, so a slow server is offered less work and its
  queueing does not show; here it does.

Everything talks to one port of 127.0.0.1 and stops by a deadline.
"""

import asyncio
import contextlib
import http.client
import math
import statistics
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

# docker_tools, the helper every script shares, sits in scripts/, one folder up.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from docker_tools import request

HOST = "127.0.0.1"


def percentile(values: list[float], share: float) -> float:
    """The nearest-rank percentile: the smallest value that share of the values do not exceed."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def summary(latencies: list[float], failures: int) -> dict:
    """Count, failures and the latency percentiles in milliseconds."""
    milliseconds = [latency * 1000 for latency in latencies]
    spread = {"p50_ms": None, "p99_ms": None, "max_ms": None}
    if milliseconds:
        spread = {
            "p50_ms": percentile(milliseconds, 0.5),
            "p99_ms": percentile(milliseconds, 0.99),
            "max_ms": max(milliseconds),
        }
    return {"requests": len(latencies) + failures, "failures": failures, **spread}


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one HTTP/1.x response with a Content-Length; return its status and whether it keeps alive."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
    status_line, *lines = head.split("\r\n")
    headers = dict(line.split(":", 1) for line in lines if ":" in line)
    await reader.readexactly(int(headers.get("content-length", "0")))
    closes = headers.get("connection", "").strip() == "close" or status_line.startswith("http/1.0")
    return int(status_line.split()[1]), not closes


def get(port: int, path: str = "/healthz", timeout: float = 5) -> float | None:
    """One GET on a new connection; its duration in seconds if it answered 200, else None."""
    started = time.monotonic()
    try:
        status = request(port, path, host=HOST, timeout=timeout).status
    except (OSError, http.client.HTTPException):
        return None
    return time.monotonic() - started if status == 200 else None


# Slow clients


async def _slow_client(port: int, deadline: float, interval: float, stats: dict) -> None:
    """Open a connection, send a request line and then one header line per interval, never the end
    of the headers; when the server closes the connection, open another, until the deadline."""
    line, connected = 0, False
    while time.monotonic() < deadline:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), timeout=interval * 5)
        except (OSError, TimeoutError):
            stats["refused"] += 1
            await asyncio.sleep(interval)
            continue
        stats["clients_connected"] += not connected
        connected = True
        stats["opened"] += 1
        opened = time.monotonic()
        closed = asyncio.ensure_future(reader.read())  # done when the server closes the connection
        try:
            writer.write(b"GET / HTTP/1.1\r\nHost: localhost\r\n")
            while not closed.done() and time.monotonic() < deadline:
                await asyncio.wait([closed], timeout=min(interval, max(0, deadline - time.monotonic())))
                if not closed.done():
                    line += 1
                    writer.write(b"X-Slow-%d: %d\r\n" % (line, line))
                    await writer.drain()
        except OSError:
            pass
        if closed.done():
            stats["closed_by_server"].append(time.monotonic() - opened)
            if not closed.cancelled():
                closed.exception()  # a reset is an answer too; retrieve it so asyncio does not warn
            await asyncio.sleep(interval)
        else:
            stats["open_at_end"] += 1
            closed.cancel()
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def slow_header_attack(
    port: int,
    clients: int = 256,
    seconds: float = 20,
    interval: float = 1.0,
    probe_every: float = 0.1,
    probe_timeout: float = 5,
) -> dict:
    """Hold `clients` slow-header connections for `seconds`; probe /healthz meanwhile; return both.

    The probes start once every slow client has connected (or after a fifth of the time); a probe
    not answered 200 within probe_timeout seconds is a failure.
    """
    deadline = time.monotonic() + seconds
    stats = {"clients_connected": 0, "opened": 0, "refused": 0, "open_at_end": 0, "closed_by_server": []}

    async def attack() -> None:
        await asyncio.gather(*(_slow_client(port, deadline, interval, stats) for _ in range(clients)))

    attacker = threading.Thread(target=asyncio.run, args=(attack(),), daemon=True)
    attacker.start()
    ramp = time.monotonic() + seconds / 5
    while stats["clients_connected"] < clients and time.monotonic() < ramp:
        time.sleep(0.05)
    # The probes go out on a schedule, not one after another: a server that stalls them gets as
    # many asked of it as one that answers.
    probes = []
    with ThreadPoolExecutor(max_workers=64) as pool:
        due = time.monotonic()
        while due < deadline - 1:
            time.sleep(max(0, due - time.monotonic()))
            probes.append(pool.submit(get, port, "/healthz", probe_timeout))
            due += probe_every
    latencies = [probe.result() for probe in probes]
    failures = latencies.count(None)
    latencies = [latency for latency in latencies if latency is not None]
    attacker.join(timeout=interval * 10)
    held = stats["closed_by_server"]
    return {
        "clients": clients,
        "seconds": seconds,
        "healthz": summary(latencies, failures),
        "slow_connections": {
            "clients_connected": stats["clients_connected"],
            "opened": stats["opened"],
            "refused": stats["refused"],
            "closed_by_server": len(held),
            "median_seconds_held": statistics.median(held) if held else None,
            "open_at_end": stats["open_at_end"],
        },
    }


# Many connections


async def _crowd(port: int, count: int, timeout: float) -> dict:
    request = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n"
    answered, failed = 0, 0

    async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        nonlocal failed
        try:
            return await asyncio.wait_for(asyncio.open_connection(HOST, port), timeout)
        except (OSError, TimeoutError):
            failed += 1
            return None

    async def converse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal answered, failed
        try:
            for _ in range(2):
                writer.write(request)
                status, _ = await asyncio.wait_for(read_response(reader), timeout)
                answered += status == 200
                failed += status != 200
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError):
            failed += 1
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    started = time.monotonic()
    connections = [pair for pair in await asyncio.gather(*(connect() for _ in range(count))) if pair]
    await asyncio.gather(*(converse(reader, writer) for reader, writer in connections))
    return {
        "connections": count,
        "open_at_once": len(connections),
        "answered": answered,
        "failures": failed,
        "seconds": time.monotonic() - started,
    }


def keepalive_crowd(port: int, connections: int = 1000, timeout: float = 30) -> dict:
    """Open `connections` connections and, once all are open, ask /healthz twice on each (the
    second time on the kept-alive connection), all at once. Return the answers and failures."""
    return asyncio.run(_crowd(port, connections, timeout))


# Steady rate


async def _fixed_rate(
    port: int, rate: float, seconds: float, path: str, timeout: float, clock: Callable[[], float]
) -> dict:
    loop = asyncio.get_running_loop()
    # Connections between requests, with when each went idle. One idle for over a second is closed
    # instead of reused: the server may be closing it at that moment (its keep-alive timeout).
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []
    latencies, failures, late = [], 0, 0
    request = f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode()

    async def connection() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        while idle:
            reader, writer, since = idle.pop()
            if loop.time() - since < 1:
                return reader, writer
            writer.close()
        return await asyncio.wait_for(asyncio.open_connection(HOST, port), timeout)

    async def one(due: float) -> None:
        nonlocal failures
        writer = None
        try:
            reader, writer = await connection()
            writer.write(request)
            status, keep_alive = await asyncio.wait_for(read_response(reader), timeout)
            if status == 200:
                latencies.append(clock() - due)
            else:
                failures += 1
            if keep_alive:
                idle.append((reader, writer, loop.time()))
                writer = None
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError):
            failures += 1
        finally:
            if writer is not None:
                writer.close()

    tasks = []
    start = clock()
    for number in range(round(rate * seconds)):
        due = start + number / rate
        await asyncio.sleep(max(0, due - clock()))
        late += clock() - due > 0.01
        tasks.append(asyncio.create_task(one(due)))
    await asyncio.gather(*tasks)
    for _, writer, _ in idle:
        writer.close()
    return {"rate": rate, "seconds": seconds, "sent_late": late, **summary(latencies, failures)}


def fixed_rate(
    port: int,
    rate: float = 100,
    seconds: float = 10,
    path: str = "/",
    timeout: float = 5,
    clock: Callable[[], float] = time.monotonic,
) -> dict:
    """Send GET path at `rate` a second for `seconds`, open loop; latency counts from each send's due time.

    sent_late counts requests the generator itself sent over 10 ms after their due time, by `clock`:
    the schedule is kept by it, and a clock that is slow to read makes the generator late.
    """
    return asyncio.run(_fixed_rate(port, rate, seconds, path, timeout, clock))
