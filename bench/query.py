"""Benchmark of the query side, beside a baseline measured in the same run.

1. Wallet balance lookup on one uvicorn worker (``ledgerline query-api``): the maximum rate
   (closed loop) and the latency at 1,000 requests/s offered (open loop), through GraphQL and
   through a raw asyncpg endpoint served the same way (same token check, one SQL statement):
   the baseline GraphQL is compared with.
2. 1,000 websocket subscribers to one wallet: how long a balance change takes to reach all of
   them, from the projector's NOTIFY and from the HTTP request that caused it.

It starts its own Kafka broker and PostgreSQL (``ledgerline.stack``, through the local stack's
launcher) on free ports, the four processes and the baseline server, and stops them all. The
load generator runs in a separate process. Everything shares this machine's cores, so the
figures are for all of it on one box. ``python -m bench.query``; about a minute.
"""

import json
import os
import subprocess
import sys
from typing import Any

from bench import stack
from common.auth import issue_token
from ledgerline.stack.ports import free_port

SECRET = "bench-secret-" + "b" * 40
SYMBOL, ALICE, BOB = "BENCHUSD", "bench-alice", "bench-bob"
GRAPHQL = {"query": "query($w: ID!, $a: String!) "
                    "{ wallet(id: $w) { balance(asset: $a) { available availableUnits } } }",
           "variables": {"w": ALICE, "a": SYMBOL}}
SECONDS = 4.0
RATE = 1000.0
LIGHT_RATE = 250.0  # a rate this shared box can carry, to show latency short of saturation
SUBSCRIBERS = 1000
ROUNDS = 5


def _load(spec: dict[str, Any]) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "bench.httpload", json.dumps(spec)], check=True,
                         capture_output=True, text=True, timeout=120)
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def _measured(spec: dict[str, Any], server_pid: int) -> dict[str, Any]:
    """The load's figures, and the server's CPU time per answered request (us): what the rate
    would be with a core to itself, since this machine's cores are shared."""
    before = stack.cpu_seconds(server_pid)
    out = _load(spec)
    used = stack.cpu_seconds(server_pid) - before
    out["server_cpu_us"] = round(used / max(out["ok"] + out["warmup_ok"], 1) * 1e6)
    return out


def _lookups(query_port: int, query_pid: int, raw_port: int, raw_pid: int,
             token: str) -> dict[str, dict[str, Any]]:
    auth = {"Authorization": f"Bearer {token}"}
    graphql = {"host": "127.0.0.1", "port": query_port, "method": "POST", "path": "/graphql",
               "headers": {**auth, "Content-Type": "application/json"}, "body": json.dumps(GRAPHQL),
               "expect": '"availableUnits"'}
    raw = {"host": "127.0.0.1", "port": raw_port, "method": "GET",
           "path": f"/balance?wallet={ALICE}&asset={SYMBOL}", "headers": auth, "expect": '"available_units"'}
    out = {}
    for name, spec, pid in (("graphql", graphql, query_pid), ("raw", raw, raw_pid)):
        out[f"{name}_max"] = _measured({**spec, "mode": "closed", "connections": 16, "seconds": SECONDS,
                                        "warmup": 0.5}, pid)
        out[f"{name}_open"] = _measured({**spec, "mode": "open", "rate": RATE, "seconds": SECONDS,
                                         "warmup": 0.5}, pid)
        out[f"{name}_light"] = _measured({**spec, "mode": "open", "rate": LIGHT_RATE, "seconds": 3.0,
                                          "warmup": 0.2}, pid)
    return out


