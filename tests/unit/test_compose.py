"""docker-compose.yml is valid for users, though no Docker engine runs on these machines.

It is checked against the Compose specification's JSON schema (vendored by check-jsonschema),
every Python command it runs must name a module and subcommand that exist, and the rules the
stack depends on are checked on the parsed file: no secret has a default, every ``FRAUD_*``
variable is a real setting, each service logs in to Redis as its own ACL user (only the batch
job's may write batch models), the workers can be scaled, Prometheus finds them, the start order
waits for healthy services, and .env.example names every variable the file interpolates.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from dataclasses import fields
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from dashboards import datasources
from models import redis_acl
from models.settings import ENV_PREFIX, Settings

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"
PROMETHEUS = REPO / "deploy" / "prometheus" / "prometheus.yml"

# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}, ${NAME:+x}, $NAME;
# $$ is compose's escape for a literal dollar.
INTERPOLATION = re.compile(
    r"(?<!\$)(?:\$\$)*\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?[-?+])?(?P<arg>[^}]*)\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)
SECRET_NAME = re.compile(r"PASSWORD|KEY|TOKEN|SECRET", re.IGNORECASE)
PYTHON_SERVICES = {
    "worker",
    "transactions-producer",
    "emails-producer",
    "lake-sink",
    "scheduler",
    "dashboards",
    "alerts-page",
}


def _compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def _services() -> dict[str, dict[str, Any]]:
    return _compose()["services"]


def _interpolations(text: str) -> list[tuple[str, str, str]]:
    """(name, operator, argument) of every interpolation in ``text``."""
    found = []
    for match in INTERPOLATION.finditer(text):
        if match["bare"]:
            found.append((match["bare"], "", ""))
        else:
            found.append((match["braced"], match["op"] or "", match["arg"]))
    return found


# Required values whose form is checked: a stand-in of that form.
STAND_INS = {"FRAUD_REVIEW_TOKENS": "reviewer:stand-in-token-0123456789"}


def _interpolate(value: Any) -> str:
    """``value`` as compose would pass it with .env unset: defaults used, required values
    replaced by a stand-in secret."""

    def replace(match: re.Match[str]) -> str:
        if match["bare"]:
            return ""
        op, arg = match["op"] or "", match["arg"]
        if op in (":-", "-"):
            return arg
        if op in (":?", "?"):
            return STAND_INS.get(match["braced"], "stand-in-secret")
        return ""

    return INTERPOLATION.sub(replace, str(value)).replace("$$", "$")


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def _passed_through(service: dict[str, Any]) -> set[str]:
    """Variables the service takes from .env or the shell as they are, with no value (and so
    no default) in the file: ``NAME:`` in a mapping, ``- NAME`` in a list."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return {item for item in env if "=" not in item}
    return {key for key, value in env.items() if value is None}


def _env_example() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        assert sep, f".env.example: not NAME=value: {line!r}"
        values[name.strip()] = value.strip()
    return values


def _depends_on(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):  # the short form means service_started
        return {name: {"condition": "service_started"} for name in deps}
    return deps


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> source (volume name or host path) of each mount."""
    mounts = {}
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            mounts[volume["target"]] = volume.get("source", "")
        else:
            source, target, *_ = volume.split(":")
            mounts[target] = source
    return mounts


def _worker_web_port() -> int:
    return int(_interpolate(_environment(_services()["worker"])[ENV_PREFIX + "WEB_PORT"]))


# -- the file as a whole ------------------------------------------------------------------


def test_compose_file_validates_against_the_compose_specification():
    checker = shutil.which("check-jsonschema", path=str(Path(sys.executable).parent))
    assert checker, "check-jsonschema is a dev dependency: make setup installs it"
    result = subprocess.run(
        [checker, "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_python_service_runs_a_module_and_subcommand_of_this_project():
    services = _services()
    python_services = {n: s for n, s in services.items() if s.get("command", [None])[0] == "python"}
    assert set(python_services) >= PYTHON_SERVICES
    for name, service in python_services.items():
        command = [_interpolate(part) for part in service["command"]]
        assert command[1] == "-m", name
        module = command[2]
        assert importlib.util.find_spec(module) is not None, f"{name}: no module {module}"
        # `python -m stream ... worker --help` would start Faust; its top-level help is enough.
        help_args = [module, "--help"] if module == "stream" else [module, command[3], "--help"]
        help_run = subprocess.run(
            [sys.executable, "-m", *help_args],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=60,
        )
        assert help_run.returncode == 0, f"{name}: {help_run.stderr}"
    assert "worker" in services["worker"]["command"]


def test_the_image_copies_every_package_the_services_import():
    dockerfile = (REPO / "Dockerfile").read_text()
    for package in ("models", "producers", "stream", "batch", "dashboards"):
        assert f"COPY {package} ./{package}" in dockerfile


def test_one_image_installs_the_package_and_runs_as_a_non_root_user():
    dockerfile = (REPO / "Dockerfile").read_text()
    assert dockerfile.count("FROM ") == 1
    assert re.search(r"^RUN pip install \.", dockerfile, re.MULTILINE)
    users = re.findall(r"^USER\s+(\S+)", dockerfile, re.MULTILINE)
    assert users and users[-1] not in ("root", "0"), "the image must end as a non-root user"
    for name in PYTHON_SERVICES:
        service = _services()[name]
        assert service.get("build") == ".", name
        assert service.get("image") == "fraudstream:latest", name
        assert "user" not in service, f"{name}: runs as the image's user"


def test_dockerignore_keeps_local_state_and_secrets_out_of_the_build_context():
    ignored = {
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".venv", ".cache", ".run", "lake", "runs", "node_modules", ".env"} <= ignored


# -- secrets --------------------------------------------------------------------------------


def test_no_secret_has_a_default_value():
    text = COMPOSE.read_text()
    secrets = [(n, op, arg) for n, op, arg in _interpolations(text) if SECRET_NAME.search(n)]
    assert {n for n, _, _ in secrets} >= {
        *(role.password_variable for role in redis_acl.roles("fraud")),
        "FRAUD_MODEL_SIGNING_KEY",
        "GRAFANA_ADMIN_PASSWORD",
        "FRAUD_REVIEW_TOKENS",
    }
    for name, op, arg in secrets:
        assert op == ":?" and arg.strip(), f"${{{name}}} must be ${{{name}:?message}}"
    # Every value named like a secret is such an interpolation, never a literal, or is
    # passed through with no value at all (an optional secret: OPTIONAL_SECRETS).
    whole = re.compile(r"^\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*):\?[^}]+\}$")
    for service_name, service in _services().items():
        passed = _passed_through(service)
        assert passed <= set(OPTIONAL_SECRETS), f"{service_name}: {sorted(passed)}"
        for key, value in _environment(service).items():
            if SECRET_NAME.search(key) and key not in passed:
                assert whole.match(value), f"{service_name}: {key} must come from the environment"


# Secrets only some runs need, passed through (no value in the file, so no default) to the
# services that may need them; the code refuses what needs them while they are unset.
OPTIONAL_SECRETS = {"FRAUD_CARD_TOKEN_KEY": {"transactions-producer"}}


def test_the_card_token_key_is_passed_through_only_where_a_replay_may_need_it():
    known = {f.name: f for f in fields(Settings)}
    for name, services in OPTIONAL_SECRETS.items():
        setting = known[name.removeprefix(ENV_PREFIX).lower()]
        assert setting.metadata.get("secret") and setting.default == ""
        holders = {s for s, service in _services().items() if name in _environment(service)}
        assert holders == services
        for service in services:
            assert name in _passed_through(_services()[service]), f"{service}: no default"
        assert name not in {n for n, _, _ in _interpolations(COMPOSE.read_text())}
        assert _env_example()[name] == ""


# Which Redis user each service logs in as (services not named here use no Redis).
REDIS_USERS = {
    "worker": "worker",
    "scheduler": "batch",
    "alerts-page": "alerts-page",
    "dashboards": "grafana",  # the Grafana data source it provisions
}


def test_redis_loads_the_acl_and_allows_no_anonymous_access():
    compose = _compose()
    redis = compose["services"]["redis"]
    command = redis["command"]
    assert command[0] == "redis-server"
    assert command[command.index("--appendonly") + 1] == "yes"
    assert "--requirepass" not in command, "users and passwords come from the ACL only"
    acl_path = command[command.index("--aclfile") + 1]
    assert redis["configs"] == [{"source": "redis-acl", "target": acl_path}]
    assert _mounts(redis).get("/data"), "the append-only file lives in a volume"
    # The ACL in the file is what models.redis_acl renders from the key layout, verbatim.
    content = compose["configs"]["redis-acl"]["content"]
    assert content == redis_acl.compose_template()
    assert content.splitlines()[0].startswith("user default reset off ")
    assert f"redis:{'.'.join(map(str, redis_acl.COMPOSE_REDIS_VERSION))}" == redis["image"]
    # The health check logs in as admin (REDISCLI_AUTH holds its password).
    assert _environment(redis)["REDISCLI_AUTH"].startswith("${REDIS_ADMIN_PASSWORD:?")
    assert "redis-cli --user admin ping" in " ".join(redis["healthcheck"]["test"])


def test_each_service_logs_in_to_redis_as_its_own_role():
    services = _services()
    roles = {role.user: role for role in redis_acl.roles("fraud")}
    urls = {
        name: env[ENV_PREFIX + "REDIS_URL"]
        for name, service in services.items()
        if ENV_PREFIX + "REDIS_URL" in (env := _environment(service))
    }
    assert set(urls) == set(REDIS_USERS), "only these services use Redis"
    for name, url in urls.items():
        role = roles[REDIS_USERS[name]]
        assert url.startswith(f"redis://{role.user}:${{{role.password_variable}:?"), url
        assert url.endswith("@redis:6379/0"), f"{name}: {url}"
        parsed = urlsplit(_interpolate(url))  # as compose passes it, a stand-in password
        assert (parsed.username, parsed.password) == (role.user, "stand-in-secret"), name
    # Every role but admin has a service; admin is for operators and the health check.
    assert set(roles) - set(REDIS_USERS.values()) == {"admin"}


def test_only_the_batch_user_may_write_batch_models_in_the_compose_acl():
    content = _compose()["configs"]["redis-acl"]["content"]
    batch_pattern = "${FRAUD_NAMESPACE:-fraud}:model:batch:"
    writers = []
    for line in content.splitlines():
        user = line.split()[1]
        if "off" in line.split():
            continue  # nobody logs in as a user that is off (default: models/redis_acl.py)
        for rule in line.split():
            if rule in ("~*",) or (
                rule.startswith(("~", "%W~", "%RW~", "%WR~")) and batch_pattern in rule
            ):
                writers.append(user)
    assert sorted(set(writers)) == ["admin", "batch"]


def test_the_model_signing_key_reaches_whoever_signs_or_verifies_models():
    for name in ("worker", "scheduler"):
        key = _environment(_services()[name]).get(ENV_PREFIX + "MODEL_SIGNING_KEY", "")
        assert key.startswith("${FRAUD_MODEL_SIGNING_KEY:?"), name


# -- settings -------------------------------------------------------------------------------


def test_every_fraud_variable_is_a_real_setting():
    known = {ENV_PREFIX + f.name.upper() for f in fields(Settings)}
    for name, service in _services().items():
        unknown = {k for k in _environment(service) if k.startswith(ENV_PREFIX)} - known
        assert not unknown, f"{name}: not settings: {sorted(unknown)}"
    interpolated = {n for n, _, _ in _interpolations(COMPOSE.read_text())}
    assert not {n for n in interpolated if n.startswith(ENV_PREFIX)} - known


@pytest.mark.parametrize("name", sorted(PYTHON_SERVICES))
def test_each_python_service_environment_makes_valid_settings(name):
    env = {k: _interpolate(v) for k, v in _environment(_services()[name]).items()}
    settings = Settings.from_env(env)
    assert settings.kafka_bootstrap == "kafka:9092"


# -- workers and Prometheus -----------------------------------------------------------------


def test_the_worker_can_be_scaled():
    worker = _services()["worker"]
    assert "container_name" not in worker
    assert "ports" not in worker, "a fixed host port allows one replica only"
    assert str(_worker_web_port()) in [str(port) for port in worker.get("expose", [])]
    command = worker["command"]
    assert "--web-host" in command and command[command.index("--web-host") + 1] == "0.0.0.0"
    datadir = PurePosixPath(command[command.index("--datadir") + 1])
    for target in _mounts(worker):
        shared = PurePosixPath(target)
        assert shared != datadir and shared not in datadir.parents, (
            "each replica needs its own Faust datadir, not a shared volume"
        )


def test_prometheus_scrapes_every_worker_replica_on_its_web_port():
    config = yaml.safe_load(PROMETHEUS.read_text())
    assert config["global"]["scrape_interval"] == datasources.DEFAULT_SCRAPE_INTERVAL
    jobs = [
        job
        for job in config["scrape_configs"]
        for sd in job.get("dns_sd_configs", [])
        if "worker" in sd["names"]
    ]
    assert len(jobs) == 1, "one job discovers the workers by their compose service name"
    (sd,) = jobs[0]["dns_sd_configs"]
    assert sd["type"] == "A" and sd["port"] == _worker_web_port()
    assert jobs[0].get("metrics_path", "/metrics") == "/metrics"
    prometheus = _services()["prometheus"]
    mounts = _mounts(prometheus)
    assert mounts["/etc/prometheus/prometheus.yml"] == "./deploy/prometheus/prometheus.yml"
    assert prometheus["image"].startswith("prom/prometheus:")


def test_grafana_and_its_provisioner():
    services = _services()
    grafana = services["grafana"]
    assert re.fullmatch(r"grafana/grafana:13\.2\.\d+", grafana["image"])
    env = _environment(grafana)
    assert env["GF_SECURITY_ADMIN_PASSWORD"].startswith("${GRAFANA_ADMIN_PASSWORD:?")
    plugins = env.get("GF_PLUGINS_PREINSTALL_SYNC", env.get("GF_PLUGINS_PREINSTALL", ""))
    assert datasources.REDIS_PLUGIN in plugins.split(",")
    assert "healthcheck" in grafana

    provisioner = services["dashboards"]
    assert provisioner["command"][:4] == ["python", "-m", "dashboards", "provision"]
    assert provisioner["restart"] != "unless-stopped", "a one-shot job"
    assert _depends_on(provisioner)["grafana"]["condition"] == "service_healthy"
    penv = _environment(provisioner)
    assert penv["GRAFANA_URL"] == "http://grafana:3000"
    assert penv["PROMETHEUS_URL"] == "http://prometheus:9090"
    assert penv["GRAFANA_PASSWORD"] == env["GF_SECURITY_ADMIN_PASSWORD"]
    assert penv["GRAFANA_USER"] == env["GF_SECURITY_ADMIN_USER"]


def test_the_scheduler_reads_the_lake_the_sink_writes():
    services = _services()
    scheduler, sink = services["scheduler"], services["lake-sink"]
    assert scheduler["command"][2:4] == ["batch", "schedule"]
    env, sink_env = _environment(scheduler), _environment(sink)
    assert env["FRAUD_RETRAIN_AT"].startswith("${FRAUD_RETRAIN_AT:-")
    lake = env[ENV_PREFIX + "LAKE_DIR"]
    assert lake == sink_env[ENV_PREFIX + "LAKE_DIR"]
    assert _mounts(scheduler)[lake] == _mounts(sink)[lake], "one lake volume, shared"
    assert _mounts(scheduler).get(env[ENV_PREFIX + "RUNS_DIR"]), "retrain reports in a volume"


# -- start order ----------------------------------------------------------------------------


def test_services_wait_for_healthy_kafka_and_redis():
    services = _services()
    needs = {
        "worker": {"kafka", "redis"},
        "transactions-producer": {"kafka"},
        "emails-producer": {"kafka"},
        "lake-sink": {"kafka"},
        "scheduler": {"kafka", "redis"},
    }
    for name, wanted in needs.items():
        deps = _depends_on(services[name])
        for dep in wanted:
            assert deps.get(dep, {}).get("condition") == "service_healthy", f"{name} -> {dep}"
    for name, service in services.items():
        for dep, spec in _depends_on(service).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            if dep in ("kafka", "redis"):
                assert spec.get("condition") == "service_healthy", f"{name} -> {dep}"
            if spec.get("condition") == "service_healthy":
                assert "healthcheck" in services[dep], f"{dep} has no healthcheck"


# -- .env.example ---------------------------------------------------------------------------


def test_env_example_names_every_variable_the_compose_file_interpolates():
    example = _env_example()
    interpolated = {name for name, _, _ in _interpolations(COMPOSE.read_text())}
    passed = set().union(*(_passed_through(service) for service in _services().values()))
    used = interpolated | passed
    assert used <= set(example), f"missing: {sorted(used - set(example))}"
    assert set(example) <= used, f"unused: {sorted(set(example) - used)}"


def test_env_example_carries_no_usable_secret():
    """A copied .env.example must not start the stack with a secret everyone knows: the
    secrets are empty there, so compose stops until they are set."""
    for name, value in _env_example().items():
        if SECRET_NAME.search(name):
            assert value == "", f".env.example: {name} must be left empty"


def test_the_alerts_page_is_published_on_loopback_and_needs_review_tokens():
    page = _services()["alerts-page"]
    assert page["command"][2:4] == ["stream", "alerts-page"]
    assert page["command"][page["command"].index("--host") + 1] == "0.0.0.0"
    (port,) = page["ports"]
    assert port.startswith("${ALERTS_PAGE_BIND:-127.0.0.1}:") and port.endswith(":8080")
    assert _environment(page)[ENV_PREFIX + "REVIEW_TOKENS"].startswith("${FRAUD_REVIEW_TOKENS:?")
    assert "/api/status" in " ".join(page["healthcheck"]["test"])
    assert {"kafka", "redis"} <= set(page["depends_on"])
