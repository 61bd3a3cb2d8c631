"""docker-compose.yml without a Docker engine: it parses and is coherent, its Kafka is the tested
version, the Dockerfile makes its volumes writable, and (with Java) the kafka service's own settings
start Apache Kafka on which the services' own commands run end to end."""

import re
import time
from pathlib import Path

import pytest
import yaml

from consumer.cli import build_parser
from consumer.config import env_settings
from consumer.io.brokers.apache import java_available as _java_available

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
OURS = ("topics", "generate", "worker", "trainer")


def test_compose_parses_with_expected_services():
    assert {"kafka", *OURS} <= set(COMPOSE["services"])


def test_every_streamrank_setting_exists_in_config():
    known = {name for name, _, _ in env_settings()}
    for svc in OURS:
        env = COMPOSE["services"][svc]["environment"]
        unknown = set(env) - known
        assert not unknown, f"{svc} passes settings the config does not read: {unknown}"


def test_worker_is_scalable():
    worker = COMPOSE["services"]["worker"]
    assert "container_name" not in worker
    assert "ports" not in worker


def test_kafka_runs_kraft_with_a_full_environment():
    env = COMPOSE["services"]["kafka"]["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    for key in (
        "KAFKA_NODE_ID",
        "KAFKA_LISTENERS",
        "KAFKA_ADVERTISED_LISTENERS",
        "KAFKA_CONTROLLER_QUORUM_VOTERS",
        "KAFKA_CONTROLLER_LISTENER_NAMES",
        "CLUSTER_ID",
    ):
        assert key in env


def test_service_commands_are_valid_cli_invocations():
    parser = build_parser()
    for svc in OURS:
        cmd = COMPOSE["services"][svc]["command"]
        parser.parse_args(cmd)


def test_shared_model_volume():
    for svc in ("worker", "trainer"):
        assert "models:/models" in COMPOSE["services"][svc]["volumes"]
    assert COMPOSE["services"]["worker"]["environment"]["STREAMRANK_REGISTRY"] == "/models"


# --- The Kafka image tag, the Dockerfile and the volumes -------------------------------------------


def test_compose_kafka_image_is_the_tested_kafka_version():
    """One place of truth: consumer.io.brokers.apache.KAFKA_VERSION is what the suite runs; the compose file
    must give users the same broker."""
    from consumer.io.brokers.apache import KAFKA_VERSION

    image = COMPOSE["services"]["kafka"]["image"]
    name, _, tag = image.partition(":")
    assert name == "apache/kafka"
    assert tag == KAFKA_VERSION, f"docker-compose.yml runs {image}; the suite tests Apache Kafka {KAFKA_VERSION}"


def test_compose_cluster_id_is_a_kraft_uuid():
    """``kafka-storage.sh random-uuid`` form: 16 bytes in URL-safe base64 without padding. Kafka 4.1.1
    itself formats storage with any string (see README), but every Kafka tool and doc assumes this."""
    import base64

    cid = str(COMPOSE["services"]["kafka"]["environment"]["CLUSTER_ID"])
    assert len(cid) == 22 and re.fullmatch(r"[A-Za-z0-9_-]{22}", cid), cid
    assert len(base64.urlsafe_b64decode(cid + "==")) == 16


def _dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, buf = [], ""
    for line in text.splitlines():
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def _streamrank_mount_paths() -> dict[str, set[str]]:
    """Container path -> services, for every volume of the services built from our Dockerfile."""
    paths: dict[str, set[str]] = {}
    for name, svc in COMPOSE["services"].items():
        if svc.get("build") is None:
            continue
        for vol in svc.get("volumes", []):
            target = vol["target"] if isinstance(vol, dict) else vol.split(":")[1]
            paths.setdefault(target, set()).add(name)
    return paths


def dockerfile_mount_problems(dockerfile: str, mounts: dict[str, set[str]]) -> list[str]:
    """Why a named volume mounted at each of ``mounts`` would not be writable by the image's USER.

    Docker fills a new named volume from the image directory it is mounted on, ownership included;
    when the image has no such directory the volume is root-owned and a non-root process cannot
    write it. So each path must be created (mkdir) and chowned to the USER before the USER line.
    """
    steps = _dockerfile_instructions(dockerfile)
    users = [i for i, (word, _) in enumerate(steps) if word == "USER"]
    if not users or steps[users[-1]][1].split(":")[0] in ("root", "0"):
        return ["the image runs as root"]
    user = steps[users[-1]][1].split(":")[0]
    before = [args for word, args in steps[: users[-1]] if word == "RUN"]
    commands = [c.split() for args in before for c in re.split(r"&&|;|\|\|", args)]
    created = {p for c in commands if c[:1] == ["mkdir"] for p in c[1:] if not p.startswith("-")}
    chowned: set[str] = set()
    for c in commands:
        args = [a for a in c[1:] if not a.startswith("-")]
        if c[:1] == ["chown"] and len(args) > 1 and args[0].split(":")[0] == user:
            chowned.update(args[1:])
    problems = []
    for path, services in sorted(mounts.items()):
        if path not in created:
            problems.append(f"{path} (mounted by {sorted(services)}) is not created before USER {user}")
        if path not in chowned:
            problems.append(f"{path} (mounted by {sorted(services)}) is not chowned to {user} before USER {user}")
    return problems