def _subscribers(env: dict[str, str], query_port: int, command_port: int) -> dict[str, Any]:
    spec = {"query_port": query_port, "command_port": command_port, "n": SUBSCRIBERS, "rounds": ROUNDS}
    out = subprocess.run([sys.executable, "-m", "bench.query_subscribers", json.dumps(spec)], check=True,
                         capture_output=True, text=True, timeout=180, env=env)
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def _report(r: dict[str, Any]) -> None:
    def row(name: str, key: str) -> str:
        m, o, light = r[f"{key}_max"], r[f"{key}_open"], r[f"{key}_light"]
        per_core = 1e6 / m["server_cpu_us"] if m["server_cpu_us"] else 0.0
        return (f"  {name:<22} {m['rate']:>6,.0f} {m['server_cpu_us']:>7} {per_core:>7,.0f} |"
                f" {o['p50_ms']:>7} {o['p99_ms']:>7} {o['rate']:>6,.0f} {o['failed']:>6} |"
                f" {light['p50_ms']:>6} {light['p99_ms']:>7} {light['failed']:>4}")

    share = r["graphql_max"]["rate"] / r["raw_max"]["rate"] if r["raw_max"]["rate"] else 0.0
    cpu_share = r["raw_max"]["server_cpu_us"] / max(r["graphql_max"]["server_cpu_us"], 1)
    s = r["subscribers"]

    def ms(key: str) -> str:
        return f"p50 {s[key + '_p50_ms']} ms   p99 {s[key + '_p99_ms']} ms   max {s[key + '_max_ms']} ms"

    print(f"""
Query side: wallet balance lookup, one uvicorn worker ({r['server']}), {os.cpu_count()} cores shared with
Kafka, PostgreSQL, the other processes and the load generator. {SECONDS:.0f} s per run.
Load average before / after: {r['load_before']} / {r['load_after']}.
                       closed loop, 16 conns | open loop {RATE:,.0f} req/s offered | open {LIGHT_RATE:,.0f}/s
                        req/s us/req req/core | p50 ms  p99 ms  req/s unserved | p50 ms p99 ms unserved
{row("GraphQL POST /graphql", "graphql")}
{row("baseline: raw asyncpg", "raw")}
  GraphQL keeps {share:.0%} of the baseline's measured rate, {cpu_share:.0%} of its rate per core.
  req/core: 1 / the server's CPU time per request, the rate it could reach with a core to itself.
  unserved: requests still waiting for one of 1,000 connections (the server fell behind); the
  latencies are those of the served requests, from their scheduled time.

{s['subscribers']:,} websocket subscribers to one wallet, {s['rounds']} balance changes ({s['received']:,} of
{s['expected']:,} pushes received):
  from the projector's NOTIFY     {ms("notify")}
  from the HTTP transfer request  {ms("request")}

Targets: >= 2,000 req/s; p99 <= 10 ms at 1,000 req/s; GraphQL >= 50% of the baseline;
subscribers p99 <= 200 ms.""")


def main() -> None:
    with stack.full("query", SECRET) as bench:
        raw_port = free_port()
        raw = subprocess.Popen([sys.executable, "-m", "bench.query_raw", str(raw_port)], env=bench.env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            stack.wait_up(f"http://127.0.0.1:{raw_port}/healthz")
            issuer = issue_token(SECRET, "treasury", roles=["issuer"], assets=[SYMBOL])
            stack.post(f"{bench.command_url}/v1/assets", issuer,
                  {"symbol": SYMBOL, "name": "Bench dollar", "decimals": 2, "issuer": "treasury"})
            stack.post(f"{bench.command_url}/v1/assets/{SYMBOL}/issue", issuer,
                  {"to": ALICE, "amount": "1000000.00"})
            print("measuring lookups …", flush=True)
            load_before = " ".join(f"{x:.1f}" for x in os.getloadavg())
            query_port = bench.settings.query_port
            results = _lookups(query_port, bench.pid("query-api"), raw_port, raw.pid,
                               issue_token(SECRET, ALICE, wallets=[ALICE]))
            print(f"measuring {SUBSCRIBERS} subscribers …", flush=True)
            results["subscribers"] = _subscribers(bench.env, query_port, bench.settings.command_port)
            results["server"] = stack.server_kind()
            results["load_before"] = load_before
            results["load_after"] = " ".join(f"{x:.1f}" for x in os.getloadavg())
            _report(results)
            (bench.home / "results.json").write_text(json.dumps(results, indent=1))
            print(f"raw figures: {bench.home / 'results.json'}")
        finally:
            raw.terminate()
            raw.wait(10)


if __name__ == "__main__":
    main()
