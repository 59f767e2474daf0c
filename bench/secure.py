"""The default profile beside the secure profile, in one run: what tamper evidence, TLS, SASL,
ACLs, a role per process and sealed memos cost. ``python -m bench.secure``; about five minutes.

Two stacks run side by side, each on its own broker and PostgreSQL, each with the five processes
as ``ledgerline up`` starts them:

- **default**: ``ledgerline up`` with the audit extras off — Kafka and PostgreSQL in plain TCP,
  one database login for every process, memos in clear, the hash chain kept but not signed;
- **secure**: ``ledgerline up --secure`` as shipped — Kafka over TLS with SASL/SCRAM-SHA-512 and
  ACLs, PostgreSQL over TLS with a role per process, memos sealed with their wallet's key
  (AES-GCM), the hash chain signed (Ed25519) with checkpoints on ``ledger.anchors``.

Each latency and rate is measured in rounds, taken on the two stacks in turn (ABBA), and the
median round is shown, so both see the same neighbours on a shared machine: compare the ratio,
not the figures across runs. Every transfer
carries a memo (sealed and opened again in the secure profile). Measured:

1. append latency: ``POST /v1/transfers`` answered ``202`` (the command in Kafka, ``acks=all``),
   open loop at ``APPEND_RATE``, p50/p99;
2. accepted writes/s: the most ``202`` answers per second, closed loop; with the server's and
   the load generator's own CPU per request;
3. end to end: ``Prefer: wait=5`` answered ``completed`` (the read model shows both halves),
   open loop at ``E2E_RATE``, p50/p99;
4. processor and projector throughput: a backlog of accepted transfers is built while both are
   stopped (SIGSTOP), then the processor is let go and its decisions counted as they commit
   (its metrics endpoint), then the projector and the events it writes;
5. sealing and opening one memo, and one Ed25519 signature, on this machine, in process.
"""

import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bench import stack
from bench.command_api import Ledger
from common.auth import issue_token
from common.keyring import LocalKeyring, seal, unseal
from common.settings import asyncpg_dsn, load
from ledgerline import local
from ledgerline.stack.kafka import THROUGHPUT_JVM_OPTS
from ledgerline.stack.ports import free_port
from processor.chain import Signer

SECRET = "bench-secret-" + "s" * 40
SYMBOL = "BENCHSEC"
WALLETS = 100
MEMO = "invoice 2026-0042, rent for December"
WARMUP_SECONDS = 20.0
APPEND_RATE, E2E_RATE = 200.0, 100.0
RUN_SECONDS = 3.0
ROUNDS = 3  # of each step on each profile, alternating; the table shows each figure's median
CONNECTIONS = 64
BACKLOG_SECONDS = 8.0
#: The processor's session while the bench holds it stopped (SIGSTOP) to build a backlog.
PROCESSOR_SESSION_MS = "60000"

#: The brief's table ("default" -> "secure audit-ready"), cited beside the figures measured here.
BRIEF = {"append_p50": (14.2, 18.5), "encrypt": (None, 0.8), "writes": (1200.0, 1150.0)}


def _wallet(i: int) -> str:
    return f"sec-w{i:03d}"


@contextlib.contextmanager
def _profile(name: str, secure: bool) -> Iterator[stack.Bench]:
    """One stack and its five processes; stopped on the way out."""
    cache = Path(os.environ.get("LEDGERLINE_CACHE") or local.cache_dir(os.environ))
    home = Path(tempfile.mkdtemp(prefix=f"ledgerline-bench-{name}-"))
    base = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP", "DATABASE_URL")}
    base["LEDGERLINE_PG_PORT"] = str(free_port())
    settings = replace(load(base), kafka_bootstrap=f"127.0.0.1:{free_port()}")
    print(f"starting the {name} profile's Kafka and PostgreSQL in {home} …", flush=True)
    infra = local.start_infra(settings, home, cache, base, jvm_opts=THROUGHPUT_JVM_OPTS, secure=secure)
    try:
        settings = replace(settings, database_url=infra.database_url, jwt_secret=SECRET,
                           query_port=free_port(), command_port=free_port(),
                           projector_metrics_port=free_port(), processor_metrics_port=free_port(),
                           compliance_metrics_port=free_port())
        if secure:
            env = local.process_env(settings, infra, SECRET, base, home)  # signed chain, sealed memos
        else:
            env = local.process_env(settings, infra, SECRET, base)  # chain unsigned
            env.pop("LEDGERLINE_KEYRING", None)  # memos in clear
        env["LEDGERLINE_PROCESSOR_SESSION_TIMEOUT_MS"] = PROCESSOR_SESSION_MS
        with stack.serving(stack.Bench(settings, infra, home, env), infra.process_envs()) as bench:
            yield bench
    finally:
        infra.stop()


