"""docker-compose.yml cannot run here (no Docker engine): check that it parses and is coherent."""

from pathlib import Path

import yaml

from consumer.cli import build_parser
from consumer.config import env_settings

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
    for key in ("KAFKA_NODE_ID", "KAFKA_LISTENERS", "KAFKA_ADVERTISED_LISTENERS", "KAFKA_CONTROLLER_QUORUM_VOTERS", "KAFKA_CONTROLLER_LISTENER_NAMES", "CLUSTER_ID"):
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
