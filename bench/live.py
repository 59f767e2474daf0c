"""The live path, open loop, on the stack ``make up`` starts (its broker JVM options and process
settings), beside its floors and beside an earlier version of the code, all in the same run.

For each version (``--against DIR``, a ``git worktree`` of an earlier commit, first; then this
checkout) a stack of its own is started (``bench.stack``: broker, database, the four processes;
the earlier version's processes run from its checkout), wallets are funded, and after a warm-up
it measures, with the open-loop generator of ``bench.httpload`` in its own process:

* 100 transfers/s offered with ``Prefer: wait``: end-to-end p50/p99 (request -> the read model
  shows the transfer completed), and the CPU every process of the stack spent per completed
  transfer (processor, projector, both APIs, compliance, broker, PostgreSQL; from /proc), and the
  load generator's own CPU per request;
* 100/s and 1,200/s without waiting: the ``202``'s p50;
* rising rates with ``Prefer: wait`` (1,200/s among them): whether the pipeline keeps up (every
  transfer answered completed, none refused for want of a connection), e2e p99, and the highest
  rate held with p99 <= 500 ms;
* the processor's commands per transaction at each rate (its metrics): group commit at work;
* floors (``bench.command_floor``) on the same stack once idle: the append, one Kafka
  transaction, a PostgreSQL commit heard by a listener.

    python -m bench.live [--against DIR] [--this-first] [--seconds 8]

About six minutes per version on a 2-core machine (at least a minute of it warming up).
"""

import argparse
import asyncio
import json
import os
import re
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import command_floor, stack
from bench.command_api import SECRET, Ledger, Sampler, _fund, _spec, _variants
from bench.command_api import _measured as measured_api
from common.settings import asyncpg_dsn
from ledgerline.stack.kafka import STARTUP_JVM_OPTS, THROUGHPUT_JVM_OPTS

LIGHT, HIGH = 100.0, 1200.0
RAMP = (200.0, 400.0, 800.0, 1200.0, 1600.0, 2000.0)
HELD_P99_MS = 500.0
WARMUP_RATE, WARMUP_ROUND, WARMUP_MAX, WARM_JIT = 300.0, 10.0, 90.0, 0.05
#: Every version gets at least this much load before it is measured, so all are measured with
#: the same history: a wallet's snapshot grows with what it did (its last 256 command ids, its
#: debits of the last 24 hours), up to ~16 KB written per transaction, and a version that met
#: its JIT threshold sooner would otherwise be measured with smaller snapshots.
WARMUP_MIN = 60.0


def _tree(pid: int) -> list[int]:
    """``pid``'s descendants (children first found by their parent in /proc)."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _kind(pid: int, names: dict[int, str]) -> str:
    if pid in names:
        return names[pid]
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "gone"
    if "java" in cmd.split(" ", 1)[0]:
        return "broker"
    if "postgres" in cmd:
        return "postgres"
    if "bench.httpload" in cmd:
        return "load generator"
    return "other"


def cpu_by_process(names: dict[int, str]) -> dict[str, float]:
    """CPU seconds used so far by each kind of process this benchmark started."""
    out: dict[str, float] = {}
    for pid in _tree(os.getpid()):
        kind = _kind(pid, names)
        out[kind] = out.get(kind, 0.0) + stack.cpu_seconds(pid)
    return out


def batch_records(port: int) -> tuple[float, float, float]:
    """The processor's (commands, transactions, seconds in transactions) so far, from its
    metrics."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            text = answer.read().decode()
    except OSError:
        return 0.0, 0.0, 0.0

    def value(name: str) -> float:
        found = re.search(rf"^ledgerline_processor_{name} (\S+)$", text, re.M)
        return float(found.group(1)) if found else 0.0

    return (value("batch_records_sum"), value("batch_records_count"),
            value("transaction_seconds_sum"))


class Version:
    def __init__(self, bench: stack.Bench, ledger: Ledger) -> None:
        self.bench, self.ledger = bench, ledger
        self.variants = _variants(SECRET)
        self.port = bench.settings.command_port
        self.names = {bench.pid(n): n for n in ("command-api", "processor", "projector", "query-api",
                                                "compliance")
                      if n in (bench.services.children if bench.services else {})}

    def run(self, rate: float, seconds: float, wait: bool, sample: bool = False) -> dict[str, Any]:
        self.ledger.drained()
        settings = self.bench.settings
        sampler = Sampler(self.port, settings.query_port, SECRET, settings) if sample else None
        cpu, batches = cpu_by_process(self.names), batch_records(settings.processor_metrics_port)
        out = measured_api(_spec(self.port, self.variants, wait, mode="open", rate=rate,
                                 seconds=seconds, warmup=0.3), self.bench.pid("command-api"), sampler)
        self.ledger.add(out)
        out["drain_s"] = self.ledger.drained(120.0)  # the pipeline finishes what it was given
        after = cpu_by_process(self.names)
        out["cpu_s"] = {k: round(after.get(k, 0.0) - cpu.get(k, 0.0), 3) for k in after}
        done = batch_records(self.bench.settings.processor_metrics_port)
        commands, transactions = done[0] - batches[0], done[1] - batches[1]
        out["per_txn"] = round(commands / transactions, 2) if transactions else None
        out["txn_ms"] = round((done[2] - batches[2]) / transactions * 1000, 1) if transactions else None
        out["transactions"] = transactions
        out["kept_up"] = (out["failed"] == 0 and out["ok"] == out["sent"])
        out["client_cpu_us"] = round(out["client_cpu_s"] / max(out["sent"], 1) * 1e6)
        print(f"    {rate:>6,.0f}/s {'wait' if wait else '202 '}: p50 {out['p50_ms']} "
              f"p99 {out['p99_ms']} ms, {out['ok']}/{out['sent']} ok, {out['per_txn']} commands "
              f"per transaction of {out['txn_ms']} ms, drained in {out['drain_s']} s", flush=True)
        return out

    def warm_up(self) -> str:
        broker = self.bench.infra.broker.pid if self.bench.infra.broker else None
        spent = 0.0
        while True:
            before, began = stack.jit_seconds(broker) if broker else 0.0, time.monotonic()
            self.run(WARMUP_RATE, WARMUP_ROUND, True)
            spent += WARMUP_ROUND
            share = (stack.jit_seconds(broker) - before) / (time.monotonic() - began) if broker else 0.0
            if (share < WARM_JIT and spent >= WARMUP_MIN) or spent >= WARMUP_MAX:
                return (f"{spent:.0f} s at {WARMUP_RATE:,.0f}/s, the broker's JIT then at "
                        f"{share:.0%} of a core")


def measure(label: str, tree: Path, seconds: float, jvm_opts: Sequence[str]) -> dict[str, Any]:
    here = Path.cwd()
    os.chdir(tree)  # ``python -m`` puts the working folder first on the children's path
    os.environ["PYTHONPATH"] = str(tree)
    try:
        with stack.full(f"live-{label}", SECRET, jvm_opts=jvm_opts) as bench:
            ledger = Ledger(asyncpg_dsn(bench.settings.database_url))
            _fund(bench.command_url, SECRET, ledger)
            version = Version(bench, ledger)
            out: dict[str, Any] = {"label": label}
            print(f"  {label}: warming up …", flush=True)
            out["warmup"] = version.warm_up()
            out["light"] = version.run(LIGHT, 2 * seconds, True, sample=True)
            out["light_202"] = version.run(LIGHT, seconds / 2, False)
            out["high_202"] = version.run(HIGH, seconds / 2, False)
            out["ramp"] = {}
            for rate in RAMP:
                r = out["ramp"][rate] = version.run(rate, seconds, True)
                if rate >= HIGH and (not r["kept_up"] or (r["p99_ms"] or 1e9) > HELD_P99_MS):
                    break
            out["floors"] = asyncio.run(command_floor.transfer_path(
                bench.settings.kafka_bootstrap, asyncpg_dsn(bench.settings.database_url)))
            out["load"] = f"{os.getloadavg()[0]:.1f}"
            return out
    finally:
        os.chdir(here)
        os.environ.pop("PYTHONPATH", None)


def _held(r: dict[str, Any]) -> str:
    held = [rate for rate, x in r["ramp"].items() if x["kept_up"] and (x["p99_ms"] or 1e9) <= HELD_P99_MS]
    return f"{max(held):,.0f}/s" if held else "none"


