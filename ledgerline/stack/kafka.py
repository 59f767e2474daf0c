"""A real single-node Apache Kafka broker (KRaft, combined broker+controller), run with ``java``.

The jars are resolved once from Maven Central with ``mvn`` (:func:`ensure_kafka_jars`) and
cached; :class:`KafkaBroker` writes its configuration into a data folder, formats the storage on
first use and runs ``kafka.Kafka`` as a child process in its own session.
"""

import asyncio
import base64
import contextlib
import functools
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from common.kafka import Kafka, KafkaSecurity, KafkaTarget, client_options
from ledgerline.stack._aio import run_sync
from ledgerline.stack.child import ChildServer
from ledgerline.stack.errors import StackError, tail_file, tail_text
from ledgerline.stack.ports import accepts_connections, free_port, port_in_use
from ledgerline.stack.tls import write_private

KAFKA_VERSION = "3.9.1"
SCALA_VERSION = "2.13"

log = logging.getLogger("ledgerline.stack")

_POM_RESOURCE = "kafka-pom.xml"
_COMPLETE_MARKER = "COMPLETE"
_BROKER_JAR = f"kafka_{SCALA_VERSION}-{KAFKA_VERSION}.jar"
_MVN_TIMEOUT = 900.0

#: Quick to start and small: the C1 compiler only. For tests, whose brokers live for minutes:
#: 2.6 s to ready against 3.3 s for the steady-state options below, 2.4 s of CPU against 3.9 s,
#: 189 MB resident against 260 MB (2-core machine).
STARTUP_JVM_OPTS: tuple[str, ...] = (
    "-Xms256m",
    "-Xmx512m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)

#: Full tiered compilation (C2) and a larger heap: slower to start, faster when busy. ``make up``
#: and the benchmarks. Measured with ``bench.live`` at 100 transfers/s on a 2-core machine
#: (docs/processor.md, "The broker's JVM"): the broker's CPU per request is what C2 lowers, and
#: every hop of a transfer waits on the broker, so end-to-end latency falls with it.
THROUGHPUT_JVM_OPTS: tuple[str, ...] = (
    "-Xms1g",
    "-Xmx1g",
    "-XX:+UseParallelGC",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)

_LOG4J_PROPERTIES = """\
# Written by ledgerline.stack.kafka on every start.
log4j.rootLogger=WARN, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.server.KafkaRaftServer=INFO
# A few lines per start that say where a restart's time goes (bench/broker_restart.py).
log4j.logger.kafka.log.LogManager=INFO
log4j.logger.kafka.server.BrokerLifecycleManager=INFO
"""


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        candidate = Path(java_home) / "bin" / "java"
        if os.access(candidate, os.X_OK):
            return str(candidate)
    java = shutil.which("java")
    if java is None:
        raise StackError(
            "java was not found (neither $JAVA_HOME/bin/java nor on PATH): the local Kafka "
            "broker is Apache Kafka's jars run with a Java 17+ runtime; install one"
        )
    return java


def _mvn() -> str:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise StackError(
            "mvn was not found on PATH: Apache Maven is needed once to resolve the Kafka "
            "broker's jars from Maven Central; install it (or set KAFKA_BOOTSTRAP to use an "
            "existing broker)"
        )
    return mvn


def ensure_kafka_jars(cache_dir: Path) -> Path:
    """The folder of Apache Kafka's broker jars, resolved from Maven Central on first use.

    Returns ``cache_dir/kafka-<KAFKA_VERSION>/libs``. A ``COMPLETE`` marker next to ``libs``
    makes later calls return at once without running ``mvn``. The download goes into a temporary
    folder that is renamed into place only when complete, so an interrupted run is never reused.
    """
    cache_dir = Path(cache_dir).absolute()
    home = cache_dir / f"kafka-{KAFKA_VERSION}"
    libs = home / "libs"
    if (home / _COMPLETE_MARKER).is_file() and libs.is_dir():
        return libs

    _java()
    mvn = _mvn()
    cache_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_downloads(cache_dir)
    log.info(
        "resolving Apache Kafka %s jars from Maven Central (first run only, ~50 MB)...",
        KAFKA_VERSION,
    )
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix=f".kafka-{KAFKA_VERSION}-", dir=cache_dir))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache is for everyone who can read it
        pom = tmp / "pom.xml"
        pom.write_bytes(resources.files(__package__).joinpath(_POM_RESOURCE).read_bytes())
        command = [
            mvn,
            "-B",
            "-q",
            "-Dstyle.color=never",
            "-f",
            str(pom),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={tmp / 'libs'}",
            f"-Dkafka.version={KAFKA_VERSION}",
        ]
        try:
            done = subprocess.run(
                command,
                cwd=tmp,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
                timeout=_MVN_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            output = exc.output if isinstance(exc.output, str) else ""
            raise StackError(
                f"mvn did not finish resolving the Kafka jars within {_MVN_TIMEOUT:.0f} s; "
                f"last output:\n{tail_text(output)}"
            ) from None
        if done.returncode != 0:
            raise StackError(
                f"mvn failed (exit code {done.returncode}) resolving "
                f"org.apache.kafka:kafka_{SCALA_VERSION}:{KAFKA_VERSION} from Maven Central; "
                f"last output:\n{tail_text(done.stdout) or '(no output)'}"
            )
        jars = sorted(p.name for p in (tmp / "libs").glob("*.jar"))
        if _BROKER_JAR not in jars:
            raise StackError(
                f"mvn succeeded but {_BROKER_JAR} is not among the {len(jars)} resolved jars; "
                f"last output:\n{tail_text(done.stdout) or '(no output)'}"
            )
        (tmp / _COMPLETE_MARKER).write_text("\n".join(jars) + "\n", encoding="utf-8")
        if home.exists() and not (home / _COMPLETE_MARKER).is_file():
            shutil.rmtree(home)  # a leftover that never completed
        try:
            tmp.rename(home)
        except OSError:
            # Another process finished first: use its copy if it is complete.
            if not (home / _COMPLETE_MARKER).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info(
        "resolved %d Kafka jars into %s in %.1f s",
        len(list(libs.glob("*.jar"))),
        libs,
        time.monotonic() - started,
    )
    return libs


def _remove_stale_downloads(cache_dir: Path) -> None:
    """Delete temporary folders of downloads that were killed (older than any live one can be)."""
    cutoff = time.time() - _MVN_TIMEOUT - 60
    for leftover in cache_dir.glob(f".kafka-{KAFKA_VERSION}-*"):
        with contextlib.suppress(OSError):
            if leftover.is_dir() and leftover.stat().st_mtime < cutoff:
                shutil.rmtree(leftover, ignore_errors=True)


def _new_cluster_id() -> str:
    """22 characters of URL-safe base64 of a random UUID, like Kafka's own; never starts with -."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode("ascii").rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _prop(value: str | Path) -> str:
    """A value for a Java properties file (backslashes are escapes there)."""
    return str(value).replace("\\", "\\\\")


async def _probe(bootstrap: KafkaTarget, limit: float) -> bool:
    """True when the broker answers a metadata request listing itself and a controller."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(
        **client_options(bootstrap),
        client_id="ledgerline-stack-probe",
        request_timeout_ms=max(1000, int(limit * 1000)),
    )
    try:
        async with asyncio.timeout(limit):
            await admin.start()
            cluster = await admin.describe_cluster()
    except Exception as exc:
        log.debug("broker %s not ready yet: %r", bootstrap, exc)
        return False
    finally:
        with contextlib.suppress(Exception):
            await admin.close()
    brokers = cluster.get("brokers") or []
    controller = cluster.get("controller_id", -1)
    return len(brokers) > 0 and controller is not None and controller >= 0