@dataclass
class _AsyncioApi(stack.Bench):
    """The default stack reached through a second command API of its own, run on asyncio's
    event loop as the secure profile's is (``common.kafka.uvloop_safe``), not uvloop."""

    api: subprocess.Popen[bytes] | None = None

    def pid(self, process: str) -> int:
        if process == "command-api":
            assert self.api is not None
            return self.api.pid
        return super().pid(process)


@contextlib.contextmanager
def _asyncio_api(default: stack.Bench) -> Iterator[_AsyncioApi]:
    port = free_port()
    settings = replace(default.settings, command_port=port)
    api = subprocess.Popen([sys.executable, "-m", "bench.secure", "--asyncio-command-api"],
                           env={**default.env, "LEDGERLINE_COMMAND_PORT": str(port)},
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        stack.wait_up(f"http://127.0.0.1:{port}/readyz", 60)
        yield _AsyncioApi(settings, default.infra, default.home, default.env, default.services, api)
    finally:
        api.terminate()
        api.wait(30)


def _serve_on_asyncio() -> None:
    from command import bootstrap
    from common import logs

    settings = load()
    logs.setup("command-api", settings.log_level)
    bootstrap.uvloop_safe = lambda kafka: False  # type: ignore[attr-defined]
    bootstrap.main(settings)


def _variants() -> list[dict[str, Any]]:
    """A ring of transfers, each sent by its payer, each with a memo."""
    out = []
    for i in range(WALLETS):
        body = {"from": _wallet(i), "to": _wallet((i + 1) % WALLETS), "asset": SYMBOL, "amount": "0.01",
                "memo": MEMO}
        token = issue_token(SECRET, _wallet(i), wallets=[_wallet(i)])
        out.append({"headers": {"Authorization": f"Bearer {token}"}, "body": json.dumps(body)})
    return out


def _spec(bench: stack.Bench, wait: bool, **mode: Any) -> dict[str, Any]:
    headers = {"Content-Type": "application/json", **({"Prefer": "wait=5"} if wait else {})}
    return {"host": "127.0.0.1", "port": bench.settings.command_port, "method": "POST",
            "path": "/v1/transfers", "headers": headers, "variants": _variants(),
            "status": 200 if wait else 202, "expect": '"completed"' if wait else '"accepted"',
            "warmup": 0.5, **mode}


def _load(bench: stack.Bench, ledger: Ledger, spec: dict[str, Any]) -> dict[str, Any]:
    """One run of the load generator (a process of its own), with the command API's CPU time
    per answered request and the generator's own."""
    api = bench.pid("command-api")
    before = stack.cpu_seconds(api)
    out: dict[str, Any] = json.loads(subprocess.run(
        [sys.executable, "-m", "bench.httpload", json.dumps(spec)], check=True, capture_output=True,
        timeout=180).stdout)
    answered = max(out["ok"] + out["warmup_ok"], 1)
    out["server_cpu_us"] = round((stack.cpu_seconds(api) - before) / answered * 1e6)
    out["client_cpu_us"] = round(out["client_cpu_s"] / max(out["ok"], 1) * 1e6)
    ledger.add(out)
    return out


def _fund(bench: stack.Bench, ledger: Ledger) -> None:
    issuer = issue_token(SECRET, "treasury", roles=["issuer"], assets=[SYMBOL])
    url = bench.command_url

    def completed(path: str, body: dict[str, Any]) -> None:
        answer = stack.post(f"{url}{path}", issuer, body)
        if answer.get("status") != "completed":
            raise RuntimeError(f"setting up: {path} answered {answer}")

    completed("/v1/assets", {"symbol": SYMBOL, "name": "Bench dollar", "decimals": 2, "issuer": "treasury"})
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda i: completed(f"/v1/assets/{SYMBOL}/issue",
                                          {"to": _wallet(i), "amount": "1000000.00"}), range(WALLETS)))
    ledger.expected += 1 + WALLETS


def _counter(port: int, name: str) -> float:
    # A worker deciding a large batch answers its metrics endpoint only between batches.
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=60) as answer:
        text = answer.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith((f"{name}{{", f"{name} ")))