def test_dockerfile_creates_every_mounted_path_owned_by_its_user():
    """The trainer saves models into the `models` volume as user streamrank: the volume must be
    created from an image directory that user owns."""
    mounts = _streamrank_mount_paths()
    assert "/models" in mounts
    assert dockerfile_mount_problems((ROOT / "Dockerfile").read_text(), mounts) == []


def test_dockerfile_check_catches_a_root_owned_mount():
    mounts = {"/models": {"trainer"}}
    bare = "FROM x\nRUN pip install . \\\n  && useradd app\n# comment\nUSER app\n"
    assert _dockerfile_instructions(bare) == [
        ("FROM", "x"),
        ("RUN", "pip install .    && useradd app"),
        ("USER", "app"),
    ]
    assert len(dockerfile_mount_problems(bare, mounts)) == 2
    late = "FROM x\nRUN useradd app\nUSER app\nRUN mkdir -p /models && chown app /models\n"
    assert len(dockerfile_mount_problems(late, mounts)) == 2
    other = "FROM x\nRUN useradd app && mkdir -p /models && chown -R bob:bob /models\nUSER app\n"
    assert dockerfile_mount_problems(other, mounts) == [
        "/models (mounted by ['trainer']) is not chowned to app before USER app"
    ]
    good = "FROM x\nRUN useradd app \\\n && mkdir -p /models \\\n && chown app:app /models\nUSER app\n"
    assert dockerfile_mount_problems(good, mounts) == []
    assert dockerfile_mount_problems("FROM x\n", mounts) == ["the image runs as root"]


# --- The compose environment -> server.properties, as the apache/kafka image maps it -----------------


def test_compose_env_to_properties_mapping_rule():
    from consumer.io.brokers.apache import compose_env_to_properties

    props, cid = compose_env_to_properties(
        {
            "KAFKA_NODE_ID": 1,
            "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "KAFKA_AUTO_CREATE_TOPICS_ENABLE": False,
            "KAFKA_LISTENER_NAME_INTERNAL_SSL_KEY_PASSWORD": "x",  # _ -> .
            "KAFKA_CONFLUENT__SUPPORT__METRICS": "y",  # __ -> _
            "KAFKA_LISTENER_NAME_EXTERNAL_PLAIN_SASL___JAAS__CONFIG": "z",  # ___ -> -, __ -> _
            "KAFKA_HEAP_OPTS": "-Xmx1g",
            "KAFKA_OPTS": "-Dx",
            "KAFKA_LOG4J_OPTS": "",
            "KAFKA_JMX_OPTS": "",
            "KAFKA_JVM_PERFORMANCE_OPTS": "",
            "KAFKA_GC_LOG_OPTS": "",
            "KAFKA_LOG4J_ROOT_LOGLEVEL": "WARN",
            "KAFKA_LOG4J_LOGGERS": "kafka=WARN",
            "KAFKA_TOOLS_LOG4J_LOGLEVEL": "ERROR",
            "KAFKA_VERSION": "4.1.1",
            "KAFKA_JMX_HOSTNAME": "kafka",
            "CLUSTER_ID": "MkU3OEVBNTcwNTJENDM2Qk",
            "JAVA_HOME": "/usr",
            "STREAMRANK_KAFKA": "not a broker setting",
        }
    )
    assert props == {
        "node.id": "1",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "auto.create.topics.enable": "false",
        "listener.name.internal.ssl.key.password": "x",
        "confluent_support_metrics": "y",
        "listener.name.external.plain.sasl-jaas_config": "z",
    }
    assert cid == "MkU3OEVBNTcwNTJENDM2Qk"
    assert compose_env_to_properties({"KAFKA_NODE_ID": "1"}) == ({"node.id": "1"}, None)


@pytest.mark.slow
@pytest.mark.skipif(not _java_available(), reason="no Java (java on PATH or $JAVA_HOME): Apache Kafka cannot run here")
def test_compose_env_mapping_is_what_the_image_does(tmp_path):
    """The apache/kafka image builds server.properties with kafka.docker.KafkaDockerWrapper, which
    ships in the broker's own jar: run that very code (same version as the image) on the compose
    environment and compare. It also formats storage, so log.dirs points at a temp folder."""
    import os
    import subprocess

    from consumer.io.brokers.apache import compose_env_to_properties, ensure_jars, java_binary

    env = {k: str(v) for k, v in COMPOSE["services"]["kafka"]["environment"].items()}
    env.update(
        KAFKA_LOG_DIRS=str(tmp_path / "data"),
        KAFKA_A___B__C_D="x",
        KAFKA_HEAP_OPTS="-Xmx1g",
        KAFKA_LOG4J_LOGGERS="kafka=WARN",
    )
    dirs = {name: tmp_path / name for name in ("default", "mounted", "final")}
    for d in dirs.values():
        d.mkdir()
    (dirs["default"] / "server.properties").write_text("num.network.threads=7\n")  # the image's default file
    for name in ("log4j2.yaml", "tools-log4j2.yaml"):
        (dirs["default"] / name).write_text("")
    libs = ensure_jars()
    proc = subprocess.run(
        [
            java_binary(),
            "-cp",
            f"{libs}/*",
            "kafka.docker.KafkaDockerWrapper",
            "setup",
            "-D",
            str(dirs["default"]),
            "-M",
            str(dirs["mounted"]),
            "-F",
            str(dirs["final"]),
        ],
        env={"PATH": os.environ.get("PATH", ""), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = (dirs["final"] / "server.properties").read_text().splitlines()
    wrapper = dict(line.split("=", 1) for line in lines if line.strip())
    ours, cluster_id = compose_env_to_properties(env)
    assert wrapper == ours
    assert wrapper["a-b_c.d"] == "x" and "num.network.threads" not in wrapper
    assert cluster_id == env["CLUSTER_ID"]


# --- The compose file, started for real -------------------------------------------------------------

_HOST_PORT = re.compile(r"(?P<host>[A-Za-z0-9.-]*):(?P<port>\d{2,5})\b")
# Properties that hold host:port endpoints (the only ones the loopback rewrite may touch).
_ENDPOINT_PROPS = (
    "listeners",
    "advertised.listeners",
    "controller.quorum.voters",
    "controller.quorum.bootstrap.servers",
)


def _loopback(value: str, ports: dict[int, int]) -> str:
    """Every ``host:port`` (``kafka:9092``, ``localhost:9094``, ``:9093``) -> ``127.0.0.1:<free port>``,
    one free port per compose port, so the same port means the same socket everywhere."""
    from consumer.io.brokers import free_port

    def sub(m: re.Match) -> str:
        port = int(m.group("port"))
        if port not in ports:
            ports[port] = free_port()
        return f"127.0.0.1:{ports[port]}"

    return _HOST_PORT.sub(sub, value)


def compose_broker_settings(log_dirs: Path, ports: dict[int, int]) -> tuple[dict[str, str], str | None]:
    """What docker-compose.yml gives the kafka service, as server.properties, with only endpoints
    moved to loopback and log.dirs to ``log_dirs``."""
    from consumer.io.brokers.apache import compose_env_to_properties

    props, cluster_id = compose_env_to_properties(COMPOSE["services"]["kafka"]["environment"])
    for key in _ENDPOINT_PROPS:
        if key in props:
            props[key] = _loopback(props[key], ports)
    assert "log.dirs" in props or "log.dir" in props, "compose should say where the data volume is"
    props.pop("log.dir", None)
    props["log.dirs"] = str(log_dirs)
    return props, cluster_id


def test_compose_broker_settings_keep_names_and_move_endpoints(tmp_path):
    ports: dict[int, int] = {}
    props, _ = compose_broker_settings(tmp_path, ports)
    env = COMPOSE["services"]["kafka"]["environment"]
    assert props["listener.security.protocol.map"] == env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"]
    assert props["controller.listener.names"] == env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    names = [ep.split("://")[0] for ep in props["listeners"].split(",")]
    assert names == [ep.split("://")[0] for ep in env["KAFKA_LISTENERS"].split(",")]
    assert set(ports) == {9092, 9093, 9094}
    assert f"PLAINTEXT://127.0.0.1:{ports[9092]}" in props["advertised.listeners"].split(",")
    assert props["controller.quorum.voters"] == f"1@127.0.0.1:{ports[9093]}"
    assert "kafka:" not in "".join(props.values()) and "localhost" not in "".join(props.values())


def _flag(cmd: list[str], flag: str, value: str | None) -> list[str]:
    """``cmd`` with ``flag``'s value set (or the flag removed when ``value`` is None)."""
    out = list(cmd)
    if flag in out:
        i = out.index(flag)
        del out[i : i + 2]
    return out + ([flag, value] if value is not None else [])


@pytest.fixture(autouse=True)
def _skip_real_kafka_only():
    """Overrides the suite's autouse fixture of that name for this module: these tests start their
    own Apache Kafka with the compose settings, so which broker the session uses (and starting it)
    does not matter here."""


@pytest.mark.broker
@pytest.mark.real_kafka
@pytest.mark.slow
@pytest.mark.skipif(not _java_available(), reason="no Java (java on PATH or $JAVA_HOME): Apache Kafka cannot run here")
def test_compose_stack_runs_on_apache_kafka(tmp_path):
    """docker-compose.yml, without Docker: Apache Kafka with exactly the kafka service's settings
    (endpoints on free loopback ports, data in a temp folder), then the services' own commands with
    the services' own environment: topics create -> generate (small) -> train -> run."""
    import os
    import subprocess
    import sys

    from consumer.config import Config
    from consumer.io.brokers import wait_for_metadata
    from consumer.io.brokers.apache import KafkaBroker
    from models.registry import ModelRegistry
    from tests.kit.topics import read_predictions

    ports: dict[int, int] = {}
    props, cluster_id = compose_broker_settings(tmp_path / "kafka-data", ports)
    (tmp_path / "kafka-data").mkdir()
    bootstrap = _loopback(str(COMPOSE["x-streamrank-env"]["KAFKA_BOOTSTRAP_SERVERS"]), ports)

    # Each container sees its own /models unless it mounts the shared `models` volume.
    volumes = {"models": tmp_path / "volume-models"}

    def service_env(svc_name: str) -> dict[str, str]:
        svc = COMPOSE["services"][svc_name]
        models = tmp_path / f"{svc_name}-models"
        for vol in svc.get("volumes", []):
            source, target = vol.split(":")[:2]
            if target == "/models":
                models = volumes[source]
        models.mkdir(exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "STREAMRANK_"))}
        for key, value in svc["environment"].items():
            value = str(value)
            if key == "KAFKA_BOOTSTRAP_SERVERS":
                value = _loopback(value, ports)
            elif key == "STREAMRANK_METRICS_PORT":
                value = "0"  # each container has its own network; one host cannot give 9100 to all
            elif value.startswith("/models"):
                value = str(models) + value[len("/models") :]
            env[key] = value
        return env

    def service(svc_name: str, command: list[str], timeout: float) -> str:
        t0 = time.monotonic()
        log = tmp_path / f"{svc_name}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "consumer.cli", *command],
                env=service_env(svc_name),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
            try:
                code = proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = f"nothing (killed after {timeout} s)"
                proc.wait(10)
        timings[svc_name] = round(time.monotonic() - t0, 1)
        text = log.read_text(errors="replace")
        assert code == 0, f"{svc_name} {command} exited {code}; its log {log} ends:\n{text[-3000:]}"
        return text

    timings: dict[str, float] = {}
    broker = KafkaBroker(port=ports[9092], properties=props, cluster_id=cluster_id)
    try:
        broker.start(timeout_s=120)
        # The host-side listener (`ports: 9094:9094`, advertised as localhost:9094) answers too.
        wait_for_metadata(f"127.0.0.1:{ports[9094]}", timeout_s=10)
        cmds = {name: COMPOSE["services"][name]["command"] for name in OURS}
        service("topics", cmds["topics"], 120)
        generate = _flag(_flag(cmds["generate"], "--businesses", "150"), "--days", "14")
        service("generate", generate, 300)
        trainer_out = service("trainer", _flag(cmds["trainer"], "--every", None), 300)
        promoted = ModelRegistry(str(volumes["models"])).promoted_version()
        assert promoted, f"the trainer promoted no model into the shared volume:\n{trainer_out[-3000:]}"
        worker_out = service("worker", [*cmds["worker"], "--exit-when-idle", "5", "--summary"], 120)
        cfg = Config.from_env(service_env("worker"))
        assert cfg.bootstrap == bootstrap
        preds = read_predictions(cfg)
    finally:
        broker.stop()
    print(f"broker started in {broker.started_in_s}s; services: {timings}")
    assert preds, f"no predictions on {cfg.predictions_topic}; worker said:\n{worker_out[-3000:]}"
    assert {p["model_version"] for p in preds} == {promoted}