SCRAM = "SCRAM-SHA-512"


def _argfile_quoted(argument: str) -> str:
    """One argument of a Java launcher argument file (``java @file``), quoted whole."""
    return '"' + argument.replace("\\", "\\\\").replace('"', '\\"') + '"'


#: The broker's own principal on the controller listener (mutual TLS, the certificate's subject).
BROKER_PRINCIPAL = "CN=ledgerline-broker"


@dataclass(frozen=True)
class BrokerSecurity:
    """The secure profile of the broker: TLS and SASL/SCRAM-SHA-512 on the client listener,
    mutual TLS on the controller listener, ACLs enforced by KRaft's StandardAuthorizer.

    ``keystore``: PKCS#12 with the broker's key and certificate (subject :data:`BROKER_PRINCIPAL`);
    ``truststore``: the CA's certificate (PEM); ``users``: SCRAM user -> password, created when
    the storage is formatted; ``admin_user`` (among them) is the super user.
    """

    keystore: Path
    keystore_password: str
    truststore: Path
    admin_user: str
    users: Mapping[str, str]

    def client(self, user: str) -> KafkaSecurity:
        """How ``user`` reaches this broker."""
        return KafkaSecurity(protocol="SASL_SSL", sasl_mechanism=SCRAM, sasl_username=user,
                             sasl_password=self.users[user], ssl_cafile=str(self.truststore))


