"""docker-compose.yml must stay true to the code: every command parses with our CLI, every
build has a Dockerfile, every published port is one the command serves on."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import yaml

from gateway.cli import ESTATE_SYSTEMS, build_parser

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
OURS = sorted(name for name, service in SERVICES.items() if "build" in service)


def _published(service: dict[str, object]) -> list[int]:
    ports: list[int] = []
    for mapping in service.get("ports", []):  # type: ignore[attr-defined]
        container = str(mapping).split(":")[-1]
        first, _, last = container.partition("-")
        ports += range(int(first), int(last or first) + 1)
    return ports


def test_every_service_has_an_image_or_a_build_with_a_dockerfile() -> None:
    for name, service in SERVICES.items():
        assert ("image" in service) != ("build" in service), name
        if "build" in service:
            assert (ROOT / service["build"] / "Dockerfile").is_file(), name


@pytest.mark.parametrize("name", OURS)
def test_our_services_run_a_command_the_cli_accepts(name: str) -> None:
    command = SERVICES[name]["command"]

    assert command[0] == "commerce-gateway"
    build_parser().parse_args(command[1:])


def test_the_legacy_service_publishes_exactly_the_ports_its_systems_take() -> None:
    service = SERVICES["legacy"]
    args = build_parser().parse_args(service["command"][1:])

    expected = [args.port + index for index in range(len(ESTATE_SYSTEMS))]
    assert _published(service) == expected
    assert args.host == "0.0.0.0"


def test_services_that_use_postgres_or_redis_depend_on_existing_services() -> None:
    for name, service in SERVICES.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in SERVICES, f"{name} depends on unknown {dependency}"
    assert _published(SERVICES["postgres"]) == [5432]
    assert _published(SERVICES["redis"]) == [6379]


def test_every_database_a_command_names_is_created_by_the_postgres_init_script() -> None:
    init = (ROOT / "deploy" / "postgres-init.sql").read_text()
    created = {
        line.split()[2].rstrip(";")
        for line in init.splitlines()
        if line.startswith("CREATE DATABASE")
    }
    for name in OURS:
        command = SERVICES[name]["command"]
        urls = [arg for arg in command if "://" in arg and "@postgres:" in arg]
        for url in urls:
            assert url.rsplit("/", 1)[1] in created, (name, url)


def test_the_gateway_service_reaches_every_backend_where_compose_serves_it() -> None:
    from gateway.config import GatewayConfig

    service = SERVICES["gateway"]
    environment = service["environment"]
    config_path = ROOT / environment["GATEWAY_CONFIG"].removeprefix("/app/")
    config = GatewayConfig.model_validate(tomllib.loads(config_path.read_text()))
    legacy = build_parser().parse_args(SERVICES["legacy"]["command"][1:])

    assert config.backends is not None
    for index, system in enumerate(ESTATE_SYSTEMS):
        if system == "erp":
            continue  # its data is read over SQL; its HTTP port is the control plane
        backend = getattr(config.backends, system)
        assert backend.url == f"http://legacy:{legacy.port + index}", system
    assert config.backends.erp.url == legacy.erp_url
    mounts = {volume.split(":")[1] for volume in service["volumes"]}
    assert any(str(config.backends.promotions.folder).startswith(mount) for mount in mounts)
    assert {"demo-web", "demo-pos", "demo-csr"} <= set(config.channels)
    args = build_parser().parse_args(service["command"][1:])
    assert _published(service) == [args.port]