def report(results: list[dict[str, Any]]) -> None:
    def cpu(r: dict[str, Any]) -> tuple[float, str]:
        light = r["light"]
        parts = {k: v for k, v in light["cpu_s"].items() if k not in ("load generator", "gone", "other")}
        done = max(light["ok"], 1)
        per = {k: v / done * 1000 for k, v in parts.items()}
        return sum(per.values()), ", ".join(f"{k} {v:.2f}" for k, v in sorted(per.items()))

    print("\nThe live path, open loop, make up's broker JVM; floors measured on the same stack once idle")
    for r in results:
        light, high = r["light"], r["ramp"].get(HIGH)
        total, parts = cpu(r)
        f, g = r["floors"], light["graphql"]
        floor = f["append"]["p50_ms"] + f["transaction"]["p50_ms"] + f["commit"]["p50_ms"]
        ramp = ", ".join(f"{rate:,.0f}/s {x['p99_ms']} ms{'' if x['kept_up'] else ' (fell behind)'}"
                         for rate, x in r["ramp"].items())
        print("\n".join([
            f"\n  {r['label']} (load average after: {r['load']}; warm-up {r['warmup']})",
            f"    100/s   e2e p50/p99 {light['p50_ms']}/{light['p99_ms']} ms; "
            f"202 p50 {r['light_202']['p50_ms']} ms;",
            f"            {light['per_txn']} commands per processor transaction, {light['txn_ms']} ms each",
            f"    1,200/s {'kept up' if high and high['kept_up'] else 'did NOT keep up'}: "
            f"e2e p99 {high['p99_ms'] if high else '-'} ms, {high['ok'] if high else 0}/"
            f"{high['sent'] if high else 0} completed, {high['per_txn'] if high else '-'} commands "
            f"per transaction; 202 p50 {r['high_202']['p50_ms']} ms",
            f"    highest rate held with e2e p99 <= {HELD_P99_MS:.0f} ms: {_held(r)} ({ramp})",
            f"    where a sampled transfer's time goes at 100/s, p50 ms from the request: appended "
            f"{g['appended_p50_ms']}, debit and credit written {g['debit_p50_ms']}/{g['credit_p50_ms']}, "
            f"projector's transaction begun {g['projected_p50_ms']}, answered {g['answer_p50_ms']} "
            f"(n={g['n']})",
            f"    CPU per completed transfer at 100/s, all processes: {total:.2f} ms ({parts})",
            f"    load generator's own CPU: {light['client_cpu_us']} us per request at 100/s, "
            f"{r['high_202']['client_cpu_us']} at 1,200/s",
            f"    floors p50/p99 ms: append {f['append']['p50_ms']}/{f['append']['p99_ms']}, one "
            f"transaction {f['transaction']['p50_ms']}/{f['transaction']['p99_ms']}, PostgreSQL commit "
            f"heard {f['commit']['p50_ms']}/{f['commit']['p99_ms']}; together {floor:.1f} ms p50",
        ]))
    if len(results) == 2:
        before, after = cpu(results[0])[0], cpu(results[1])[0]
        print(f"\n  CPU per transfer: {after:.2f} ms against {before:.2f} ms ({after / before:.2f}x)")
    print("\nTargets: 100/s p50 <= 25 ms, p99 <= 80 ms; 1,200/s kept up with p99 <= 250 ms, "
          "202 p50 <= 14.2 ms; CPU per transfer <= 1/3 of the earlier version's.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", type=Path, help="an earlier checkout, measured first in the same run")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each measured rate")
    parser.add_argument("--jvm", choices=("steady", "quick-start"), default="steady",
                        help="this version's broker JVM: make up's steady-state one (the default) "
                             "or the tests' quick-start one")
    parser.add_argument("--this-first", action="store_true",
                        help="measure this version first (the machine's load drifts: run both orders)")
    args = parser.parse_args()
    jvm = THROUGHPUT_JVM_OPTS if args.jvm == "steady" else STARTUP_JVM_OPTS
    versions = [(f"this version ({args.jvm} JVM)", Path(__file__).resolve().parent.parent, jvm)]
    if args.against:
        # The earlier version's make up started the broker with the quick-start options.
        before = (f"before ({args.against.name})", args.against.resolve(), STARTUP_JVM_OPTS)
        versions.insert(len(versions) if args.this_first else 0, before)
    results = [measure(label, tree, args.seconds, opts) for label, tree, opts in versions]
    if args.this_first and len(results) == 2:
        results.reverse()  # the report reads before, then this version
    report(results)
    out = Path(os.environ.get("TMPDIR", "/tmp")) / f"ledgerline-live-{int(time.time())}.json"
    out.write_text(json.dumps(results, indent=1, default=str))
    print(f"raw figures: {out}")


if __name__ == "__main__":
    main()