class KafkaBroker(ChildServer):
    """One Apache Kafka broker in KRaft combined mode, listening on ``host:port`` only.

    ``data_dir`` holds ``server.properties``, ``log4j.properties``, ``broker.log``, the cluster id,
    the controller port and the log segments (``data_dir/kraft``). Starting again on the same
    folder reuses the data. ``controller_port=None`` picks a free port on first start and keeps
    it in ``data_dir/controller.port`` for later starts. ``jvm_opts`` are the JVM's options
    (:data:`STARTUP_JVM_OPTS` or :data:`THROUGHPUT_JVM_OPTS`).
    """

    def __init__(
        self,
        jars: Path,
        data_dir: Path,
        host: str = "127.0.0.1",
        port: int = 9092,
        controller_port: int | None = None,
        jvm_opts: Sequence[str] = STARTUP_JVM_OPTS,
        security: BrokerSecurity | None = None,
    ) -> None:
        self.security = security
        self.jars = Path(jars).absolute()
        self.jvm_opts = tuple(jvm_opts)
        self.data_dir = Path(data_dir).absolute()
        self.host = host
        self.port = port
        self._requested_controller_port = controller_port
        self.controller_port: int | None = controller_port
        self._proc: subprocess.Popen[bytes] | None = None

    # -- properties ---------------------------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def kafka(self) -> Kafka:
        """The broker as its admin (the super user, in the secure profile) reaches it."""
        if self.security is None:
            return Kafka(self.bootstrap)
        return Kafka(self.bootstrap, self.security.client(self.security.admin_user))

    @property
    def log_path(self) -> Path:
        return self.data_dir / "broker.log"

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "kraft"

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> None:
        """Start the broker and block until it serves metadata; StackError if it does not."""
        if self.is_running():
            return
        java = _java()
        if not (self.jars / _BROKER_JAR).is_file():
            raise StackError(
                f"{_BROKER_JAR} is not in {self.jars}; call ensure_kafka_jars() to resolve the jars"
            )
        if port_in_use(self.host, self.port):
            raise StackError(
                f"port {self.port} is in use; set KAFKA_BOOTSTRAP to use an existing broker "
                "or free the port"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.controller_port = self._resolve_controller_port()

        properties = self.data_dir / "server.properties"
        log4j = self.data_dir / "log4j.properties"
        properties.write_text(self._server_properties(), encoding="utf-8")
        properties.chmod(0o600)  # the secure profile's keystore and inter-broker passwords
        log4j.write_text(_LOG4J_PROPERTIES, encoding="utf-8")
        base = [java, *self.jvm_opts, f"-Dlog4j.configuration={log4j.as_uri()}", "-cp"]
        classpath = str(self.jars / "*")

        began = time.monotonic()
        if not (self.log_dir / "meta.properties").is_file():
            self._format(base, classpath, properties)

        with self.log_path.open("ab") as out:
            out.write(f"\n==== ledgerline.stack: starting Kafka {KAFKA_VERSION} ====\n".encode())
            out.flush()
            self._proc = subprocess.Popen(
                [*base, classpath, "kafka.Kafka", str(properties)],
                cwd=self.data_dir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        log.info(
            "starting Kafka broker on %s (pid %d, data in %s)",
            self.bootstrap,
            self._proc.pid,
            self.data_dir,
        )
        try:
            self._wait_ready(timeout, began)
        except BaseException:
            self.kill()
            raise
        log.info("Kafka broker ready on %s in %.1f s", self.bootstrap, time.monotonic() - began)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM (controlled shutdown), then SIGKILL if the JVM has not exited in ``timeout``."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning(
                    "Kafka broker pid %d ignored SIGTERM for %.0f s; killing", proc.pid, timeout
                )
                self.kill()
                return
        log.info("Kafka broker on %s stopped", self.bootstrap)
        self._proc = None

    def __repr__(self) -> str:
        return f"KafkaBroker({self.bootstrap!r}, data_dir={str(self.data_dir)!r}, pid={self.pid})"

    # -- internals ----------------------------------------------------------------------------

    def _resolve_controller_port(self) -> int:
        requested = self._requested_controller_port
        if requested is not None:
            if port_in_use(self.host, requested):
                raise StackError(
                    f"controller port {requested} is in use; free it or choose another"
                )
            return requested
        saved = self.data_dir / "controller.port"
        with contextlib.suppress(OSError, ValueError):
            previous = int(saved.read_text().strip())
            if not port_in_use(self.host, previous):
                return previous
            # A static single voter: the quorum state keeps only the voter id, so moving the
            # controller listener to another port is safe.
            log.warning("controller port %d is taken now; the broker moves to another", previous)
        while (port := free_port(self.host)) == self.port:
            pass
        saved.write_text(f"{port}\n", encoding="utf-8")
        return port

    def _cluster_id(self) -> str:
        path = self.data_dir / "cluster.id"
        with contextlib.suppress(OSError):
            existing = path.read_text().strip()
            if existing:
                return existing
        cluster_id = _new_cluster_id()
        path.write_text(cluster_id + "\n", encoding="utf-8")
        return cluster_id

    def _server_properties(self) -> str:
        host, port, cport = self.host, self.port, self.controller_port
        settings = {
            # KRaft combined mode: one process is the only broker and the only controller.
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{host}:{cport}",
            "listeners": f"PLAINTEXT://{host}:{port},CONTROLLER://{host}:{cport}",
            "advertised.listeners": f"PLAINTEXT://{host}:{port}",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": _prop(self.log_dir),
            # One broker: without these, groups and transactions never find a coordinator.
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "min.insync.replicas": "1",
            "default.replication.factor": "1",
            # Faster first use of groups and transactions.
            "offsets.topic.num.partitions": "3",
            "transaction.state.log.num.partitions": "3",
            "group.initial.rebalance.delay.ms": "0",
            # The default allocates a 128 MiB dedupe buffer at start.
            "log.cleaner.dedupe.buffer.size": "2097152",
            # Topics are created explicitly (ledgerline.stack.topics).
            "auto.create.topics.enable": "false",
            # After a SIGKILL the controller refuses the new incarnation of the broker until the
            # old session expires (DUPLICATE_BROKER_REGISTRATION): the default 9 s session plus
            # registration backoff made a restart after a crash take ~15 s; this makes it ~6 s.
            "broker.heartbeat.interval.ms": "500",
            "broker.session.timeout.ms": "3000",
            # A transaction that outlived its timeout (its producer gone, or the broker away
            # longer than that) is ended within a second of it, not ten: until then it holds
            # back every read_committed reader of its partitions.
            "transaction.abort.timed.out.transaction.cleanup.interval.ms": "1000",
        }
        if self.security is not None:
            settings.update(self._secure_properties())
        lines = ["# Written by ledgerline.stack.kafka on every start; edits are overwritten."]
        lines += [f"{key}={value}" for key, value in settings.items()]
        return "\n".join(lines) + "\n"

    def _secure_properties(self) -> dict[str, str]:
        sec = self.security
        assert sec is not None
        host, port, cport = self.host, self.port, self.controller_port
        admin_password = sec.users[sec.admin_user].replace("\\", "\\\\").replace('"', '\\"')
        return {
            "listeners": f"SASL_SSL://{host}:{port},CONTROLLER://{host}:{cport}",
            "advertised.listeners": f"SASL_SSL://{host}:{port}",
            "listener.security.protocol.map": "SASL_SSL:SASL_SSL,CONTROLLER:SSL",
            "inter.broker.listener.name": "SASL_SSL",
            "sasl.enabled.mechanisms": SCRAM,
            "sasl.mechanism.inter.broker.protocol": SCRAM,
            f"listener.name.sasl_ssl.{SCRAM.lower()}.sasl.jaas.config":
                "org.apache.kafka.common.security.scram.ScramLoginModule required "
                f'username="{sec.admin_user}" password="{admin_password}";',
            # The controller listener admits only the holder of the broker's certificate.
            "listener.name.controller.ssl.client.auth": "required",
            "ssl.keystore.type": "PKCS12",
            "ssl.keystore.location": _prop(sec.keystore),
            "ssl.keystore.password": sec.keystore_password,
            "ssl.key.password": sec.keystore_password,
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": _prop(sec.truststore),
            "ssl.enabled.protocols": "TLSv1.3,TLSv1.2",
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "allow.everyone.if.no.acl.found": "false",
            "super.users": f"User:{sec.admin_user};User:{BROKER_PRINCIPAL}",
        }

    def _scram_arguments(self) -> list[str]:
        if self.security is None:
            return []
        return [arg for user, password in sorted(self.security.users.items())
                for arg in ("--add-scram", f"{SCRAM}=[name={user},password={password}]")]

    def _format(self, base: list[str], classpath: str, properties: Path) -> None:
        cluster_id = self._cluster_id()
        log.info("formatting Kafka storage in %s (cluster id %s)", self.log_dir, cluster_id)
        arguments = [
            "kafka.tools.StorageTool",
            "format",
            "--config",
            str(properties),
            "--cluster-id",
            cluster_id,
            "--ignore-formatted",
            *self._scram_arguments(),
        ]
        # The storage tool takes the SCRAM users' passwords only as arguments, and a command line
        # is anybody's to read (ps, /proc/PID/cmdline): the arguments go in a Java argument file
        # only the owner can read, which the launcher expands, and which is gone afterwards.
        argfile = self.data_dir / "format.args"
        write_private(argfile, "\n".join(_argfile_quoted(a) for a in arguments).encode())
        command = [*base, classpath, f"@{argfile}"]
        try:
            self._run_format(command)
        finally:
            argfile.unlink(missing_ok=True)

    def _run_format(self, command: list[str]) -> None:
        with self.log_path.open("ab") as out:
            out.write(b"\n==== ledgerline.stack: formatting storage ====\n")
            out.flush()
            try:
                code = subprocess.run(
                    command,
                    cwd=self.data_dir,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    timeout=120,
                    check=False,
                ).returncode
            except subprocess.TimeoutExpired:
                code = None
        if code != 0:
            raise StackError(
                f"formatting Kafka storage in {self.log_dir} failed "
                f"({'timed out' if code is None else f'exit code {code}'}); "
                f"last lines of {self.log_path}:\n{tail_file(self.log_path)}"
            )

    def _wait_ready(self, timeout: float, began: float) -> None:
        assert self._proc is not None
        deadline = began + timeout
        while True:
            code = self._proc.poll()
            if code is not None:
                raise StackError(
                    f"the Kafka broker exited with code {code} while starting; "
                    f"last lines of {self.log_path}:\n{tail_file(self.log_path)}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise StackError(
                    f"the Kafka broker on {self.bootstrap} was not ready within {timeout:.0f} s; "
                    f"last lines of {self.log_path}:\n{tail_file(self.log_path)}"
                )
            if accepts_connections(self.host, self.port):
                limit = min(5.0, max(1.0, remaining))
                if run_sync(functools.partial(_probe, self.kafka, limit)):
                    if self._proc.poll() is None:
                        return
                    continue  # exited meanwhile: reported above
            time.sleep(0.2)
