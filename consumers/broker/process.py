"""A real, local Apache Kafka broker for tests, the demo and development.

Why this exists: streamcover is tested against a real broker, never a mock. The broker
runtime comes from Maven Central (``ops/kafka/pom.xml``) into ``~/.cache/streamcover/kafka``,
and :class:`KafkaBroker` runs ONE combined broker+controller (KRaft, no ZooKeeper) on
127.0.0.1 with free ports, a capped heap and a throw-away log directory:

1. fetch the jars if missing (``mvn dependency:copy-dependencies``, idempotent, locked);
2. write ``server.properties`` (and, optionally, a self-signed CA plus a SASL_SSL listener);
3. ``kafka.tools.StorageTool format -t <cluster id> -c server.properties`` (static quorum
   via ``controller.quorum.voters``, so no ``--standalone``);
4. ``java -Xmx512m -cp <jars> kafka.Kafka server.properties``;
5. ready once an admin metadata call (aiokafka) lists the broker;
6. stop with SIGTERM (Kafka's controlled shutdown), SIGKILL after a grace period.

The SASL password never appears on a command line (``ps`` shows those to every user) or in
printed output: the PLAIN JAAS entry sits in ``server.properties`` and the SCRAM users in a
JVM argument file, both written mode 0600, the argument file removed once storage is
formatted; ``broker run`` names a 0600 file holding the password instead of printing it.

This module: :class:`KafkaBroker`, the broker's lifecycle (directories, ports, format,
launch, readiness, stop). What it puts together, one module each: ``server.properties``
(``consumers.broker.properties``), the JVM's command line and class-data-sharing archive
(``consumers.broker.jvm``), loopback ports (``consumers.broker.ports``), owner-only files
(``consumers.broker.private``). Jars: ``consumers.broker.jars``; certificates:
``consumers.broker.certificates``; readiness probe: ``consumers.broker.probe``; the command
line ``streamcover broker run|fetch``: ``consumers.broker.cli``.
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import contextlib
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from pydantic import SecretStr

from consumers.broker.certificates import make_test_certificates
from consumers.broker.errors import BrokerError, run_checked
from consumers.broker.jars import DEFAULT_KAFKA_VERSION, fetch_jars
from consumers.broker.jvm import ClassDataSharing, argfile_line, jvm_command, parent_death_signal
from consumers.broker.ports import BrokerPorts, free_port, port_open
from consumers.broker.private import write_private
from consumers.broker.probe import in_thread, probe_cluster
from consumers.broker.properties import MESSAGE_MAX_BYTES, SASL_MECHANISMS, server_properties
from streamcover.config import KafkaSettings
from streamcover.log import get_logger

# Also imported from here: the port helpers and the properties' constants.
__all__ = [
    "MESSAGE_MAX_BYTES",
    "SASL_MECHANISMS",
    "BrokerPorts",
    "KafkaBroker",
    "free_port",
    "new_cluster_id",
    "write_private",
]

log = get_logger(__name__)


def new_cluster_id() -> str:
    """A KRaft cluster id: a random UUID, base64url without padding (22 chars).

    Like Kafka's own ``Uuid.randomUuid`` it never starts with '-', which the StorageTool's
    argument parser would take for an option.
    """
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


class KafkaBroker:
    """One local KRaft broker+controller; a context manager.

    >>> with KafkaBroker() as broker:
    ...     broker.bootstrap_servers     # '127.0.0.1:<port>'

    With ``sasl_ssl=True`` a second listener speaks SASL (SCRAM-SHA-512, SCRAM-SHA-256, PLAIN)
    over TLS with a freshly generated CA: see :attr:`sasl_ssl_bootstrap_servers`,
    :attr:`ssl_cafile`, :attr:`sasl_username`, :attr:`sasl_password` and
    :meth:`client_settings`.
    """

    host = "127.0.0.1"

    def __init__(
        self,
        *,
        version: str = DEFAULT_KAFKA_VERSION,
        port: int = 0,
        sasl_ssl: bool = False,
        sasl_ssl_port: int = 0,
        sasl_username: str = "streamcover",
        sasl_password: str | None = None,
        heap: str = "512m",
        startup_timeout_s: float = 120.0,
        stop_grace_s: float = 30.0,
        data_dir: Path | None = None,
        keep_data: bool = False,
        cache_dir: Path | None = None,
        extra_properties: Mapping[str, str] | None = None,
        jvm_args: Sequence[str] = (),
        java: str = "java",
        class_data_sharing: bool = True,
    ) -> None:
        self.version = version
        self._requested_port = port
        self.sasl_ssl = sasl_ssl
        self._requested_sasl_port = sasl_ssl_port
        self.sasl_username = sasl_username
        # Alphanumeric: the StorageTool --add-scram syntax and JAAS quoting stay trivial.
        self.sasl_password = sasl_password or secrets.token_hex(16)
        self.heap = heap
        self.startup_timeout_s = startup_timeout_s
        self.stop_grace_s = stop_grace_s
        self._data_dir = data_dir
        self.keep_data = keep_data or data_dir is not None
        self.cache_dir = cache_dir
        self.extra_properties = dict(extra_properties or {})
        self.jvm_args = list(jvm_args)
        self.java = java
        self.class_data_sharing = class_data_sharing
        self.cluster_id = new_cluster_id()

        self.work_dir: Path | None = None
        self.ports: BrokerPorts | None = None
        self.ssl_cafile: Path | None = None
        self.startup_seconds: float | None = None
        self.cluster_info: dict[str, Any] | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_fh: Any = None
        self._own_work_dir = False
        self._cds = ClassDataSharing()

    # ---------------------------------------------------------------- properties

    @property
    def bootstrap_servers(self) -> str:
        """``host:port`` of the PLAINTEXT listener."""
        if self.ports is None:
            raise BrokerError("broker not started")
        return f"{self.host}:{self.ports.plaintext}"

    @property
    def sasl_ssl_bootstrap_servers(self) -> str:
        """``host:port`` of the SASL_SSL listener (``sasl_ssl=True`` only)."""
        if self.ports is None or not self.ports.sasl_ssl:
            raise BrokerError("broker not started with sasl_ssl=True")
        return f"{self.host}:{self.ports.sasl_ssl}"

    @property
    def log_path(self) -> Path:
        """The broker's combined stdout/stderr (log4j2 console appender)."""
        if self.work_dir is None:
            raise BrokerError("broker not started")
        return self.work_dir / "broker.log"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def poll(self) -> int | None:
        """The broker JVM's exit status, or None while it runs (or before start)."""
        return self._proc.poll() if self._proc else None

    def client_settings(
        self, *, secure: bool = False, mechanism: str = "SCRAM-SHA-512", **overrides: Any
    ) -> KafkaSettings:
        """``KafkaSettings`` pointing at this broker (``secure``: via SASL_SSL)."""
        values: dict[str, Any] = {"bootstrap_servers": self.bootstrap_servers}
        if secure:
            values.update(
                bootstrap_servers=self.sasl_ssl_bootstrap_servers,
                security_protocol="SASL_SSL",
                sasl_mechanism=mechanism,
                sasl_username=self.sasl_username,
                sasl_password=SecretStr(self.sasl_password),
                ssl_cafile=self.ssl_cafile,
            )
        values.update(overrides)
        return KafkaSettings(**values)

    def log_tail(self, lines: int = 40) -> str:
        """The broker's first ERROR/FATAL lines, then the last ``lines`` (for error messages).

        Startup failures end in long stack traces; the ERROR line names the cause.
        """
        try:
            text = self.log_path.read_text(errors="replace")
        except (OSError, BrokerError):
            return "(no broker log)"
        all_lines = text.splitlines()
        errors = [ln for ln in all_lines if " ERROR " in ln or " FATAL " in ln][:5]
        tail = all_lines[-lines:]
        head = [ln for ln in errors if ln not in tail]
        return "\n".join([*head, *(["..."] if head else []), *tail])

    # ---------------------------------------------------------------- lifecycle

    def __enter__(self) -> KafkaBroker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> KafkaBroker:
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.stop)

    def start(self) -> KafkaBroker:
        """Fetch, configure, format, launch and wait until ready (see module doc)."""
        if self._proc is not None:
            raise BrokerError("broker already started")
        t0 = time.monotonic()
        libs = fetch_jars(self.version, cache_dir=self.cache_dir)
        if shutil.which(self.java) is None:
            raise BrokerError(f"'{self.java}' not found: a Java 17+ runtime is needed for Kafka")
        try:
            self._prepare_dir()
            assert self.work_dir is not None
            self.ports = BrokerPorts(
                plaintext=self._requested_port or free_port(self.host),
                controller=free_port(self.host),
                sasl_ssl=(self._requested_sasl_port or free_port(self.host)) if self.sasl_ssl else 0,
            )
            for name, p in (("port", self.ports.plaintext), ("sasl_ssl_port", self.ports.sasl_ssl)):
                if p and port_open(self.host, p):
                    raise BrokerError(f"{self.host}:{p} ({name}) is already in use")
            if self.sasl_ssl:
                self.ssl_cafile, keystore = make_test_certificates(self.work_dir / "tls")
            else:
                keystore = None
            props = self.work_dir / "server.properties"
            write_private(props, self._server_properties(keystore))
            classpath = ":".join(str(j) for j in sorted(libs.glob("*.jar")))
            self._cds = (ClassDataSharing.for_jars(self.java, libs) if self.class_data_sharing
                         else ClassDataSharing())
            t_launch = time.monotonic()
            self._format(classpath, props)
            self._launch(classpath, props)
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - t_launch
        log.info(
            "kafka broker ready",
            version=self.version,
            bootstrap=self.bootstrap_servers,
            sasl_ssl=self.sasl_ssl_bootstrap_servers if self.sasl_ssl else None,
            startup_s=round(self.startup_seconds, 2),
            total_s=round(time.monotonic() - t0, 2),
        )
        atexit.register(self.stop)
        return self

    def _prepare_dir(self) -> None:
        if self._data_dir is not None:
            self.work_dir = self._data_dir.resolve()
            self.work_dir.mkdir(parents=True, exist_ok=True)
            self._own_work_dir = False
        else:
            self.work_dir = Path(tempfile.mkdtemp(prefix="streamcover-kafka-"))
            self._own_work_dir = True

    def _server_properties(self, keystore: Path | None) -> str:
        assert self.work_dir is not None and self.ports is not None
        return server_properties(self.host, self.ports, self.work_dir, keystore=keystore,
                                 sasl_username=self.sasl_username, sasl_password=self.sasl_password,
                                 extra=self.extra_properties)

    def _jvm(self, classpath: str) -> list[str]:
        return jvm_command(self.java, self.heap, self.work_dir, self.jvm_args, classpath)

    def format_command(self, classpath: str, props: Path, argfile: Path) -> list[str]:
        """The StorageTool command line; its main class and arguments (with the SCRAM
        credentials) go into ``argfile`` (mode 0600), which the java launcher expands, so
        the password is never in the process's command line."""
        tool = ["kafka.tools.StorageTool", "format", "-t", self.cluster_id, "-c", str(props),
                "--ignore-formatted"]
        if self.sasl_ssl:
            for mech in ("SCRAM-SHA-512", "SCRAM-SHA-256"):
                tool += ["--add-scram",
                         f"{mech}=[name={self.sasl_username},password={self.sasl_password}]"]
        write_private(argfile, "".join(argfile_line(a) for a in tool))
        return [*self._jvm(classpath), *self._cds.args, f"@{argfile}"]

    def password_file(self) -> Path:
        """A file (mode 0600, in the work directory) holding the SASL password."""
        assert self.work_dir is not None
        path = self.work_dir / "sasl-password"
        write_private(path, self.sasl_password)
        return path

    def _format(self, classpath: str, props: Path) -> None:
        argfile = props.with_name("storage-format.args")
        try:
            run_checked(self.format_command(classpath, props, argfile),
                         f"formatting KRaft storage ({props})")
        finally:
            argfile.unlink(missing_ok=True)

    def _launch(self, classpath: str, props: Path) -> None:
        assert self.work_dir is not None
        self._log_fh = self.log_path.open("ab")
        on_main = threading.current_thread() is threading.main_thread()
        self._proc = subprocess.Popen(
            [*self._jvm(classpath), *self._cds.args, *self._cds.dump_args(), "kafka.Kafka", str(props)],
            stdin=subprocess.DEVNULL,
            stdout=self._log_fh,
            stderr=subprocess.STDOUT,
            cwd=self.work_dir,
            start_new_session=True,  # our SIGTERM, not the terminal's Ctrl-C, stops it
            preexec_fn=parent_death_signal if on_main else None,
        )

    def _wait_ready(self) -> None:
        """Poll until an admin metadata call sees the broker, or fail with the log tail."""
        assert self.ports is not None
        deadline = time.monotonic() + self.startup_timeout_s
        settings = self.client_settings()
        last_error: BaseException | None = None
        while time.monotonic() < deadline:
            code = self.poll()
            if code is not None:
                raise BrokerError(
                    f"Kafka broker exited with status {code} during startup; "
                    f"log tail ({self.log_path}):\n{self.log_tail()}"
                )
            if port_open(self.host, self.ports.plaintext):
                try:
                    info = in_thread(lambda: probe_cluster(settings, timeout_s=5.0))
                except Exception as exc:  # not ready yet: retried until the deadline
                    last_error = exc
                else:
                    if info.get("brokers"):
                        self.cluster_info = info
                        return
            time.sleep(0.2)
        raise BrokerError(
            f"Kafka broker on {self.bootstrap_servers} not ready after "
            f"{self.startup_timeout_s:.0f} s (last probe error: {last_error!r}); "
            f"log tail ({self.log_path}):\n{self.log_tail()}"
        )

    def stop(self, grace_s: float | None = None) -> int | None:
        """SIGTERM the broker (controlled shutdown), SIGKILL after ``grace_s``; clean up.

        Safe to call more than once. Returns the JVM's exit status (None if never started).
        """
        grace = self.stop_grace_s if grace_s is None else grace_s
        code: int | None = None
        proc = self._proc
        if proc is not None:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    log.warning("kafka broker ignored SIGTERM; killing", pid=proc.pid)
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    proc.wait(timeout=30)
            code = proc.returncode
            self._proc = None
        self._cds.finish(code)  # keeps the class-data archive only from a complete dump
        if self._log_fh is not None:
            self._log_fh.close()
            self._log_fh = None
        if self._own_work_dir and not self.keep_data and self.work_dir is not None:
            shutil.rmtree(self.work_dir, ignore_errors=True)
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)
        return code

