"""Benchmark of the command API, beside a produce-and-wait-per-request baseline in the same run.

Transfers between many funded wallets (each request from its own wallet, with its owner's token)
through one command-API process (``ledgerline command-api``, one uvicorn worker) and through the
baseline server (:mod:`bench.command_api_baseline`: the same checks and the same durable append,
one ``send_and_wait`` per request on a default producer, nothing tuned):

1. end to end at 1,000 commands/s offered, open loop: from each request's scheduled time to the
   answer of ``Prefer: wait=5``, which comes once the read model (the views GraphQL reads) shows
   the transfer ``completed``; alongside, a sample of transfers whose ``completed`` status is
   then read back through GraphQL (the proof, and request -> GraphQL answer latency);
2. the same at a light 100 commands/s, short of what the pipeline can carry;
3. the maximum rate of accepted commands (``202``, no wait), closed loop;
4. floors (:mod:`bench.command_floor`): a bare uvicorn answering ``202``, and each hop of a
   transfer's path alone.

Measuring starts once the broker is warm: rounds of load until its JIT compilers go quiet.

It starts its own Kafka broker and PostgreSQL (``ledgerline.stack``, through the local stack's
launcher) on free ports, the four processes and the baseline server, and stops them all. The
load generator runs in its own process. Everything shares this machine's cores, so the figures
are for all of it on one box. ``python -m bench.command_api``; four to six minutes.
"""

import asyncio
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition

from bench import command_floor, stack
from bench.httpload import Connection, request_bytes
from common.auth import issue_token
from common.kafka import client_options
from common.settings import Settings, asyncpg_dsn
from events import codec, topics
from ledgerline.stack.ports import free_port

SECRET = "bench-secret-" + "c" * 40
SYMBOL = "BENCHCMD"
WALLETS = 200
RATE, LIGHT_RATE = 1000.0, 100.0
# Warm-up, not measured: rounds of load until the broker's JIT compilers go quiet. On 2 cores a
# fresh broker compiles for minutes, a third of a core or more, which no broker in service does.
WARMUP_RATE, WARMUP_ROUND, WARMUP_MAX = 300.0, 15.0, 300.0
WARM_JIT = 0.05  # compiler threads' share of a core under which the broker counts as warm
OPEN_SECONDS, LIGHT_SECONDS, MAX_SECONDS = 5.0, 3.0, 3.0
CONNECTIONS = (64, 256)  # the maximum accepted rate is the best of these
SAMPLE_EVERY = 0.2  # seconds between GraphQL-checked transfers during the open-loop runs
TRANSFER_QUERY = "query($id: ID!) { transfer(id: $id) { status } }"


def _wallet(i: int) -> str:
    return f"bench-w{i:04d}"


def _variants(secret: str) -> list[dict[str, Any]]:
    """One transfer per wallet to the next one, sent by the wallet's owner: a ring, so funds
    keep moving and no wallet runs dry."""
    out = []
    for i in range(WALLETS):
        body = {"from": _wallet(i), "to": _wallet((i + 1) % WALLETS), "asset": SYMBOL, "amount": "0.01"}
        token = issue_token(secret, _wallet(i), wallets=[_wallet(i)])
        out.append({"headers": {"Authorization": f"Bearer {token}"}, "body": json.dumps(body)})
    return out


def _spec(port: int, variants: list[dict[str, Any]], wait: bool, **mode: Any) -> dict[str, Any]:
    headers = {"Content-Type": "application/json", **({"Prefer": "wait=5"} if wait else {})}
    return {"host": "127.0.0.1", "port": port, "method": "POST", "path": "/v1/transfers",
            "headers": headers, "variants": variants, "status": 200 if wait else 202,
            "expect": '"completed"' if wait else '"accepted"', **mode}


