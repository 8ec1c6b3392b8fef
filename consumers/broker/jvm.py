"""The broker JVM's command line: its flags, the class-data-sharing archive that speeds up
later starts, java launcher ``@argfile`` lines, and the parent-death signal."""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import signal
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from consumers.broker.errors import BrokerError
from consumers.broker.jars import LOG4J2_CONFIG


def jvm_command(java: str, heap: str, logs_dir: Path | None, jvm_args: Sequence[str],
                classpath: str) -> list[str]:
    """``java`` with the broker's flags and ``classpath``, up to (not including) the main class."""
    cmd = [
        java,
        f"-Xmx{heap}",
        "-Xss1m",
        "-XX:+UseSerialGC",  # one small heap on 2 shared cores: fewest GC threads
        "-XX:+ExitOnOutOfMemoryError",
        "-Djava.awt.headless=true",
        f"-Dkafka.logs.dir={logs_dir}",
    ]
    if LOG4J2_CONFIG.is_file():
        cmd.append(f"-Dlog4j2.configurationFile={LOG4J2_CONFIG}")
    return [*cmd, *jvm_args, "-cp", classpath]


@dataclass
class ClassDataSharing:
    """An application class-data-sharing archive of the broker's classes.

    Why: on a busy 2-core machine much of the broker's start is class loading and
    verification. The first broker run dumps the classes it loaded into a CDS archive
    (``-XX:ArchiveClassesAtExit``, written when the JVM exits); later runs map it
    (``-XX:SharedArchiveFile``). The archive is per Java runtime and jar set, cached next
    to the jars; a stale or foreign archive is ignored by the JVM (``-Xshare:auto``).
    The default instance is "off": no flags, nothing to dump.
    """

    archive: Path | None = None
    """The cached archive (``broker-cds-<key>.jsa`` beside the jar folder)."""
    dump: Path | None = None
    """Where this run's JVM dumps a new archive (the archive is missing), else None."""
    args: list[str] = field(default_factory=list)
    """Flags that map the archive (empty while there is none)."""

    @classmethod
    def for_jars(cls, java: str, libs: Path) -> ClassDataSharing:
        """The archive for runtime ``java`` and the jars in ``libs``: mapped if cached,
        else to be dumped by this run."""
        java = shutil.which(java) or java
        names = "\n".join(p.name for p in sorted(libs.glob("*.jar")))
        key = hashlib.sha256(f"{os.path.realpath(java)}\n{names}".encode()).hexdigest()[:12]
        archive = libs.parent / f"broker-cds-{key}.jsa"
        if archive.is_file():
            return cls(archive, None, [f"-XX:SharedArchiveFile={archive}", "-Xshare:auto",
                                       "-Xlog:cds=off", "-Xlog:cds+dynamic=off"])
        return cls(archive, archive.with_name(f"{archive.stem}.{os.getpid()}.{secrets.token_hex(4)}.tmp"))

    def dump_args(self) -> list[str]:
        """The flag that makes the broker JVM dump the archive at exit (if one is due)."""
        return [f"-XX:ArchiveClassesAtExit={self.dump}"] if self.dump else []

    def finish(self, code: int | None) -> None:
        """After the JVM exited with ``code``: keep the archive only from a complete dump
        (the JVM writes it at exit); remove the partial one."""
        if self.dump is None:
            return
        if self.dump.is_file() and self.dump.stat().st_size > 0 and code in (0, 143):
            assert self.archive is not None
            os.replace(self.dump, self.archive)
        self.dump.unlink(missing_ok=True)
        self.dump = None


def argfile_line(arg: str) -> str:
    """One argument of a java launcher @-file, quoted (backslash escapes inside quotes)."""
    if "\n" in arg or "\r" in arg:
        raise BrokerError("a broker argument may not contain a line break")
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"\n'


def parent_death_signal() -> None:
    """Ask Linux to SIGTERM the broker if the launching (main) thread dies, e.g. kill -9."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass
