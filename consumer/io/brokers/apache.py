"""Apache Kafka on demand: the broker of record, fetched from Maven Central and run on loopback.

``KafkaBroker`` is the JVM counterpart of the embedded Tansu (``consumer.io.brokers.tansu``): the same
``with`` interface, a free loopback port, a log file, a clean stop. It runs a single-node KRaft
broker (combined broker + controller) whose storage is formatted on each start in a fresh data
directory, so every start is a new, empty cluster.

The broker's jars are an ordinary Maven dependency (``consumer/io/brokers/jvm/pom.xml``): the first start
runs ``mvn dependency:copy-dependencies`` once into a cache outside the work tree
(``$STREAMRANK_KAFKA_HOME``, default ``~/.cache/streamrank/kafka-<version>``); later starts reuse it.

Pinned version: Apache Kafka 4.1.1 — a 4.x patch release (KRaft only, Java 17 is enough for the
broker), the newest line whose jars and ``apache/kafka`` image we could both tie to the same
number; ``docker-compose.yml`` must name the same tag (``tests/test_compose.py`` holds them equal).
"""

from __future__ import annotations

import base64
import fcntl
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import BinaryIO

from consumer.errors import EmbeddedBrokerError, JavaUnavailable
from consumer.io.brokers import free_port, wait_for_metadata

KAFKA_VERSION = "4.1.1"
DEFAULT_HEAP = "-Xms256m -Xmx768m"

# What a broker of this project needs beyond Kafka's own defaults, for one node on loopback. Kept
# short on purpose: the suite must see a default-configured broker (timestamp limits, segment
# sizes), not one tuned to pass. Internal topics get replication 1 because there is one node.
SINGLE_NODE = {
    "offsets.topic.replication.factor": "1",
    "offsets.topic.num.partitions": "4",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "transaction.state.log.num.partitions": "4",
    "share.coordinator.state.topic.replication.factor": "1",
    "share.coordinator.state.topic.min.isr": "1",
    # A first consumer group joins at once instead of after 3 s (the compose file says the same).
    "group.initial.rebalance.delay.ms": "0",
    "auto.create.topics.enable": "false",
    # The log cleaner looks for dirty logs every 15 s by default; tests that wait for compaction
    # would wait that long per round. Only how often it looks changes, not what it does.
    "log.cleaner.backoff.ms": "500",
}


def java_binary() -> str | None:
    """``$JAVA_HOME/bin/java`` when set, else ``java`` on PATH; None when there is none."""
    home = os.environ.get("JAVA_HOME")
    if home and os.access(Path(home) / "bin" / "java", os.X_OK):
        return str(Path(home) / "bin" / "java")
    return shutil.which("java")


def java_available() -> bool:
    return java_binary() is not None


def kafka_runnable(version: str = KAFKA_VERSION) -> bool:
    """Java, and the broker's jars or Maven to fetch them: what ``KafkaBroker`` needs."""
    return java_available() and ((kafka_home(version) / ".complete").exists() or shutil.which("mvn") is not None)


def kafka_home(version: str = KAFKA_VERSION) -> Path:
    explicit = os.environ.get("STREAMRANK_KAFKA_HOME")
    if explicit:
        return Path(explicit)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "streamrank" / f"kafka-{version}"