class Sampler:
    """Now and then a transfer with ``Prefer: wait``, then its status read through GraphQL; and
    where its time went, from Kafka timestamps: the command appended by the API, the debit
    decided by the processor, the payee's credit (written by the debit's transaction since the
    live path; decided once the debit's transaction had committed before it); and from the read
    model: the start of the projector's transaction that made it final.
    """

    def __init__(self, port: int, query_port: int, secret: str, settings: Settings) -> None:
        self.port, self.query_port, self.settings = port, query_port, settings
        self.token = issue_token(secret, "bench-sampler", wallets=["bench-sampler"])
        self.samples: dict[str, dict[str, float]] = {}  # transfer id -> wall-clock times
        self.wrong: list[str] = []

    async def run(self, seconds: float) -> None:
        consumer = AIOKafkaConsumer(**client_options(self.settings.kafka),
                                    isolation_level="read_committed")
        await consumer.start()
        try:
            tps = [TopicPartition(topic, p) for topic in (topics.COMMANDS, topics.EVENTS)
                   for p in range(self.settings.partitions)]
            consumer.assign(tps)
            await consumer.seek_to_end(*tps)
            for tp in tps:
                await consumer.position(tp)
            tasks = []
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                await asyncio.sleep(SAMPLE_EVERY)
                tasks.append(asyncio.create_task(self._one()))
            await asyncio.gather(*tasks)
            await self._hops(consumer, tps)
            await self._projected()
        finally:
            await consumer.stop()

    async def _one(self) -> None:
        api = await Connection.open("127.0.0.1", self.port)
        gql = await Connection.open("127.0.0.1", self.query_port)
        body = json.dumps({"from": "bench-sampler", "to": _wallet(0), "asset": SYMBOL, "amount": "0.01"})
        try:
            started = time.time()
            status, answer = await api.exchange(request_bytes(
                "POST", "/v1/transfers", f"127.0.0.1:{self.port}", {
                    "Authorization": f"Bearer {self.token}", "Content-Type": "application/json",
                    "Prefer": "wait=5"}, body.encode()))
            answered = time.time()
            if status != 200:
                self.wrong.append(f"{status} {answer[:200]!r}")
                return
            transfer_id = json.loads(answer)["transfer_id"]
            query = json.dumps({"query": TRANSFER_QUERY, "variables": {"id": transfer_id}})
            _, shown = await gql.exchange(request_bytes(
                "POST", "/graphql", f"127.0.0.1:{self.query_port}",
                {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
                query.encode()))
            self.samples[transfer_id] = {"start": started, "answer": answered, "graphql": time.time()}
            if json.loads(shown)["data"]["transfer"]["status"] != "completed":
                self.wrong.append(f"GraphQL shows {shown[:200]!r}")
        finally:
            api.close()
            gql.close()

    async def _hops(self, consumer: AIOKafkaConsumer, tps: list[TopicPartition]) -> None:
        ends = await consumer.end_offsets(tps)
        wanted = {"InitiateTransfer": "appended", "TransferConfirmed": "debit", "WalletCredited": "credit"}
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            for records in (await consumer.getmany(timeout_ms=500, max_records=10_000)).values():
                for record in records:
                    try:
                        env = codec.decode(record.value)
                    except codec.DecodeError:
                        continue
                    sample = self.samples.get(env.correlation_id or "")
                    if sample is not None and env.type in wanted:
                        sample[wanted[env.type]] = record.timestamp / 1000

    async def _projected(self) -> None:
        conn = await asyncpg.connect(asyncpg_dsn(self.settings.database_url))
        try:
            rows = await conn.fetch("SELECT correlation_id, updated_at FROM command_log "
                                    "WHERE correlation_id = ANY($1::text[])", list(self.samples))
        finally:
            await conn.close()
        for row in rows:
            self.samples[row["correlation_id"]]["projected"] = row["updated_at"].timestamp()

    def summary(self) -> dict[str, Any]:
        def p50(step: str) -> float | None:
            xs = sorted(s[step] - s["start"] for s in self.samples.values() if step in s)
            return None if not xs else round(xs[len(xs) // 2] * 1000, 1)

        graphql = sorted(s["graphql"] - s["start"] for s in self.samples.values())
        return {"n": len(self.samples) + len(self.wrong), "not_completed": len(self.wrong),
                "first_wrong": self.wrong[0] if self.wrong else None,
                "graphql_max_ms": round(graphql[-1] * 1000, 1) if graphql else None,
                **{f"{step}_p50_ms": p50(step) for step in ("appended", "debit", "credit", "projected",
                                                            "answer", "graphql")}}


async def _load_with_sampler(spec: dict[str, Any], sampler: Sampler | None) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "bench.httpload", json.dumps(spec),
                                                stdout=asyncio.subprocess.PIPE)
    sampling = None
    if sampler is not None:
        await asyncio.sleep(spec.get("warmup", 1.0))
        sampling = asyncio.create_task(sampler.run(spec["seconds"]))
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    if sampling is not None:
        await sampling
    if proc.returncode:
        raise RuntimeError(f"the load generator failed ({proc.returncode})")
    return json.loads(out)  # type: ignore[no-any-return]


def _measured(spec: dict[str, Any], server_pid: int, sampler: Sampler | None = None) -> dict[str, Any]:
    """The load's figures and the server's CPU time per answered request (us)."""
    before = stack.cpu_seconds(server_pid)
    out = asyncio.run(_load_with_sampler(spec, sampler))
    used = stack.cpu_seconds(server_pid) - before
    out["server_cpu_us"] = round(used / max(out["ok"] + out["warmup_ok"], 1) * 1e6)
    out["load"] = f"{os.getloadavg()[0]:.1f}"
    if sampler is not None:
        out["graphql"] = sampler.summary()
    return out


class Ledger:
    """How many commands the read model shows final: the processor and projector caught up."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.expected = 0

    def add(self, result: dict[str, Any]) -> None:
        """Count the commands a run had accepted: every 200 or 202 answer, waited for or not."""
        for statuses in (result["statuses"], result["warmup_statuses"]):
            self.expected += sum(n for status, n in statuses.items() if str(status) in ("200", "202"))
        self.expected += result.get("graphql", {}).get("n", 0)

    def drained(self, give_up_after: float = 60.0) -> float:
        """Seconds it took the pipeline to finish every command sent so far."""
        async def final() -> int:
            conn = await asyncpg.connect(self.dsn)
            try:
                return int(await conn.fetchval("SELECT count(*) FROM command_log WHERE status_rank = 3"))
            finally:
                await conn.close()

        started = time.monotonic()
        while asyncio.run(final()) < self.expected:
            if time.monotonic() - started > give_up_after:
                raise RuntimeError(f"the pipeline did not finish {self.expected} commands in time")
            time.sleep(0.5)
        return round(time.monotonic() - started, 1)


def _completed(url: str, token: str, body: dict[str, Any]) -> None:
    answer = stack.post(url, token, body)
    if answer.get("status") != "completed":
        raise RuntimeError(f"setting up: {url} answered {answer}")


def _fund(command_url: str, secret: str, ledger: Ledger) -> None:
    issuer = issue_token(secret, "treasury", roles=["issuer"], assets=[SYMBOL])
    _completed(f"{command_url}/v1/assets", issuer,
               {"symbol": SYMBOL, "name": "Bench dollar", "decimals": 2, "issuer": "treasury"})
    wallets = [_wallet(i) for i in range(WALLETS)] + ["bench-sampler"]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda w: _completed(f"{command_url}/v1/assets/{SYMBOL}/issue", issuer,
                                           {"to": w, "amount": "1000000.00"}), wallets))
    ledger.expected += 1 + len(wallets)


def _warm_up(port: int, pids: dict[str, int], variants: list[dict[str, Any]], ledger: Ledger) -> str:
    """Rounds of load until the broker's JIT compilers go quiet (one round for a broker not
    started here)."""
    broker, spent = pids.get("broker"), 0.0
    while True:
        before, began = stack.jit_seconds(broker) if broker else 0.0, time.monotonic()
        ledger.add(_measured(_spec(port, variants, True, mode="open", rate=WARMUP_RATE,
                                   seconds=WARMUP_ROUND, warmup=0.5), pids["api"]))
        spent += WARMUP_ROUND
        if not broker:
            return f"{spent:.0f} s at {WARMUP_RATE:,.0f}/s"
        share = (stack.jit_seconds(broker) - before) / (time.monotonic() - began)
        print(f"  warming up, not measured: {spent:.0f} s at {WARMUP_RATE:,.0f}/s, the broker's JIT "
              f"compilers at {share:.0%} of a core", flush=True)
        if share < WARM_JIT or spent >= WARMUP_MAX:
            return (f"{spent:.0f} s at {WARMUP_RATE:,.0f}/s; the broker's JIT compilers at {share:.0%} "
                    f"of a core in the last {WARMUP_ROUND:.0f} s")


def _run(ports: dict[str, int], pids: dict[str, int], settings: Settings, ledger: Ledger) -> dict[str, Any]:
    variants = _variants(SECRET)
    out: dict[str, Any] = {}
    out["warmup"] = _warm_up(ports["api"], pids, variants, ledger)
    drains = [ledger.drained()]
    for name in ("api", "baseline"):
        for run, rate, seconds in (("open", RATE, OPEN_SECONDS), ("light", LIGHT_RATE, LIGHT_SECONDS)):
            print(f"  {name}: {rate:,.0f}/s open loop with Prefer: wait …", flush=True)
            sampler = Sampler(ports[name], settings.query_port, SECRET, settings)
            out[f"{name}_{run}"] = _measured(_spec(ports[name], variants, True, mode="open", rate=rate,
                                                   seconds=seconds, warmup=0.5), pids[name], sampler)
            ledger.add(out[f"{name}_{run}"])
            drains.append(ledger.drained())
    for name in ("baseline", "api"):
        if name == "api":
            drains.append(ledger.drained())
        for connections in CONNECTIONS:
            print(f"  {name}: maximum accepted rate, {connections} connections …", flush=True)
            best = _measured(_spec(ports[name], variants, False, mode="closed", connections=connections,
                                   seconds=MAX_SECONDS, warmup=0.5), pids[name])
            best["connections"] = connections
            ledger.add(best)
            out[f"{name}_max_{connections}"] = best
        out[f"{name}_max"] = max((out[f"{name}_max_{c}"] for c in CONNECTIONS), key=lambda m: m["rate"])
    drains.append(ledger.drained())
    out["drain_s"] = drains
    print("  floors: a bare HTTP server, one Kafka transaction …", flush=True)
    bare = [_measured({**_spec(ports["bare"], variants, False, mode="closed", connections=c,
                                seconds=MAX_SECONDS, warmup=0.5)}, pids["bare"]) for c in CONNECTIONS]
    out["bare_max"] = max(bare, key=lambda m: m["rate"])
    out["path"] = asyncio.run(command_floor.transfer_path(settings.kafka,
                                                          asyncpg_dsn(settings.database_url)))
    return out


def _loads(r: dict[str, Any]) -> str:
    runs = [f"{k} {v['load']}" for k, v in r.items() if isinstance(v, dict) and "load" in v]
    return ", ".join(runs)


def _floors(r: dict[str, Any]) -> str:
    bare, path = r["bare_max"], r["path"]

    def hop(name: str) -> str:
        return f"{path[name]['p50_ms']}/{path[name]['p99_ms']}"

    floor = path["append"]["p50_ms"] + path["transaction"]["p50_ms"] + path["commit"]["p50_ms"]
    return "\n".join([
        "Floors, measured in the same run on the same stack, the pipeline idle:",
        "  bare uvicorn answering 202 (no token, no JSON, no Kafka), closed loop, same load generator:",
        f"    {bare['rate']:,.0f} req/s at {bare['server_cpu_us']} us/req: no API served so accepts more",
        "  a transfer's hops, each alone, p50/p99 ms:",
        f"    the API's append (plain produce) until a read_committed reader has it  {hop('append')}",
        f"    one Kafka transaction (one record, commit) until such a reader has it   {hop('transaction')}",
        f"    one PostgreSQL transaction with NOTIFY until a LISTENer hears it        {hop('commit')}",
        "  A transfer is the append, one transaction (the debit, which writes the payee's credit too)",
        f"  and the projector's commit: at least {floor:.1f} ms p50 end to end, however the rest is built.",
    ])


def _report(r: dict[str, Any]) -> None:
    def row(label: str, key: str) -> str:
        o, light, m = r[f"{key}_open"], r[f"{key}_light"], r[f"{key}_max"]
        per_core = 1e6 / m["server_cpu_us"] if m["server_cpu_us"] else 0.0
        return (f"  {label:<26} {o['p50_ms']:>7} {o['p99_ms']:>7} {o['rate']:>6,.0f} {o['failed']:>6} |"
                f" {light['p50_ms']:>6} {light['p99_ms']:>6} |"
                f" {m['rate']:>7,.0f} {m['server_cpu_us']:>6} {per_core:>7,.0f} {m['failed']:>5}")

    def hops(label: str, key: str) -> str:
        g = r[key]["graphql"]
        return (f"  {label:<22} {g['n']:>4} {g['appended_p50_ms']!s:>8} {g['debit_p50_ms']!s:>8}"
                f" {g['credit_p50_ms']!s:>8} {g['projected_p50_ms']!s:>9}"
                f" {g['answer_p50_ms']!s:>8} {g['graphql_p50_ms']!s:>8} {g['graphql_max_ms']!s:>8}"
                f" {g['not_completed']:>6}")

    api_max = r["api_max"]
    ratio = r["api_max"]["rate"] / r["baseline_max"]["rate"] if r["baseline_max"]["rate"] else 0.0
    cpu_ratio = r["baseline_max"]["server_cpu_us"] / max(r["api_max"]["server_cpu_us"], 1)
    print(f"""
Command side: POST /v1/transfers between {WALLETS} funded wallets (a token per wallet), one
uvicorn worker ({r['server']}), {os.cpu_count()} cores shared with Kafka, PostgreSQL, the
processor, the projector, the query API and the load generator.
Load average (1 min): {r['load_before']} before; after each run: {_loads(r)}.
Warm-up before measuring: {r['warmup']}.

{"":28}end to end, {RATE:,.0f}/s offered      | {LIGHT_RATE:,.0f}/s offered | accepted (202), closed loop
                             p50 ms  p99 ms  done/s failed | p50 ms p99 ms |   cmd/s us/req cmd/core failed
{row("command API", "api")}
{row("baseline: produce-and-wait", "baseline")}

  End to end: open loop, from each request's scheduled time to its Prefer: wait=5 answer, which
  comes once the views GraphQL reads show the transfer completed (the debit and the credit).
  done/s: transfers answered completed per second; failed: not answered completed within the
  wait, or not sent because all 1,000 connections were waiting (offered faster than done).
  Accepted: {MAX_SECONDS:.0f} s, closed loop; the best of {", ".join(map(str, CONNECTIONS))} connections
  (API: {api_max['connections']}, p50/p99 {api_max['p50_ms']}/{api_max['p99_ms']} ms). The command API
  accepts {ratio:.1f}x the baseline's rate and needs 1/{cpu_ratio:.1f} of its CPU per command.
  us/req: the server's CPU time per request; cmd/core: the rate it could reach with a core to itself.
  Pipeline catch-up before runs (s): {r['drain_s']}.

Sampled transfers during the end-to-end runs (Prefer: wait, then the transfer read through
GraphQL), p50 ms from the request, by Kafka timestamps: the command appended by the API, the
debit decided by the processor and the payee's credit (written in the debit's transaction);
the start of the projector's transaction that made it final; the API's answer and GraphQL's:
                            n appended    debit   credit projected   answer  GraphQL  GQL max  not completed
{hops(f"command API, {RATE:,.0f}/s", "api_open")}
{hops(f"command API, {LIGHT_RATE:,.0f}/s", "api_light")}
{hops(f"baseline, {RATE:,.0f}/s", "baseline_open")}
{hops(f"baseline, {LIGHT_RATE:,.0f}/s", "baseline_light")}

