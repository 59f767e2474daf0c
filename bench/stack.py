"""What every benchmark starts: a Kafka broker (full JIT) and a PostgreSQL on free ports, topics
created and schema migrated, and, for the end-to-end ones, the four processes. Everything is
stopped on the way out, whatever happened."""

import contextlib
import json
import os
import shutil
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from common.settings import Settings, load
from ledgerline import local
from ledgerline.stack.kafka import THROUGHPUT_JVM_OPTS
from ledgerline.stack.ports import free_port


@dataclass
class Bench:
    settings: Settings
    infra: local.Infra
    home: Path
    env: dict[str, str]  # for the processes and any server the benchmark starts beside them
    services: local.Services | None = None

    @property
    def command_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.command_port}"

    def pid(self, process: str) -> int:
        assert self.services is not None
        return self.services.children[process].pid


@contextlib.contextmanager
def infra(name: str, secret: str = "bench-secret-" + "x" * 40, *, partitions: int | None = None,
          keep: bool = True, jvm_opts: Sequence[str] = THROUGHPUT_JVM_OPTS) -> Iterator[Bench]:
    """The broker and the database, in a scratch folder (removed afterwards unless ``keep``).
    ``jvm_opts``: the broker's JVM; steady-state options unless told (``bench.live`` runs
    ``make up``'s)."""
    cache = Path(os.environ.get("LEDGERLINE_CACHE") or local.cache_dir(os.environ))
    home = Path(tempfile.mkdtemp(prefix=f"ledgerline-bench-{name}-"))
    env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP", "DATABASE_URL")}
    env["LEDGERLINE_PG_PORT"] = str(free_port())
    settings = replace(load(env), kafka_bootstrap=f"127.0.0.1:{free_port()}")
    if partitions is not None:
        settings = replace(settings, partitions=partitions)
    print(f"starting Kafka and PostgreSQL in {home} …", flush=True)
    started = local.start_infra(settings, home, cache, env, jvm_opts=jvm_opts)
    try:
        settings = replace(settings, database_url=started.database_url, jwt_secret=secret,
                           query_port=free_port(), command_port=free_port(),
                           projector_metrics_port=free_port(), processor_metrics_port=free_port())
        yield Bench(settings, started, home, local.process_env(settings, started, secret, env, home))
    finally:
        started.stop()
        if not keep:
            shutil.rmtree(home, ignore_errors=True)


@contextlib.contextmanager
def full(name: str, secret: str, *, jvm_opts: Sequence[str] = THROUGHPUT_JVM_OPTS) -> Iterator[Bench]:
    """:func:`infra` and the four processes, both APIs ready."""
    with infra(name, secret, jvm_opts=jvm_opts) as bench:
        print("starting the processes …", flush=True)
        with serving(bench) as served:
            yield served


@contextlib.contextmanager
def serving(bench: Bench, overlays: dict[str, dict[str, str]] | None = None) -> Iterator[Bench]:
    """``bench``'s processes started (``overlays``: per-process environment, as
    ``local.Services`` takes it), both APIs ready; stopped afterwards."""
    bench.services = local.Services(bench.env, bench.home / "logs", overlays=overlays or {})
    try:
        bench.services.start()
        bench.services.wait_http(f"{bench.command_url}/readyz", "command-api")
        bench.services.wait_http(f"http://127.0.0.1:{bench.settings.query_port}/readyz", "query-api")
        yield bench
    finally:
        bench.services.stop()


def _cpu(stat: Path) -> float:
    """User + system CPU seconds from a /proc ``stat`` file (a process's or a thread's); 0 if it
    is gone."""
    try:
        fields = stat.read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used, from /proc; 0 if it is gone."""
    return _cpu(Path(f"/proc/{pid}/stat"))


def jit_seconds(pid: int) -> float:
    """CPU time the JVM ``pid``'s JIT compiler threads have used: a broker is warm once they
    stop spending."""
    total = 0.0
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            compiler = (task / "comm").read_text().startswith(("C1 CompilerThre", "C2 CompilerThre"))
        except OSError:
            continue
        if compiler:
            total += _cpu(task / "stat")
    return total


def post(url: str, token: str, body: dict[str, Any]) -> dict[str, Any]:
    """A command with ``Prefer: wait``; its answer."""
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST", headers={
        "Content-Type": "application/json", "Authorization": f"Bearer {token}", "Prefer": "wait=10"})
    with urllib.request.urlopen(request, timeout=15) as answer:
        return json.loads(answer.read())  # type: ignore[no-any-return]


def wait_up(url: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


def server_kind() -> str:
    """What uvicorn serves with here: its HTTP parser and event loop."""
    try:
        import httptools  # noqa: F401
        http = "httptools"
    except ImportError:
        http = "h11"
    try:
        import uvloop  # noqa: F401
        loop = "uvloop"
    except ImportError:
        loop = "asyncio loop"
    return f"{http}, {loop}"
