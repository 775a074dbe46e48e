"""The deployment files agree with the code and with each other, and are valid for the tools that
read them: the Kubernetes manifests against Kubernetes' own schemas, the Helm values' Dagster
configuration against Dagster's config schemas, the names one file uses where another defines
them. The Compose file is run end to end by scripts/verify_compose.py (in CI); the Celery
deployment it describes by test_workers.py.
"""

from __future__ import annotations

import copy
import importlib
import re
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from dagster._core.errors import DagsterInvalidConfigError
from dagster._serdes import ConfigurableClassData
from pydantic import AliasChoices

from face_assets.core.settings import Settings
from face_assets.jobs import RECLUSTER_TAG

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
KUBERNETES_VERSION = "1.30.0"
# Variables read by Dagster or libpq rather than by face_assets' settings: DAGSTER_HOME, the
# password libpq takes when the URL has none, and those the shipped dagster.yaml names.
OTHER_VARIABLES = {"DAGSTER_HOME", "PGPASSWORD"} | set(
    re.findall(r"env: (\w+)", (DEPLOY / "dagster-celery.yaml").read_text())
)


@pytest.fixture(scope="module")
def worker() -> Any:
    """face_assets.worker, which makes its Celery app at import from the broker's settings."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FACE_ASSETS_CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
        patch.setenv("FACE_ASSETS_CELERY_BACKEND_URL", "redis://127.0.0.1:6379/1")
        return importlib.import_module("face_assets.worker")


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def manifests() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((DEPLOY / "helm" / "workers.yaml").read_text()) if doc]


def by_kind(kind: str, name: str) -> dict[str, Any]:
    return next(m for m in manifests() if m["kind"] == kind and m["metadata"]["name"] == name)


def setting_variables() -> set[str]:
    """Every environment variable face_assets' settings read."""
    names = set()
    for field, info in Settings.model_fields.items():
        if isinstance(info.validation_alias, AliasChoices):
            names |= {str(choice) for choice in info.validation_alias.choices}
        else:
            names.add(f"FACE_ASSETS_{field.upper()}")
    return names


def assert_known_variables(names: set[str], where: str) -> None:
    unknown = names - setting_variables() - OTHER_VARIABLES
    assert not unknown, f"{where} sets variables nothing reads: {sorted(unknown)}"


def celery_yaml() -> dict[str, Any]:
    return load(DEPLOY / "dagster-celery.yaml")


def helm_values() -> dict[str, Any]:
    return load(DEPLOY / "helm" / "values.yaml")


def helm_instance(values: dict[str, Any]) -> dict[str, Any]:
    """The run queue, run launcher and run monitoring of the dagster.yaml the chart renders from
    these values (its templates' mapping of camelCase values to Dagster's keys)."""
    queued = values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    launcher = values["runLauncher"]["config"]["customRunLauncher"]
    monitoring = values["dagsterDaemon"]["runMonitoring"]
    return {
        "run_coordinator": {
            "module": "dagster.core.run_coordinator",
            "class": values["dagsterDaemon"]["runCoordinator"]["type"],
            "config": {
                "max_concurrent_runs": queued["maxConcurrentRuns"],
                "tag_concurrency_limits": queued["tagConcurrencyLimits"],
                "dequeue_interval_seconds": queued["dequeueIntervalSeconds"],
            },
        },
        "run_launcher": {
            "module": launcher["module"],
            "class": launcher["class"],
            "config": launcher["config"],
        },
        "run_monitoring": {
            "enabled": monitoring["enabled"],
            "start_timeout_seconds": monitoring["startTimeoutSeconds"],
            "poll_interval_seconds": monitoring["pollIntervalSeconds"],
            "max_resume_run_attempts": monitoring["maxResumeRunAttempts"],
        },
    }


def dagster_config_errors(section: dict[str, Any]) -> list[str]:
    """Dagster's own check of a configurable class and its config, as the instance loads it."""
    data = ConfigurableClassData(section["module"], section["class"], yaml.safe_dump(section["config"]))
    try:
        data.rehydrate()
    except DagsterInvalidConfigError as error:
        return [e.message for e in error.errors]
    return []


def test_kubernetes_manifests_are_valid_for_kubernetes() -> None:
    for manifest in manifests():
        kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
    # The check is strict: a misspelt field is refused, not ignored.
    broken = copy.deepcopy(by_kind("Deployment", "face-assets-worker"))
    broken["spec"]["template"]["spec"]["containers"][0]["volumeMount"] = []
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_helm_values_give_dagster_the_tested_run_queue_and_launcher(worker: Any) -> None:
    instance = helm_instance(helm_values())
    tested = celery_yaml()
    for section in ("run_coordinator", "run_launcher"):
        assert dagster_config_errors(instance[section]) == [], section
        assert instance[section]["module"] == tested[section]["module"]
        assert instance[section]["class"] == tested[section]["class"]
    assert dagster_config_errors({**instance["run_launcher"], "config": {"backnd": "x"}}), "check must bite"
    queue = instance["run_coordinator"]["config"]
    assert queue["tag_concurrency_limits"] == tested["run_coordinator"]["config"]["tag_concurrency_limits"]
    assert queue["tag_concurrency_limits"] == [{"key": RECLUSTER_TAG, "limit": 1}]
    assert (
        queue["dequeue_interval_seconds"] == tested["run_coordinator"]["config"]["dequeue_interval_seconds"]
    )
    # As many runs at once as there are worker processes, each taking one.
    assert queue["max_concurrent_runs"] == by_kind("Deployment", "face-assets-worker")["spec"]["replicas"]
    launcher = instance["run_launcher"]["config"]
    assert launcher["default_queue"] == tested["run_launcher"]["config"]["default_queue"] == worker.QUEUE
    assert instance["run_monitoring"] == tested["run_monitoring"]