def _catch_up(bench: stack.Bench, process: str, port: int, name: str, start: float, target: int,
              limit: float = 180.0) -> dict[str, Any]:
    """Let ``process`` go (SIGCONT) and count ``name`` on its metrics endpoint (``start`` when it
    was stopped) until it has done ``target`` more: in how long from the SIGCONT, and its CPU
    time per record meanwhile."""
    pid = bench.pid(process)
    cpu = stack.cpu_seconds(pid)
    began = time.monotonic()
    os.kill(pid, signal.SIGCONT)
    while True:
        time.sleep(0.02)
        value, now, cpu_end = _counter(port, name), time.monotonic(), stack.cpu_seconds(pid)
        if value - start >= target:
            break
        if now > began + limit:
            raise RuntimeError(f"{process} did {value - start:.0f} of {target} in {limit:.0f} s")
    count = value - start
    return {"count": round(count), "seconds": round(now - began, 2),
            "rate": round(count / max(now - began, 1e-3)),
            "cpu_us": round((cpu_end - cpu) / count * 1e6, 1)}


def _signal(bench: stack.Bench, names: tuple[str, ...], sig: signal.Signals) -> None:
    for name in names:
        os.kill(bench.pid(name), sig)


def _throughput(bench: stack.Bench, ledger: Ledger) -> dict[str, Any]:
    """A backlog of commands built while the processor is stopped (its session outlasts the
    stop: no rebalance); then, the projector and the monitor stopped in turn (briefly: the
    projector's session is 6 s), the processor's catch-up, then the projector's."""
    workers = ("processor", "projector", "compliance")
    decided = ("processor", bench.settings.processor_metrics_port, "ledgerline_processor_commands_total")
    written = ("projector", bench.settings.projector_metrics_port, "ledgerline_projector_events_total")
    # A stopped process's metrics endpoint does not answer: its counters are read before.
    decided_before = _counter(*decided[1:])
    _signal(bench, ("processor",), signal.SIGSTOP)
    try:
        backlog = _load(bench, ledger, _spec(bench, False, mode="closed", connections=CONNECTIONS,
                                             seconds=BACKLOG_SECONDS))
        written_before = _counter(*written[1:])
        _signal(bench, ("projector", "compliance"), signal.SIGSTOP)
        transfers = backlog["ok"] + backlog["warmup_ok"]
        # A transfer is two records decided (InitiateTransfer, the payee's ApplyCredit) and
        # three events written (TransferInitiated, TransferConfirmed, WalletCredited).
        processor = _catch_up(bench, *decided, decided_before, 2 * transfers)
        projector = _catch_up(bench, *written, written_before, 3 * transfers)
    finally:
        _signal(bench, workers, signal.SIGCONT)
    return {"backlog": backlog["ok"] + backlog["warmup_ok"], "processor": processor, "projector": projector}


def _crypto(home: Path) -> dict[str, float]:
    """Sealing and opening a memo as the command API and the projector do (the keyring file holds
    the run's wallets), and one Ed25519 signature as the processor signs a transaction; us each."""
    keys = LocalKeyring(home / "bench-keyring.json")
    wallets = [_wallet(i) for i in range(WALLETS)]
    sealed = [seal(keys, w, MEMO) for w in wallets]  # every wallet has its key
    rounds = 20
    started = time.perf_counter()
    for _ in range(rounds):
        sealed = [seal(keys, w, MEMO) for w in wallets]
    seal_us = (time.perf_counter() - started) / (rounds * WALLETS) * 1e6
    started = time.perf_counter()
    for _ in range(rounds):
        for w, s in zip(wallets, sealed, strict=True):
            assert unseal(keys, w, s) == MEMO
    unseal_us = (time.perf_counter() - started) / (rounds * WALLETS) * 1e6
    signer, message = Signer(Ed25519PrivateKey.generate()), b"x" * 96
    started = time.perf_counter()
    for _ in range(2000):
        signer.sign(message)
    sign_us = (time.perf_counter() - started) / 2000 * 1e6
    return {"seal_us": round(seal_us, 1), "unseal_us": round(unseal_us, 1), "sign_us": round(sign_us, 1)}


_SHOWN = ("rate", "p50_ms", "p99_ms", "failed", "server_cpu_us", "client_cpu_us")


def _measure(benches: dict[str, stack.Bench]) -> dict[str, dict[str, Any]]:
    ledgers = {n: Ledger(asyncpg_dsn(b.settings.database_url)) for n, b in benches.items()}
    out: dict[str, dict[str, Any]] = {n: {} for n in benches}
    for name, bench in benches.items():
        if isinstance(bench, _AsyncioApi):  # the default stack's, through its second API
            ledgers[name] = ledgers["default"]
            _load(bench, ledgers[name], _spec(bench, False, mode="open", rate=E2E_RATE, seconds=5.0))
            continue
        print(f"  {name}: funding {WALLETS} wallets, then {WARMUP_SECONDS:.0f} s of warm-up …", flush=True)
        _fund(bench, ledgers[name])
        _load(bench, ledgers[name], _spec(bench, True, mode="open", rate=E2E_RATE, seconds=WARMUP_SECONDS))
    steps = [("append", False, {"mode": "open", "rate": APPEND_RATE, "seconds": RUN_SECONDS}),
             ("writes", False, {"mode": "closed", "connections": CONNECTIONS, "seconds": RUN_SECONDS}),
             ("e2e", True, {"mode": "open", "rate": E2E_RATE, "seconds": RUN_SECONDS})]
    for step, wait, mode in steps:
        order = [n for n in benches if step != "e2e" or not isinstance(benches[n], _AsyncioApi)]
        runs: dict[str, list[dict[str, Any]]] = {n: [] for n in order}
        for round_ in range(ROUNDS):
            for name in order if round_ % 2 == 0 else order[::-1]:  # ABBA: neither always first
                bench = benches[name]
                ledgers[name].drained(120)
                runs[name].append(_load(bench, ledgers[name], _spec(bench, wait, **mode)))
                print(f"  {name}: {step}, round {round_ + 1}: "
                      f"{json.dumps({k: runs[name][-1].get(k) for k in _SHOWN})}", flush=True)
        for name in order:
            out[name][step] = {k: statistics.median(r[k] for r in runs[name]) for k in _SHOWN}
            out[name][step]["failed"] = sum(r["failed"] for r in runs[name])
            out[name][step]["rounds"] = runs[name]
    for name, bench in benches.items():
        if isinstance(bench, _AsyncioApi):
            continue
        ledgers[name].drained(120)
        print(f"  {name}: a backlog of {BACKLOG_SECONDS:.0f} s of transfers, then the catch-up …", flush=True)
        out[name]["throughput"] = _throughput(bench, ledgers[name])
        print(f"    {json.dumps(out[name]['throughput'])}", flush=True)
        out[name]["load"] = f"{os.getloadavg()[0]:.1f}"
    return out


