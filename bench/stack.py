"""What every benchmark starts: a Kafka broker (full JIT) and a PostgreSQL on free ports, topics
created and schema migrated, and, for the end-to-end ones, the four processes. Everything is
stopped on the way out, whatever happened."""

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from ledgerline import local
from ledgerline.settings import Settings, load
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
          keep: bool = True) -> Iterator[Bench]:
    """The broker and the database, in a scratch folder (removed afterwards unless ``keep``)."""
    cache = Path(os.environ.get("LEDGERLINE_CACHE") or local.cache_dir(os.environ))
    home = Path(tempfile.mkdtemp(prefix=f"ledgerline-bench-{name}-"))
    env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP", "DATABASE_URL")}
    env["LEDGERLINE_PG_PORT"] = str(free_port())
    settings = replace(load(env), kafka_bootstrap=f"127.0.0.1:{free_port()}")
    if partitions is not None:
        settings = replace(settings, partitions=partitions)
    print(f"starting Kafka and PostgreSQL in {home} …", flush=True)
    started = local.start_infra(settings, home, cache, env, jvm_opts=THROUGHPUT_JVM_OPTS)
    try:
        settings = replace(settings, database_url=started.database_url, jwt_secret=secret,
                           query_port=free_port(), command_port=free_port(),
                           projector_metrics_port=free_port(), processor_metrics_port=free_port())
        yield Bench(settings, started, home, local.process_env(settings, started, secret, env))
    finally:
        started.stop()
        if not keep:
            shutil.rmtree(home, ignore_errors=True)


@contextlib.contextmanager
def full(name: str, secret: str) -> Iterator[Bench]:
    """:func:`infra` and the four processes, both APIs ready."""
    with infra(name, secret) as bench:
        bench.services = local.Services(bench.env, bench.home / "logs")
        print("starting the processes …", flush=True)
        try:
            bench.services.start()
            bench.services.wait_http(f"{bench.command_url}/readyz", "command-api")
            bench.services.wait_http(f"http://127.0.0.1:{bench.settings.query_port}/readyz", "query-api")
            yield bench
        finally:
            bench.services.stop()