def test_helm_pieces_name_the_same_objects_and_settings(worker: Any) -> None:
    values = helm_values()
    full = values["fullnameOverride"]
    launcher = values["runLauncher"]["config"]["customRunLauncher"]["config"]
    assert re.fullmatch(rf"redis://{full}-redis-master:6379/\d+", launcher["broker"])
    deployment = by_kind("Deployment", "face-assets-worker")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    # Workers, daemon, webserver and code location all reach the same broker the launcher uses.
    assert env["FACE_ASSETS_CELERY_BROKER_URL"]["value"] == launcher["broker"]
    assert env["FACE_ASSETS_CELERY_BACKEND_URL"]["value"] == launcher["backend"]
    app_env = values["dagsterDaemon"]["env"]
    assert app_env["FACE_ASSETS_CELERY_BROKER_URL"] == launcher["broker"]
    for piece in (values["dagsterWebserver"], values["dagster-user-deployments"]["deployments"][0]):
        assert piece["env"] == app_env
    # The chart's objects, by the names fullnameOverride gives them.
    assert env["DAGSTER_PG_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == f"{full}-postgresql-secret"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["dagster-instance"]["configMap"]["name"] == f"{full}-instance"
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    home = values["global"]["dagsterHome"]
    assert mounts["dagster-instance"]["mountPath"] == f"{home}/dagster.yaml"
    assert f"ENV DAGSTER_HOME={home}" in (ROOT / "Dockerfile").read_text()
    # The worker listens on the launcher's queue; the code location serves face_assets' definitions.
    command = container["command"]
    assert command[command.index("-Q") + 1] == worker.QUEUE
    assert command[command.index("-A") + 1] == worker.__name__
    code = values["dagster-user-deployments"]["deployments"][0]
    module = code["codeServerArgs"][code["codeServerArgs"].index("-m") + 1]
    assert hasattr(importlib.import_module(module), "defs")
    # One image everywhere, and the thumbnail volume shared by workers and webserver.
    image = f"{code['image']['repository']}:{code['image']['tag']}"
    assert {c["image"] for m in manifests() if m["kind"] in ("Deployment", "Job")
            for c in m["spec"]["template"]["spec"]["containers"]} == {image}  # fmt: skip
    assert values["dagsterDaemon"]["image"] == values["dagsterWebserver"]["image"] == code["image"]
    claim = volumes["thumbnails"]["persistentVolumeClaim"]["claimName"]
    assert by_kind("PersistentVolumeClaim", claim)["spec"]["accessModes"] == ["ReadWriteMany"]
    assert values["dagsterWebserver"]["volumes"][0]["persistentVolumeClaim"]["claimName"] == claim
    assert_known_variables(set(app_env) | set(env), "the Helm values or workers.yaml")


def test_compose_file_and_dockerfile_refer_to_what_exists(worker: Any) -> None:
    compose = load(DEPLOY / "compose.yaml")
    services = compose["services"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    for source in re.findall(r"^COPY (\S+)", dockerfile, re.M):
        assert (ROOT / source).exists(), f"the Dockerfile copies {source}, which is missing"
    extras = re.search(r"pip install --no-cache-dir '\.\[([^\]]+)\]'", dockerfile)
    assert extras is not None
    defined = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert set(extras.group(1).split(",")) <= set(defined)
    # The workspace baked into the image points at the Compose file's code service and port.
    workspace_target = re.search(r"^COPY deploy/docker/workspace.yaml (\S+)", dockerfile, re.M)
    assert workspace_target is not None
    server = load(DEPLOY / "docker" / "workspace.yaml")["load_from"][0]["grpc_server"]
    assert server["host"] in services
    assert re.search(rf'"-p", "{server["port"]}", "-m", "face_assets.definitions"', dockerfile)
    for name in ("webserver", "daemon"):
        assert workspace_target.group(1) in services[name]["command"]
    command = services["worker"]["command"]
    assert command[command.index("-Q") + 1] == worker.QUEUE
    assert command[command.index("-A") + 1] == worker.__name__
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"compose mounts {source}, which is missing"
    environment = services["code"]["environment"]
    assert_known_variables(set(environment), "deploy/compose.yaml")
    # The variables dagster-celery.yaml reads are all given to the services.
    wanted = set(re.findall(r"env: (\w+)", (DEPLOY / "dagster-celery.yaml").read_text()))
    assert wanted <= set(environment)
    # The override for machines without a registry only replaces images of existing services.
    offline = load(DEPLOY / "offline" / "compose.offline.yaml")
    assert set(offline["services"]) <= set(services)
    for service in offline["services"].values():
        context = DEPLOY / service.get("build", {}).get("context", ".")
        dockerfile_name = service.get("build", {}).get("dockerfile", "Dockerfile")
        assert (context / dockerfile_name).is_file()