def random_cluster_id() -> str:
    """A KRaft cluster id: a UUID in URL-safe base64 without padding (22 characters), never
    starting with "-" (as Kafka's own ``Uuid.randomUuid``): the storage tool's argument parser
    would read such an id as an option, and formatting fails (1 start in 64)."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def _die_with_parent() -> None:
    """Runs in the child before exec: the JVM gets SIGTERM when the process that started it dies,
    however it dies (a killed test run must not leave a broker holding ports and memory)."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # two test sessions fetching at once would race on one folder
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_jars(version: str = KAFKA_VERSION, *, quiet: bool = True) -> Path:
    """The folder holding the broker's classpath, fetched with Maven on first use."""
    home = kafka_home(version)
    libs = home / "libs"
    done = home / ".complete"
    if done.exists():
        return libs
    if java_binary() is None:
        raise JavaUnavailable("Apache Kafka needs Java 17+: no java on PATH or in $JAVA_HOME (use --engine tansu)")
    mvn = shutil.which("mvn")
    if mvn is None:
        raise JavaUnavailable(f"fetching Apache Kafka {version} needs Maven (mvn) on PATH, or jars in {libs}")
    with _locked(home / ".lock"):
        if done.exists():
            return libs
        staging = home / "libs.partial"
        shutil.rmtree(staging, ignore_errors=True)
        pom = resources.files("consumer.io.brokers.jvm").joinpath("pom.xml")
        with resources.as_file(pom) as pom_path:
            cmd = [
                mvn,
                "-B",
                "-f",
                str(pom_path),
                "dependency:copy-dependencies",
                f"-Dkafka.version={version}",
                f"-DoutputDirectory={staging}",
                "-DincludeScope=runtime",
            ]
            if quiet:
                cmd.insert(2, "-q")
            proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-15:]
            raise EmbeddedBrokerError(
                f"could not fetch Apache Kafka {version} with Maven (exit {proc.returncode}):\n" + "\n".join(tail)
            )
        shutil.rmtree(libs, ignore_errors=True)
        staging.rename(libs)
        done.write_text(version + "\n")
    return libs


def server_properties(
    *, port: int, controller_port: int, advertised_port: int, data_dir: Path, overrides: dict[str, str] | None = None
) -> dict[str, str]:
    """A single-node KRaft broker + controller on 127.0.0.1."""
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{advertised_port}",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": str(data_dir / "logs"),
        **SINGLE_NODE,
    }
    props.update(overrides or {})
    return props


# What the apache/kafka image (kafka.docker.KafkaDockerWrapper, in the broker's own jar) leaves out
# when it turns KAFKA_* variables into server.properties: JVM and logging options, not settings.
DOCKER_NON_PROPERTY_ENV = frozenset(
    {
        "KAFKA_VERSION",
        "KAFKA_HEAP_OPTS",
        "KAFKA_LOG4J_OPTS",
        "KAFKA_OPTS",
        "KAFKA_JMX_OPTS",
        "KAFKA_JVM_PERFORMANCE_OPTS",
        "KAFKA_GC_LOG_OPTS",
        "KAFKA_LOG4J_ROOT_LOGLEVEL",
        "KAFKA_LOG4J_LOGGERS",
        "KAFKA_TOOLS_LOG4J_LOGLEVEL",
        "KAFKA_JMX_HOSTNAME",
    }
)


def _env_value(value: object) -> str:
    if isinstance(value, bool):  # YAML true/false; compose passes them as the words
        return "true" if value else "false"
    return "" if value is None else str(value)


def compose_env_to_properties(env: dict[str, object]) -> tuple[dict[str, str], str | None]:
    """The server.properties the apache/kafka image builds from a container's environment, and the
    ``CLUSTER_ID`` it formats storage with (None when unset: the image then refuses to start).

    The image's rule: every ``KAFKA_*`` variable except JVM/logging options becomes a property:
    ``KAFKA_`` dropped, lower-cased, then ``_`` -> ``.``, ``___`` -> ``-``, ``__`` -> ``_``
    (``KAFKA_LISTENER_NAME_EXTERNAL_PLAIN_SASL___JAAS__CONFIG`` ->
    ``listener.name.external.plain.sasl-jaas_config``). When any is given, these properties are the
    whole file: the image's default server.properties is used only when none is.
    """
    props: dict[str, str] = {}
    for key, value in env.items():
        if not key.startswith("KAFKA_") or key in DOCKER_NON_PROPERTY_ENV:
            continue
        name = key[len("KAFKA_") :].lower().replace("_", ".").replace("...", "-").replace("..", "_")
        props[name] = _env_value(value)
    cluster_id = env.get("CLUSTER_ID")
    return props, (None if cluster_id is None else _env_value(cluster_id))