def _report(r: dict[str, dict[str, Any]], crypto: dict[str, float]) -> None:
    d, s, a = r["default"], r["secure"], r["default_asyncio"]

    def row(label: str, a: float | None, b: float | None, unit: str, brief: tuple[Any, Any] | None = None,
            digits: int = 1) -> str:
        ratio = f"{(b / a - 1) * 100:+.0f} %" if a and b is not None else "—"
        def fmt(v: float | None) -> str:
            return "—" if v is None else f"{v:,.{digits}f}"

        cited = "—"
        if brief is not None:
            cited = f"{fmt(brief[0])} → {fmt(brief[1])}"
            if brief[0] and brief[1]:
                cited += f" ({(brief[1] / brief[0] - 1) * 100:+.0f} %)"
        return f"| {label} | {fmt(a)} {unit} | {fmt(b)} {unit} | {ratio} | {cited} |"

    tp_d, tp_s = d["throughput"], s["throughput"]
    lines = [
        "| figure | default | secure | secure vs default | the brief (default → secure) |",
        "|---|---|---|---|---|",
        row("append latency p50 (202)", d["append"]["p50_ms"], s["append"]["p50_ms"], "ms",
            BRIEF["append_p50"], 2),
        row("append latency p99 (202)", d["append"]["p99_ms"], s["append"]["p99_ms"], "ms", None, 2),
        row("memo sealed + opened, per event", None, (crypto["seal_us"] + crypto["unseal_us"]) / 1000, "ms",
            BRIEF["encrypt"], 3),
        row("accepted writes/s (202, closed loop)", d["writes"]["rate"], s["writes"]["rate"], "/s",
            BRIEF["writes"], 0),
        row("command API CPU per write", d["writes"]["server_cpu_us"], s["writes"]["server_cpu_us"], "µs",
            None, 0),
        row("load generator CPU per write", d["writes"]["client_cpu_us"], s["writes"]["client_cpu_us"], "µs",
            None, 0),
        row("end to end p50 (Prefer: wait)", d["e2e"]["p50_ms"], s["e2e"]["p50_ms"], "ms", None, 1),
        row("end to end p99 (Prefer: wait)", d["e2e"]["p99_ms"], s["e2e"]["p99_ms"], "ms", None, 1),
        row("processor catch-up, commands/s", tp_d["processor"]["rate"], tp_s["processor"]["rate"], "/s",
            None, 0),
        row("projector catch-up, events/s", tp_d["projector"]["rate"], tp_s["projector"]["rate"], "/s",
            None, 0),
        row("processor CPU per command decided", tp_d["processor"]["cpu_us"], tp_s["processor"]["cpu_us"],
            "µs", None, 1),
        row("projector CPU per event written", tp_d["projector"]["cpu_us"], tp_s["projector"]["cpu_us"],
            "µs", None, 1),
    ]
    failed = {n: {k: v["failed"] for k, v in p.items() if isinstance(v, dict) and "failed" in v}
              for n, p in r.items()}
    ranges = {n: {k: [x["p50_ms"] for x in p[k]["rounds"]] for k in ("append", "e2e") if k in p}
              for n, p in r.items()}
    print(f"""
Default profile beside secure profile, one run, {os.cpu_count()} cores shared by both stacks (each a
broker, a PostgreSQL and five processes) and the load generator; each step ran on one stack and
then on the other, in rounds. Transfers between {WALLETS} funded wallets, each with a memo.

{chr(10).join(lines)}

  append: open loop at {APPEND_RATE:,.0f}/s, {RUN_SECONDS:.0f} s a round; writes: closed loop,
  {CONNECTIONS} connections, {RUN_SECONDS:.0f} s a round; end to end: open loop at {E2E_RATE:,.0f}/s
  with Prefer: wait=5 (answered once the views show the transfer completed).
  Load generator CPU: its own process's, per answered request.
  Catch-up: a backlog of {tp_d['backlog']:,} / {tp_s['backlog']:,} transfers (default / secure)
  accepted while the processor was stopped, then caught up by it and by the projector in turn
  (each timed from its SIGCONT); the processor's figure counts every record it decided
  (the transfers and their ApplyCredit follow-ups:
  {tp_d['processor']['count']:,} / {tp_s['processor']['count']:,} in
  {tp_d['processor']['seconds']} / {tp_s['processor']['seconds']} s), the projector's every
  event it wrote ({tp_d['projector']['count']:,} / {tp_s['projector']['count']:,} in
  {tp_d['projector']['seconds']} / {tp_s['projector']['seconds']} s).
  Memo, in process: sealed {crypto['seal_us']} µs (the command API: the wallet's key from the
  keyring file, AES-GCM), opened {crypto['unseal_us']} µs (the projector); one Ed25519
  signature {crypto['sign_us']} µs (the processor signs once per partition per transaction).
  The default profile's command API on asyncio's event loop, as the secure profile runs it (a
  second API process on the default stack): append p50/p99 {a['append']['p50_ms']}/{a['append']['p99_ms']} ms,
  {a['writes']['rate']:,.0f} writes/s at {a['writes']['server_cpu_us']} µs of CPU each (uvloop:
  {d['writes']['server_cpu_us']} µs, the secure profile: {s['writes']['server_cpu_us']} µs).
  Medians of {ROUNDS} rounds per step and profile, taken in turn (ABBA); p50 ms of each round:
  {ranges}.
  Answers not as expected, per step: {failed}.
  Load average after: default {d['load']}, secure {s['load']}.""")


def main() -> None:
    with contextlib.ExitStack() as stacks:
        default = stacks.enter_context(_profile("default", secure=False))
        benches = {"default": default, "secure": stacks.enter_context(_profile("secure", secure=True)),
                   "default_asyncio": stacks.enter_context(_asyncio_api(default))}
        results = _measure(benches)
        crypto = _crypto(benches["secure"].home)
        _report(results, crypto)
        raw = benches["secure"].home / "results.json"
        raw.write_text(json.dumps({"profiles": results, "crypto": crypto}, indent=1))
        print(f"raw figures: {raw}")


if __name__ == "__main__":
    if sys.argv[1:] == ["--asyncio-command-api"]:
        _serve_on_asyncio()
    else:
        main()
