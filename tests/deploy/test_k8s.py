"""deploy/k8s/, checked offline: every manifest against the schemas of a pinned Kubernetes version
(kubernetes-validate, strict: unknown fields are errors), and against the repository: the launcher's
processes each have a Deployment whose module imports, probes point at declared ports, every reference
(ConfigMap, Secret and key, Service selector, Ingress backend, claim) resolves, each process connects to its
own PostgreSQL as its own role, only accounts holds the signing key, every REGISTRY_* name is a setting the
process reads, and each process's environment passes the production settings checks."""

from __future__ import annotations

import copy
import functools
import importlib
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from kubernetes_validate import utils as k8s

from registry_common.launcher import SystemPlan
from registry_common.service import load_definition
from registry_common.settings import SERVICES, RegistrySettings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
KUBERNETES_VERSION = "1.32.0"
NAMESPACE = "registry"
APP_IMAGE = "registry-app"


@functools.cache
def documents() -> tuple[tuple[str, dict[str, Any]], ...]:
    found = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        found += [(path.name, doc) for doc in yaml.safe_load_all(path.read_text()) if doc]
    return tuple(found)


def of_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for _, doc in documents() if doc["kind"] == kind}


def pod_specs() -> dict[str, dict[str, Any]]:
    return {name: doc["spec"]["template"]["spec"] for kind in ("Deployment", "StatefulSet", "Job")
            for name, doc in of_kind(kind).items()}


def containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*spec.get("initContainers", []), *spec["containers"]]


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion from variables defined before."""
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m[1], m[0]), value)


def secret_value(secret: str, key: str) -> str:
    """A placeholder for a secret that must be filled in: URL-safe, recognisable, not empty."""
    assert key in of_kind("Secret")[secret]["stringData"], f"secret {secret} has no key {key}"
    return f"filled-{secret}-{key}".replace(".", "-")


def environment(container: dict[str, Any]) -> dict[str, str]:
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env |= of_kind("ConfigMap")[source["configMapRef"]["name"]]["data"]
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = expand(item["value"], env)
        elif "secretKeyRef" in item.get("valueFrom", {}):
            ref = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = secret_value(ref["name"], ref["key"])
        elif "fieldRef" in item.get("valueFrom", {}):
            env[item["name"]] = "pod-0"
    return env


def plan_processes() -> dict[str, str]:
    """The processes of one system as the launcher starts them (name -> module)."""
    return {p.name: p.module for p in SystemPlan(run_dir=Path("/nonexistent")).processes()}


# The schemas ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("index", range(len(documents())),
                         ids=[f"{f}:{d['kind']}/{d['metadata']['name']}" for f, d in documents()])
def test_manifest_validates_against_the_pinned_kubernetes_schemas(index):
    _, doc = documents()[index]
    k8s.validate(doc, KUBERNETES_VERSION, strict=True)


def test_the_validator_refuses_what_kubernetes_would():
    deployment = copy.deepcopy(of_kind("Deployment")["gateway"])
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["paht"] = "/health"
    with pytest.raises(k8s.ValidationError):
        k8s.validate(deployment, KUBERNETES_VERSION, strict=True)
    deployment = copy.deepcopy(of_kind("Deployment")["gateway"])
    deployment["spec"]["replicas"] = "two"
    with pytest.raises(k8s.ValidationError):
        k8s.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_generated_files_are_current_and_all_applied_by_the_kustomization():
    check = subprocess.run([sys.executable, str(K8S / "generate.py"), "--check"], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    listed = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    on_disk = sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(listed) == on_disk


def test_everything_is_in_the_namespace():
    assert list(of_kind("Namespace")) == [NAMESPACE]
    for name, doc in documents():
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == NAMESPACE, f"{name}: {doc['kind']}/{doc['metadata']['name']}"


# The processes ----------------------------------------------------------------------------------------------
def test_every_process_of_the_launcher_has_a_deployment_running_its_module():
    deployments = of_kind("Deployment")
    for name, module in plan_processes().items():
        assert name in deployments, f"no Deployment for {name} ({module})"
        [container] = deployments[name]["spec"]["template"]["spec"]["containers"]
        assert container["command"] == ["python", "-m", module], name
        assert deployments[name]["spec"]["replicas"] >= 2, f"{name}: one replica is a single point of failure"
    assert set(deployments) == set(plan_processes()), "a Deployment the launcher does not know"


@pytest.mark.parametrize("module", sorted({*plan_processes().values(), "registry_common.provision"}))
def test_command_module_imports(module):
    imported = importlib.import_module(module)
    assert callable(getattr(imported, "main", None)) or module.endswith((".api", ".worker")), module


def test_provisioning_declares_every_queue_first_then_each_service_on_its_own_server():
    job = of_kind("Job")["registry-provision"]["spec"]["template"]["spec"]
    steps = containers(job)
    assert steps[0]["command"][:2] == ["python", "-c"]
    program = steps[0]["command"][2]
    compile(program, "topology", "exec")
    for module, names in re.findall(r"from ([\w.]+) import ([\w, ]+);", program):
        imported = importlib.import_module(module)
        for name in names.split(","):
            assert hasattr(imported, name.strip()), f"{module} has no {name.strip()}"
    assert [s["command"] for s in steps[1:]] == [["python", "-m", "registry_common.provision", s] for s in SERVICES]
    assert job["restartPolicy"] == "OnFailure"
    for service, step in zip(SERVICES, steps[1:], strict=True):
        env = environment(step)
        admin = urlsplit(env["REGISTRY_ADMIN_DATABASE_URL"])
        owner = urlsplit(env["REGISTRY_MIGRATION_DATABASE_URL"])
        assert (admin.username, admin.hostname, admin.path) == ("postgres", f"postgres-{service}", "/postgres")
        assert (owner.username, owner.hostname, owner.path) == (f"{service}_owner", f"postgres-{service}",
                                                                f"/registry_{service}")
        assert owner.password == secret_value(f"registry-db-{service}", "owner-password")
        settings = load_definition(service).settings_class(service=service, **settings_arguments(env))
        assert settings.owner_database_url == env["REGISTRY_MIGRATION_DATABASE_URL"]
    accounts = environment(steps[1])
    assert accounts["REGISTRY_BOOTSTRAP_ADMIN_PASSWORD"], "the first administrator's password"


def test_probes_point_at_declared_ports_and_the_port_the_process_listens_on():
    for name, spec in pod_specs().items():
        if name in of_kind("Job"):
            continue  # runs to completion: nothing to probe
        for container in spec["containers"]:
            ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
            probes = {kind: container.get(kind) for kind in ("startupProbe", "livenessProbe", "readinessProbe")}
            assert probes["livenessProbe"] and probes["readinessProbe"], f"{name}: liveness and readiness"
            if name not in plan_processes():
                continue
            env = environment(container)
            listens = int(env["REGISTRY_WORKER_HTTP_PORT" if name.endswith("-worker") else "REGISTRY_HTTP_PORT"])
            assert list(ports.values()) == [listens], f"{name} declares {ports}, listens on {listens}"
            assert probes["livenessProbe"]["httpGet"]["path"] == "/health"
            assert probes["readinessProbe"]["httpGet"]["path"] == "/ready"
            for kind, probe in probes.items():
                if probe is None:
                    continue
                port = probe["httpGet"]["port"]
                assert ports.get(port, port) == listens, f"{name} {kind}: port {port} is not {listens}"


def test_every_container_has_requests_and_limits_and_runs_restricted():
    for name, spec in pod_specs().items():
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        for container in containers(spec):
            resources = container.get("resources", {})
            for part in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources.get(part, {})), f"{name}/{container['name']}: {part}"
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False and security["capabilities"]["drop"] == ["ALL"]


# References -------------------------------------------------------------------------------------------------
def test_every_configmap_secret_and_key_referenced_exists():
    config_maps, secrets, claims = of_kind("ConfigMap"), of_kind("Secret"), of_kind("PersistentVolumeClaim")
    for name, spec in pod_specs().items():
        for volume in spec.get("volumes", []):
            if "configMap" in volume:
                assert volume["configMap"]["name"] in config_maps, (name, volume)
            if "secret" in volume:
                secret = secrets.get(volume["secret"]["secretName"])
                assert secret is not None, (name, volume)
                for item in volume["secret"].get("items", []):
                    assert item["key"] in secret["stringData"], (name, item)
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims, (name, volume)
        mounted = {v["name"] for v in spec.get("volumes", [])}
        for container in containers(spec):
            environment(container)  # every envFrom ConfigMap and secretKeyRef (name and key) resolves
            for mount in container.get("volumeMounts", []):
                templates = {t["metadata"]["name"] for t in of_kind("StatefulSet").get(name, {}).get(
                    "spec", {}).get("volumeClaimTemplates", [])}
                assert mount["name"] in mounted | templates, (name, mount)


def test_services_select_pods_on_named_ports_and_the_ingress_reaches_the_gateway():
    pods = {name: (doc["spec"]["template"]["metadata"]["labels"], containers(doc["spec"]["template"]["spec"]))
            for kind in ("Deployment", "StatefulSet") for name, doc in of_kind(kind).items()}
    for name, service in of_kind("Service").items():
        selector = service["spec"]["selector"]
        matched = [pod for pod, (labels, _) in pods.items() if selector.items() <= labels.items()]
        assert len(matched) == 1, f"Service {name} selects {matched}"
        ports = {p["name"] for c in pods[matched[0]][1] for p in c.get("ports", [])}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports, f"Service {name}: {port['targetPort']} not in {ports}"
    for process in plan_processes():
        assert process in of_kind("Service"), f"no Service for {process} (the gateway reaches it by this name)"
        not_ready_too = of_kind("Service")[process]["spec"].get("publishNotReadyAddresses", False)
        assert not_ready_too == process.endswith("-worker"), (
            f"{process}: a worker's Service must list pods that are not ready (the gateway reports why); "
            "an API's must not (it carries requests)")
    [rule] = of_kind("Ingress")["gateway"]["spec"]["rules"]
    backend = rule["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] == "gateway"
    assert backend["port"]["name"] in {p["name"] for p in of_kind("Service")["gateway"]["spec"]["ports"]}


def test_gateway_finds_every_api_and_worker_by_its_service_name():
    [container] = of_kind("Deployment")["gateway"]["spec"]["template"]["spec"]["containers"]
    env = environment(container)
    services = of_kind("Service")
    for svc in SERVICES:
        for kind, variable in (("api", "UPSTREAM"), ("worker", "WORKER")):
            url = urlsplit(env[f"REGISTRY_GATEWAY_{variable}_{svc.upper()}"])
            assert url.hostname == f"{svc}-{kind}"
            assert url.port in {p["port"] for p in services[f"{svc}-{kind}"]["spec"]["ports"]}


# Each process: its own database and role, its secrets, its settings ------------------------------------------
def settings_arguments(env: dict[str, str]) -> dict[str, str]:
    return {key.removeprefix("REGISTRY_").lower(): value for key, value in env.items()
            if key.startswith("REGISTRY_") and not key.startswith("REGISTRY_GATEWAY_") and key != "REGISTRY_SERVICE"}


@pytest.mark.parametrize("process", sorted(plan_processes()))
def test_environment_passes_the_production_checks_with_its_own_database(process, monkeypatch):
    [container] = of_kind("Deployment")[process]["spec"]["template"]["spec"]["containers"]
    env = environment(container)
    service = process.rsplit("-", 1)[0] if process != "gateway" else "gateway"
    settings_class = RegistrySettings if service == "gateway" else load_definition(service).settings_class
    known = set(settings_class.model_fields)
    unknown = {key for key in settings_arguments(env) if key not in known}
    assert not unknown, f"{process}: REGISTRY_* names no setting reads: {sorted(unknown)}"

    for key in list(os.environ):
        if key.startswith("REGISTRY_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = settings_class(service=service)  # refuses clock control, guest broker, missing key, ...
    assert settings.environment == "production" and not settings.clock_control and not settings.faults
    assert "guest" not in settings.amqp_url and urlsplit(settings.amqp_url).hostname == "rabbitmq"
    if service == "gateway":
        assert "REGISTRY_DATABASE_URL" not in env, "the gateway owns no database"
        return
    url = urlsplit(settings.app_database_url)
    assert (url.username, url.hostname, url.path) == (f"{service}_app", f"postgres-{service}", f"/registry_{service}")
    assert url.password == secret_value(f"registry-db-{service}", "app-password")
    foreign = [other for other in SERVICES if other != service
               and any(other in value for key, value in env.items() if "DATABASE" in key)]
    assert not foreign, f"{process} names another service's database: {foreign}"


def test_only_accounts_holds_the_signing_key_and_accounts_processes_share_the_checkpoints():
    for name, spec in pod_specs().items():
        secrets = {v["secret"]["secretName"] for v in spec.get("volumes", []) if "secret" in v}
        assert ("registry-jwt-private" in secrets) == name.startswith("accounts-"), name
        if name in plan_processes():
            assert "registry-jwt-public" in secrets, f"{name} verifies tokens"
    for name in ("accounts-api", "accounts-worker"):
        spec = of_kind("Deployment")[name]["spec"]["template"]["spec"]
        claim = [v for v in spec["volumes"] if v["name"] == "checkpoints"][0]["persistentVolumeClaim"]["claimName"]
        [container] = spec["containers"]
        mount = [m for m in container["volumeMounts"] if m["name"] == "checkpoints"][0]["mountPath"]
        assert mount == environment(container)["REGISTRY_JOURNAL_CHECKPOINT_DIR"]
        assert "ReadWriteMany" in of_kind("PersistentVolumeClaim")[claim]["spec"]["accessModes"]


def test_secrets_ship_empty_so_nothing_starts_with_a_known_password():
    for name, secret in of_kind("Secret").items():
        filled = {k: v for k, v in secret["stringData"].items() if v and k != "username"}
        assert not filled, f"{name} carries values: {sorted(filled)}"


# Infrastructure ---------------------------------------------------------------------------------------------
def test_postgresql_per_service_initialised_with_its_roles():
    statefulsets = of_kind("StatefulSet")
    init = of_kind("ConfigMap")["registry-postgres-init"]["data"]["01-roles-and-databases.sh"]
    assert init == (ROOT / "deploy/postgres/init/01-roles-and-databases.sh").read_text()
    for service in SERVICES:
        spec = statefulsets[f"postgres-{service}"]["spec"]
        assert spec["replicas"] == 1 and spec["volumeClaimTemplates"], service
        [container] = spec["template"]["spec"]["containers"]
        assert container["image"].startswith("postgres:15")
        env = environment(container)
        assert env["DB_SERVICES"] == service
        assert env[f"{service.upper()}_APP_PASSWORD"] == secret_value(f"registry-db-{service}", "app-password")
        assert any(m["mountPath"] == "/docker-entrypoint-initdb.d" for m in container["volumeMounts"])


def test_rabbitmq_is_a_three_node_statefulset_and_the_code_declares_quorum_queues():
    spec = of_kind("StatefulSet")["rabbitmq"]["spec"]
    assert spec["replicas"] == 3 and spec["serviceName"] == "rabbitmq-nodes"
    conf = of_kind("ConfigMap")["rabbitmq-config"]["data"]["20-registry.conf"]
    for n in range(3):
        assert f"rabbit@rabbitmq-{n}.rabbitmq-nodes.{NAMESPACE}.svc.cluster.local" in conf
    topology = (ROOT / "libs/registry_common/src/registry_common/messaging/topology.py").read_text()
    assert '"x-queue-type": "quorum"' in topology
    assert of_kind("Service")["rabbitmq-nodes"]["spec"]["publishNotReadyAddresses"] is True


def test_every_application_image_is_the_one_the_dockerfile_builds():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert [i["name"] for i in kustomization["images"]] == [APP_IMAGE]
    for name, spec in pod_specs().items():
        for container in containers(spec):
            image = container["image"].split(":")[0]
            assert image in (APP_IMAGE, "postgres", "rabbitmq"), (name, container["image"])


def test_each_database_answers_only_its_own_service_and_provisioning():
    policies = of_kind("NetworkPolicy")
    pods = {name: doc["spec"]["template"]["metadata"]["labels"]
            for kind in ("Deployment", "StatefulSet", "Job") for name, doc in of_kind(kind).items()}

    def admitted(policy: dict[str, Any], port: int) -> set[str]:
        names = set()
        for rule in policy["spec"]["ingress"]:
            if port not in {p["port"] for p in rule["ports"]}:
                continue
            for peer in rule["from"]:
                if "namespaceSelector" in peer:
                    return {"*"}
                wanted = peer["podSelector"]["matchLabels"].items()
                names |= {pod for pod, labels in pods.items() if wanted <= labels.items()}
        return names

    for service in SERVICES:
        policy = policies[f"postgres-{service}"]
        assert policy["spec"]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": f"postgres-{service}"}
        assert admitted(policy, 5432) == {f"{service}-api", f"{service}-worker", f"postgres-{service}",
                                          "registry-provision"}
    broker = policies["rabbitmq"]
    assert {f"{s}-worker" for s in SERVICES} | {"registry-provision"} <= admitted(broker, 5672)
    assert admitted(broker, 25672) == {"rabbitmq"}