def write_properties(path: Path, props: dict[str, str]) -> None:
    # Java properties escaping: only backslashes and line breaks can occur in our values.
    lines = [f"{k}={str(v).replace(chr(92), chr(92) * 2)}" for k, v in props.items()]
    path.write_text("\n".join(lines) + "\n")


class KafkaBroker:
    """Run Apache Kafka (single-node KRaft) for the life of a ``with`` block.

    ``properties`` replaces the generated configuration entirely (the compose test passes the
    settings ``docker-compose.yml`` gives the image); ``overrides`` adjusts the generated one.
    ``advertised_port`` lets a fault-injection proxy sit in front of the broker, as with Tansu.
    """

    def __init__(
        self,
        port: int | None = None,
        advertised_port: int | None = None,
        log_path: str | None = None,
        data_dir: str | None = None,
        overrides: dict[str, str] | None = None,
        properties: dict[str, str] | None = None,
        cluster_id: str | None = None,
        version: str = KAFKA_VERSION,
        heap: str | None = None,
    ):
        self.port = port or free_port()
        self.advertised_port = advertised_port or self.port
        self.log_path = log_path
        self.version = version
        self.cluster_id = cluster_id or random_cluster_id()
        self.heap = heap or os.environ.get("STREAMRANK_KAFKA_HEAP", DEFAULT_HEAP)
        self._owned_dir = data_dir is None
        self.data_dir = Path(data_dir) if data_dir else None
        self._overrides = overrides
        self._properties = properties
        self._proc: subprocess.Popen[bytes] | None = None
        self._out: BinaryIO | None = None
        self.started_in_s: float | None = None
        self.log_file: Path | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.advertised_port}"

    def _java(self, libs: Path, main: str, *args: str, heap: str = "") -> list[str]:
        java = java_binary()
        if java is None:
            raise JavaUnavailable("Apache Kafka needs Java 17+: no java on PATH or in $JAVA_HOME (use --engine tansu)")
        return [
            java,
            *heap.split(),
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self._log4j}",
            f"-Dstreamrank.kafka.log={self.log_file}",
            "-cp",
            f"{libs}/*",
            main,
            *args,
        ]

    def _prepare(self) -> Path:
        base = Path(tempfile.mkdtemp(prefix="streamrank-kafka-"))
        if self.data_dir is None:
            self.data_dir = base / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_file = Path(self.log_path) if self.log_path else base / "server.log"
        self._stdout_file = self.log_file.with_name(self.log_file.stem + ".stdout")
        self._log4j = base / "log4j2.properties"
        self._log4j.write_text(resources.files("consumer.io.brokers.jvm").joinpath("log4j2.properties").read_text())
        props = self._properties or server_properties(
            port=self.port,
            controller_port=free_port(),
            advertised_port=self.advertised_port,
            data_dir=self.data_dir,
            overrides=self._overrides,
        )
        config = base / "server.properties"
        write_properties(config, props)
        return config

    def start(self, timeout_s: float = 90.0) -> KafkaBroker:
        t0 = time.monotonic()
        libs = ensure_jars(self.version)
        config = self._prepare()
        fmt = subprocess.run(
            self._java(
                libs,
                "kafka.tools.StorageTool",
                "format",
                f"--cluster-id={self.cluster_id}",  # one token: an id given by the user may start with "-"
                "-c",
                str(config),
                "--ignore-formatted",
                heap="-Xmx256m",
            ),
            capture_output=True,
            text=True,
        )
        if fmt.returncode != 0:
            raise EmbeddedBrokerError(f"formatting Kafka storage failed: {(fmt.stdout + fmt.stderr).strip()[-800:]}")
        self._out = open(self._stdout_file, "ab")
        cmd = self._java(libs, "kafka.Kafka", str(config), heap=self.heap)
        try:
            self._proc = subprocess.Popen(
                cmd,
                stdout=self._out,
                stderr=self._out,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        except OSError as exc:
            raise EmbeddedBrokerError(f"could not start Apache Kafka ({cmd[0]}): {exc}") from exc
        try:
            self._wait_ready(t0 + timeout_s)
        except BaseException:
            self.stop()
            raise
        self.started_in_s = time.monotonic() - t0
        return self

    def _wait_ready(self, deadline: float) -> None:
        assert self._proc is not None, "started before waiting"
        while True:
            code = self._proc.poll()
            if code is not None:
                raise EmbeddedBrokerError(
                    f"Apache Kafka exited with code {code} at start; see {self.log_file}: {self._last_error()}"
                )
            try:
                wait_for_metadata(f"127.0.0.1:{self.port}", timeout_s=min(5.0, max(0.5, deadline - time.monotonic())))
                return
            except EmbeddedBrokerError:
                if time.monotonic() >= deadline:
                    raise EmbeddedBrokerError(
                        f"Apache Kafka did not answer on port {self.port} in time; see {self.log_file}"
                    ) from None

    def _last_error(self) -> str:
        """The last error line of the broker's log, else the last line the JVM printed (a JVM
        that cannot start, e.g. a bad heap setting, says why on stdout only)."""
        tails = []
        for path in (self.log_file, self._stdout_file):
            if path is None:
                continue
            try:
                lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
            except OSError:
                continue
            errors = [ln for ln in lines if "ERROR" in ln or "Exception" in ln or ln.startswith("Error")]
            if errors:
                return errors[-1][:400]
            tails += lines[-1:]
        return tails[-1][:400] if tails else "no error logged"

    def stop(self, timeout_s: float = 30.0) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # controlled shutdown: the log is flushed and closed
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        if self._out is not None:
            self._out.close()
            self._out = None
        if self._owned_dir and self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)  # the logs live beside it, kept for a reader

    def kill(self) -> None:
        """SIGKILL, as a crash: no controlled shutdown."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(10)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> KafkaBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    """``python -m consumer.io.brokers.apache fetch|check|has-java``: fetch the jars; or also start and stop
    once (what ``make test`` does first, so a broker that cannot start fails the run with its
    reason); or exit 0 when Java is present."""
    import argparse
    import sys

    p = argparse.ArgumentParser(prog="python -m consumer.io.brokers.apache")
    p.add_argument("action", choices=["fetch", "check", "has-java"])
    p.add_argument(
        "--if-java", action="store_true", help="without Java: say so and succeed (the suite then runs on Tansu)"
    )
    args = p.parse_args(argv)
    if args.action == "has-java":
        return 0 if kafka_runnable() else 1
    if args.if_java:
        forced = os.environ.get("STREAMRANK_TEST_BROKER", "")
        if forced == "tansu" or (os.environ.get("KAFKA_BOOTSTRAP_SERVERS") and forced != "kafka"):
            return 0  # the suite will not start Apache Kafka
        if not kafka_runnable() and forced != "kafka":
            print(
                "no Java (or no Maven to fetch Apache Kafka) on this machine: the suite runs on the embedded Tansu broker "
                "(real_kafka tests skip)"
            )
            return 0
    try:
        t0 = time.monotonic()
        libs = ensure_jars()
        print(
            f"Apache Kafka {KAFKA_VERSION}: {len(list(libs.glob('*.jar')))} jars in {libs} ({time.monotonic() - t0:.1f} s)"
        )
        if args.action == "check":
            with KafkaBroker() as b:
                print(f"Apache Kafka {KAFKA_VERSION} answered at {b.bootstrap} after {b.started_in_s:.1f} s")
    except EmbeddedBrokerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