{_floors(r)}

Targets: >= 5,000 commands/s accepted; end to end p50 <= 15 ms, p99 <= 50 ms at 1,000/s.""")


def main() -> None:
    with stack.full("command", SECRET) as bench:
        settings = bench.settings
        baseline_port = free_port()
        baseline = subprocess.Popen([sys.executable, "-m", "bench.command_api_baseline", str(baseline_port)],
                                    env=bench.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        bare_port = free_port()
        bare = subprocess.Popen([sys.executable, "-m", "bench.command_floor", str(bare_port)],
                                env=bench.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            stack.wait_up(f"http://127.0.0.1:{baseline_port}/healthz")
            stack.wait_up(f"http://127.0.0.1:{bare_port}/")
            ledger = Ledger(asyncpg_dsn(settings.database_url))
            print(f"funding {WALLETS} wallets …", flush=True)
            _fund(bench.command_url, SECRET, ledger)
            load_before = f"{os.getloadavg()[0]:.1f}"
            pids = {"api": bench.pid("command-api"), "baseline": baseline.pid, "bare": bare.pid}
            if bench.infra.broker is not None and bench.infra.broker.pid is not None:
                pids["broker"] = bench.infra.broker.pid
            results = _run({"api": settings.command_port, "baseline": baseline_port, "bare": bare_port},
                           pids, settings, ledger)
            results["server"] = stack.server_kind()
            results["load_before"] = load_before
            _report(results)
            (bench.home / "results.json").write_text(json.dumps(results, indent=1))
            print(f"raw figures: {bench.home / 'results.json'}")
        finally:
            for server in (baseline, bare):
                server.terminate()
                server.wait(10)


if __name__ == "__main__":
    main()
