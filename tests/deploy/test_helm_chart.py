"""deploy/helm/eventflow: the Helm chart, rendered by Helm's own engine.

Helm comes from the PyPI package helm-python-sdk (Helm's Go SDK built as a shared
library, called through ctypes): the same template engine, Sprig functions and
values.schema.json validation as `helm template`, offline. Every rendered object
is validated against the Kubernetes OpenAPI schemas (kubernetes-validate, strict:
unknown fields are errors), the KEDA ScaledObject against KEDA's own CRD schema
(tests/deploy/fixtures/keda), and bad values must be refused.
"""

from __future__ import annotations

import copy
import re
import shutil
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jsonschema
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml
from pydantic import AliasChoices

from eventflow.cli import _parser
from eventflow.config import Settings
from eventflow.pipeline.streams import MAX_PARTITIONS, partition_stream, partition_tag

if TYPE_CHECKING:
    import helm_python as helm
else:
    try:
        import helm_python as helm
    except ImportError:  # reported by the `engine` fixture: these tests must not skip
        helm = None

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "eventflow"
DOCKERFILE = ROOT / "Dockerfile"
KEDA_CRD = Path(__file__).parent / "fixtures" / "keda" / "keda.sh_scaledobjects.yaml"
RELEASE = "ef"
NAMESPACE = "events"
FULLNAME = "ef-eventflow"
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and a recent one.
KUBE_VERSIONS = ("1.25.0", "1.34.0")
# Read by the command-line tools (eventflow.cli), not by Settings.
TOOL_ENV = {"EVENTFLOW_API_KEY"}
# The partitioned streams' settings, which Settings gains in the same series of
# changes as this chart (accepted here whether or not config.py has them yet).
PARTITION_ENV = {"EVENTFLOW_PARTITIONS", "EVENTFLOW_REDIS_CLUSTER"}

Object = dict[str, Any]
Values = dict[str, Any]


@pytest.fixture(scope="module", autouse=True)
def engine() -> str:
    """Helm's engine, or a loud failure naming the missing dev dependency."""
    if helm is None:
        pytest.fail(
            "helm_python is not importable: install the dev dependencies "
            "(pip install -e '.[dev]', which brings helm-python-sdk)"
        )
    try:
        version = helm.helm_sdk_version()
    except Exception as exc:  # the native library did not load
        pytest.fail(f"helm-python-sdk cannot load Helm's library: {exc}")
    assert re.match(r"^v[34]\.", version), version
    return version


@dataclass
class Rendered:
    """The objects of one `helm template`, and NOTES.txt."""

    objects: list[Object]
    notes: str

    def all(self, kind: str) -> list[Object]:
        return [o for o in self.objects if o["kind"] == kind]

    def names(self, kind: str) -> set[str]:
        return {o["metadata"]["name"] for o in self.all(kind)}

    def get(self, kind: str, name: str) -> Object:
        found = [o for o in self.all(kind) if o["metadata"]["name"] == name]
        assert len(found) == 1, f"{kind}/{name}: {len(found)} rendered"
        return found[0]

    def deployment(self, component: str) -> Object:
        return self.get("Deployment", f"{FULLNAME}-{component}")


def render(values: Values | None = None, chart: Path = CHART) -> Rendered:
    """The chart rendered as `helm template ef deploy/helm/eventflow -n events`
    would: values checked against values.schema.json first."""
    assert helm is not None
    with helm.Chart.load(chart) as loaded:
        manifests = loaded.render(
            values or {}, name=RELEASE, namespace=NAMESPACE, is_install=True
        )
    objects: list[Object] = []
    for path, text in sorted(manifests.items()):
        if not path.endswith(".yaml"):
            continue
        objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    notes = next((t for p, t in manifests.items() if p.endswith("NOTES.txt")), "")
    return Rendered(objects, notes)


def refused(values: Values, chart: Path = CHART) -> str:
    """The error message of a render that must fail."""
    assert helm is not None
    with pytest.raises(helm.HelmError) as caught:
        render(values, chart)
    return str(caught.value)


def merged(*layers: Values) -> Values:
    """Values layered like several `-f` files: later ones win, maps merge."""
    result: Values = {}
    for layer in layers:
        _merge_into(result, copy.deepcopy(layer))
    return result


def _merge_into(target: Values, layer: Values) -> None:
    for key, value in layer.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge_into(target[key], value)
        else:
            target[key] = value


def pod_specs(rendered: Rendered) -> Iterator[tuple[str, Object]]:
    """Every pod spec: Deployments', Jobs' and bare Pods' (helm test)."""
    for obj in rendered.objects:
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        if obj["kind"] in ("Deployment", "Job"):
            yield name, obj["spec"]["template"]["spec"]
        elif obj["kind"] == "Pod":
            yield name, obj["spec"]


def container(rendered: Rendered, component: str) -> Object:
    containers = rendered.deployment(component)["spec"]["template"]["spec"][
        "containers"
    ]
    assert len(containers) == 1
    result: Object = containers[0]
    return result


def env_of(c: Object) -> dict[str, Object]:
    """A container's environment by name (each entry whole: value or valueFrom)."""
    names = [e["name"] for e in c.get("env", [])]
    assert len(names) == len(set(names)), f"duplicate variables: {names}"
    return {e["name"]: e for e in c.get("env", [])}


def env_values(c: Object) -> dict[str, str]:
    return {n: e["value"] for n, e in env_of(c).items() if "value" in e}


def secret_ref(c: Object, name: str) -> tuple[str, str]:
    ref = env_of(c)[name]["valueFrom"]["secretKeyRef"]
    return ref["name"], ref["key"]


def settings_env_names() -> set[str]:
    """Every environment variable name Settings reads (upper case)."""
    prefix = str(Settings.model_config.get("env_prefix", ""))
    names: set[str] = set()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias or field.alias
        if isinstance(alias, AliasChoices):
            names.update(c.upper() for c in alias.choices if isinstance(c, str))
        elif isinstance(alias, str):
            names.add(alias.upper())
        else:
            names.add(f"{prefix}{name}".upper())
    return names


# --- Value sets -------------------------------------------------------------

REAL_URLS: Values = {
    "secrets": {
        "databaseUrl": "postgresql://eventflow:pw@db.internal:5432/eventflow",
        "redisUrl": "redis://:pw@redis.internal:6379/0",
    }
}
CLUSTER_STREAMS = [f"eventflow:events:{{{p}.{p * 7}}}" for p in range(4)]
SCENARIOS: dict[str, Values] = {
    "defaults": {},
    "ingress": merged(
        REAL_URLS,
        {
            "ingress": {
                "enabled": True,
                "className": "nginx",
                "host": "events.example.org",
                "annotations": {"cert-manager.io/cluster-issuer": "letsencrypt"},
                "tls": {"enabled": True},
            }
        },
    ),
    "keda-cluster": {
        "partitions": 4,
        "redis": {"cluster": True},
        "secrets": {
            "existingSecret": "eventflow-connections",
            "redisPasswordKey": "redis-password",
        },
        "worker": {
            "autoscaling": {
                "keda": {
                    "enabled": True,
                    "address": "redis-0.redis:6379,redis-1.redis:6379",
                    "streams": CLUSTER_STREAMS,
                    "maxReplicaCount": 4,
                    "lagCount": 500,
                }
            }
        },
    },
    "keda-standalone": merged(
        REAL_URLS,
        {
            "partitions": 3,
            "secrets": {"redisPassword": "s3cret"},
            "worker": {
                "autoscaling": {
                    "keda": {
                        "enabled": True,
                        "address": "redis.internal:6379",
                        "databaseIndex": 2,
                        "enableTLS": True,
                        "streamKeyFormat": "%s:{%d}",
                        "metric": "length",
                        "streamLength": 2000,
                        "aggregate": "max",
                    }
                }
            },
        },
    ),
    "hpa": merged(
        REAL_URLS,
        {
            "api": {"autoscaling": {"hpa": {"enabled": True, "maxReplicas": 6}}},
            "worker": {"autoscaling": {"hpa": {"enabled": True, "maxReplicas": 8}}},
        },
    ),
    "existing-secrets": {
        "secrets": {
            "existingSecret": "eventflow-connections",
            "databaseUrlKey": "database-url",
            "redisUrlKey": "redis-url",
        },
        "apiKey": {"existingSecret": "eventflow-admin-key", "key": "token"},
        "serviceAccount": {"create": False, "name": "eventflow-workload"},
        "secretEnv": {
            "EVENTFLOW_CORS_ORIGINS": {"secretName": "cors", "key": "origins"}
        },
        "env": {"EVENTFLOW_LOG_LEVEL": "DEBUG", "EVENTFLOW_MAX_CONSUMER_LAG": 1000000},
        "worker": {"env": {"EVENTFLOW_LOG_LEVEL": "WARNING"}},
    },
    "pdb-off": merged(
        REAL_URLS,
        {
            "api": {"pdb": {"enabled": False}},
            "worker": {"pdb": {"enabled": False}},
            "migrations": {"enabled": False},
            "tests": {"enabled": False},
        },
    ),
    "pdb-min-available": merged(
        REAL_URLS,
        {
            "api": {"pdb": {"minAvailable": 1}},
            "worker": {"pdb": {"maxUnavailable": "50%"}},
        },
    ),
}


@cache
def scenario(name: str) -> Rendered:
    return render(SCENARIOS[name])


# --- The chart and its engine ---------------------------------------------


def test_chart_metadata_follows_the_package() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "eventflow"
    assert chart["appVersion"] == project["version"]
    assert (
        scenario("defaults").deployment("api")["spec"]["template"]["spec"][
            "containers"
        ][0]["image"]
        == f"eventflow:{project['version']}"
    )


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_helm_lint_strict(name: str) -> None:
    assert helm is not None
    report = helm.lint(CHART, SCENARIOS[name], strict=True, kube_version="v1.34.0")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not problems and not report["errors"], report


@pytest.mark.parametrize("name", sorted(SCENARIOS))
@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_every_object_is_valid_kubernetes(name: str, kube_version: str) -> None:
    rendered = scenario(name)
    assert rendered.objects
    for obj in rendered.objects:
        if obj["apiVersion"].startswith("keda.sh/"):
            continue  # KEDA's kinds are checked against KEDA's CRDs below
        try:
            kubernetes_validate.validate(obj, kube_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = f"{obj['kind']}/{obj['metadata']['name']}"
            pytest.fail(f"{name}: {where} invalid for Kubernetes {kube_version}: {exc}")


def test_default_objects() -> None:
    rendered = scenario("defaults")
    kinds = sorted((o["kind"], o["metadata"]["name"]) for o in rendered.objects)
    assert kinds == sorted(
        [
            ("Deployment", f"{FULLNAME}-api"),
            ("Deployment", f"{FULLNAME}-worker"),
            ("Job", f"{FULLNAME}-migrate"),
            ("PodDisruptionBudget", f"{FULLNAME}-api"),
            ("PodDisruptionBudget", f"{FULLNAME}-worker"),
            ("Pod", f"{FULLNAME}-test-api"),
            ("Secret", FULLNAME),
            ("Secret", f"{FULLNAME}-migrate"),
            ("Service", f"{FULLNAME}-api"),
            ("ServiceAccount", FULLNAME),
        ]
    )
    for obj in rendered.objects:
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "eventflow"
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["helm.sh/chart"] == "eventflow-0.1.0"
    assert "secrets.databaseUrl is the chart's default" in rendered.notes


# --- Pods: security, resources, probes ---------------------------------------


def dockerfile_uid() -> int:
    match = re.search(r"^USER (\d+):(\d+)$", DOCKERFILE.read_text(), re.MULTILINE)
    assert match, "Dockerfile has no numeric USER"
    return int(match.group(1))


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_every_pod_is_locked_down(name: str) -> None:
    rendered = scenario(name)
    specs = list(pod_specs(rendered))
    assert specs
    for where, spec in specs:
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, where
        assert pod["runAsUser"] == dockerfile_uid(), where
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, where
        assert spec["automountServiceAccountToken"] is False, where
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert "emptyDir" in volumes["tmp"], where
        for c in spec["containers"]:
            security = c["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, where
            assert security["readOnlyRootFilesystem"] is True, where
            assert security["capabilities"]["drop"] == ["ALL"], where
            assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"], where
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][bound]), where


def test_resources_come_from_values() -> None:
    rendered = render(
        {
            "worker": {
                "resources": {
                    "requests": {"cpu": "2", "memory": "1Gi"},
                    "limits": {"cpu": "4", "memory": "2Gi"},
                }
            }
        }
    )
    assert container(rendered, "worker")["resources"] == {
        "requests": {"cpu": "2", "memory": "1Gi"},
        "limits": {"cpu": "4", "memory": "2Gi"},
    }


def test_api_runs_the_api_with_probes() -> None:
    rendered = scenario("defaults")
    api = container(rendered, "api")
    assert api["command"] == ["eventflow"]
    args = _parser().parse_args(api["args"])
    assert (args.command, args.host, args.port) == ("api", "0.0.0.0", 8000)
    ports = {p["name"]: p["containerPort"] for p in api["ports"]}
    assert ports == {"http": 8000, "metrics": 9101}
    assert api["livenessProbe"]["httpGet"] == {"path": "/health/live", "port": "http"}
    assert api["readinessProbe"]["httpGet"] == {
        "path": "/health/ready",
        "port": "http",
    }
    env = env_values(api)
    assert env["EVENTFLOW_API_PORT"] == "8000"
    assert env["EVENTFLOW_AUTH_REQUIRED"] == "true"
    assert env["EVENTFLOW_API_METRICS_PORT"] == "9101"
    service = rendered.get("Service", f"{FULLNAME}-api")
    assert (
        service["spec"]["selector"]
        == rendered.deployment("api")["spec"]["selector"]["matchLabels"]
    )
    assert {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"} in (
        service["spec"]["ports"]
    )


def test_worker_runs_the_worker_with_the_images_health_probe() -> None:
    rendered = scenario("defaults")
    worker = container(rendered, "worker")
    assert worker["command"] == ["eventflow"]
    assert _parser().parse_args(worker["args"]).command == "worker"
    probe = worker["livenessProbe"]["exec"]["command"]
    # The probe is the image's own HEALTHCHECK script, where the Dockerfile puts it.
    copied = re.search(
        r"^COPY deploy/healthcheck\.py (\S+)$", DOCKERFILE.read_text(), re.MULTILINE
    )
    assert copied is not None
    assert probe == ["python", copied.group(1)]
    assert env_values(worker)["EVENTFLOW_WORKER_METRICS_PORT"] == "9100"
    assert worker["ports"] == [
        {"name": "metrics", "containerPort": 9100, "protocol": "TCP"}
    ]
    grace = rendered.deployment("worker")["spec"]["template"]["spec"][
        "terminationGracePeriodSeconds"
    ]
    assert grace > Settings.model_fields["shutdown_timeout_s"].default
    assert rendered.deployment("worker")["spec"]["replicas"] == 2


# --- Migrations ----------------------------------------------------------------


def test_migrations_run_as_a_hook_before_install_and_upgrade() -> None:
    rendered = scenario("defaults")
    job = rendered.get("Job", f"{FULLNAME}-migrate")
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
    spec = job["spec"]["template"]["spec"]
    (migrate,) = spec["containers"]
    assert migrate["command"] == ["eventflow"]
    assert _parser().parse_args(migrate["args"]).command == "migrate"
    assert spec["restartPolicy"] == "Never"
    # Before install, the release's own Secret and ServiceAccount do not exist:
    # the Job reads a hook Secret created just before it, under the default account.
    assert "serviceAccountName" not in spec
    hook_secret = rendered.get("Secret", f"{FULLNAME}-migrate")
    secret_annotations = hook_secret["metadata"]["annotations"]
    assert secret_annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert int(secret_annotations["helm.sh/hook-weight"]) < int(
        annotations["helm.sh/hook-weight"]
    )
    assert secret_ref(migrate, "DATABASE_URL") == (
        f"{FULLNAME}-migrate",
        "DATABASE_URL",
    )
    assert (
        hook_secret["stringData"]["DATABASE_URL"]
        == (rendered.get("Secret", FULLNAME)["stringData"]["DATABASE_URL"])
    )
    assert "hook" not in str(rendered.get("Secret", FULLNAME)["metadata"])


def test_migrations_with_an_existing_secret_and_account() -> None:
    rendered = scenario("existing-secrets")
    job = rendered.get("Job", f"{FULLNAME}-migrate")
    spec = job["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == "eventflow-workload"
    assert secret_ref(spec["containers"][0], "DATABASE_URL") == (
        "eventflow-connections",
        "database-url",
    )
    assert rendered.all("Secret") == []


def test_migrations_can_be_turned_off() -> None:
    assert scenario("pdb-off").all("Job") == []
    assert "run `eventflow migrate` yourself" in scenario("pdb-off").notes


# --- Secrets and environment -------------------------------------------------


def test_connection_urls_come_from_the_charts_secret() -> None:
    rendered = scenario("ingress")
    secret = rendered.get("Secret", FULLNAME)
    assert secret["stringData"] == {
        "DATABASE_URL": REAL_URLS["secrets"]["databaseUrl"],
        "REDIS_URL": REAL_URLS["secrets"]["redisUrl"],
    }
    for component in ("api", "worker"):
        c = container(rendered, component)
        assert secret_ref(c, "DATABASE_URL") == (FULLNAME, "DATABASE_URL")
        assert secret_ref(c, "REDIS_URL") == (FULLNAME, "REDIS_URL")
        # Pods roll when the Secret changes.
        annotations = rendered.deployment(component)["spec"]["template"]["metadata"][
            "annotations"
        ]
        assert re.fullmatch(r"[0-9a-f]{64}", annotations["checksum/secret"])
    # No URL in plain text anywhere but the Secrets.
    for obj in rendered.objects:
        if obj["kind"] != "Secret":
            assert "pw@" not in yaml.safe_dump(obj), obj["metadata"]["name"]


def test_existing_secrets_and_extra_environment() -> None:
    rendered = scenario("existing-secrets")
    api, worker = container(rendered, "api"), container(rendered, "worker")
    for c in (api, worker):
        assert secret_ref(c, "DATABASE_URL") == (
            "eventflow-connections",
            "database-url",
        )
        assert secret_ref(c, "REDIS_URL") == ("eventflow-connections", "redis-url")
        assert secret_ref(c, "EVENTFLOW_CORS_ORIGINS") == ("cors", "origins")
        assert env_values(c)["EVENTFLOW_MAX_CONSUMER_LAG"] == "1000000"
    assert secret_ref(api, "EVENTFLOW_API_KEY") == ("eventflow-admin-key", "token")
    assert "EVENTFLOW_API_KEY" not in env_of(worker)
    # A component's own env wins over the global one.
    assert env_values(api)["EVENTFLOW_LOG_LEVEL"] == "DEBUG"
    assert env_values(worker)["EVENTFLOW_LOG_LEVEL"] == "WARNING"
    for component in ("api", "worker"):
        spec = rendered.deployment(component)["spec"]["template"]
        assert spec["spec"]["serviceAccountName"] == "eventflow-workload"
        assert "checksum/secret" not in (spec["metadata"].get("annotations") or {})
    assert rendered.all("ServiceAccount") == []


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_every_variable_is_a_setting(name: str) -> None:
    """The chart sets only variables EventFlow reads (a typo would be ignored)."""
    known = settings_env_names() | TOOL_ENV | PARTITION_ENV
    for component in ("api", "worker"):
        c = container(scenario(name), component)
        unknown = set(env_of(c)) - known
        assert not unknown, f"{component}: {sorted(unknown)}"


def test_partitions_and_cluster_settings() -> None:
    rendered = scenario("keda-cluster")
    for component in ("api", "worker"):
        env = env_values(container(rendered, component))
        assert env["EVENTFLOW_PARTITIONS"] == "4"
        assert env["EVENTFLOW_REDIS_CLUSTER"] == "true"
        assert env["EVENTFLOW_CONSUMER_GROUP"] == "eventflow-workers"
        assert env["EVENTFLOW_STREAM_NAME"] == "eventflow:events"
    defaults = env_values(container(scenario("defaults"), "worker"))
    assert defaults["EVENTFLOW_PARTITIONS"] == "8"  # EventFlow's default too
    assert defaults["EVENTFLOW_REDIS_CLUSTER"] == "false"


# --- Ingress, disruption budgets, HPA -----------------------------------------


def test_ingress() -> None:
    rendered = scenario("ingress")
    ingress = rendered.get("Ingress", f"{FULLNAME}-api")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["metadata"]["annotations"] == {
        "cert-manager.io/cluster-issuer": "letsencrypt"
    }
    assert ingress["spec"]["tls"] == [
        {"hosts": ["events.example.org"], "secretName": f"{FULLNAME}-tls"}
    ]
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == "events.example.org"
    (path,) = rule["http"]["paths"]
    assert path["backend"]["service"] == {
        "name": f"{FULLNAME}-api",
        "port": {"name": "http"},
    }
    assert "https://events.example.org/" in rendered.notes
    assert scenario("defaults").all("Ingress") == []


def test_disruption_budgets() -> None:
    defaults = scenario("defaults")
    for component in ("api", "worker"):
        pdb = defaults.get("PodDisruptionBudget", f"{FULLNAME}-{component}")
        assert pdb["spec"]["maxUnavailable"] == 1
        assert "minAvailable" not in pdb["spec"]
        assert (
            pdb["spec"]["selector"]["matchLabels"]
            == defaults.deployment(component)["spec"]["selector"]["matchLabels"]
        )
    tuned = scenario("pdb-min-available")
    api = tuned.get("PodDisruptionBudget", f"{FULLNAME}-api")["spec"]
    worker = tuned.get("PodDisruptionBudget", f"{FULLNAME}-worker")["spec"]
    assert (api.get("minAvailable"), api.get("maxUnavailable")) == (1, None)
    assert worker["maxUnavailable"] == "50%"
    assert scenario("pdb-off").all("PodDisruptionBudget") == []


def test_hpa() -> None:
    rendered = scenario("hpa")
    for component, maximum in (("api", 6), ("worker", 8)):
        hpa = rendered.get("HorizontalPodAutoscaler", f"{FULLNAME}-{component}")
        assert hpa["apiVersion"] == "autoscaling/v2"
        assert hpa["spec"]["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": f"{FULLNAME}-{component}",
        }
        assert hpa["spec"]["maxReplicas"] == maximum
        (metric,) = hpa["spec"]["metrics"]
        assert metric["resource"]["name"] == "cpu"
        # The autoscaler owns the replica count: an upgrade must not reset it.
        assert "replicas" not in rendered.deployment(component)["spec"]
    assert rendered.all("ScaledObject") == []


# --- KEDA ----------------------------------------------------------------------


@cache
def keda_crd_schema() -> dict[str, Any]:
    """The ScaledObject schema of KEDA's CRD, made strict as kubectl's field
    validation is: an unknown field is an error, not silently dropped."""
    crd = yaml.safe_load(KEDA_CRD.read_text())
    assert crd["spec"]["names"]["kind"] == "ScaledObject"
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    schema: dict[str, Any] = strict(version["schema"]["openAPIV3Schema"])
    return schema


def strict(schema: Any) -> Any:
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    result = {k: strict(v) for k, v in schema.items()}
    if (
        "properties" in result
        and "additionalProperties" not in result
        and not result.get("x-kubernetes-preserve-unknown-fields")
    ):
        result["additionalProperties"] = False
    return result


INT32 = jsonschema.FormatChecker()


@INT32.checks("int32")
def _int32(value: object) -> bool:
    return not isinstance(value, int) or -(2**31) <= value < 2**31


def validate_scaled_object(obj: Mapping[str, Any]) -> None:
    jsonschema.Draft7Validator(keda_crd_schema(), format_checker=INT32).validate(obj)


def test_keda_crd_check_is_not_vacuous() -> None:
    good = scenario("keda-cluster").get("ScaledObject", f"{FULLNAME}-worker")
    validate_scaled_object(good)
    for change in (
        {"minReplicas": 1},  # the HPA's name, not KEDA's
        {"maxReplicaCount": "4"},
        {"triggers": [{"type": "redis-streams", "metadata": {"lagCount": 5}}]},
    ):
        bad = copy.deepcopy(good)
        bad["spec"].update(change)
        with pytest.raises(jsonschema.ValidationError):
            validate_scaled_object(bad)


def test_keda_watches_eventflows_own_stream_keys_by_default() -> None:
    # No stream list given: the chart names the streams as EventFlow does.
    values = merged(
        SCENARIOS["keda-cluster"],
        {"partitions": 16, "worker": {"autoscaling": {"keda": {"streams": []}}}},
    )
    scaled = render(values).get("ScaledObject", f"{FULLNAME}-worker")
    validate_scaled_object(scaled)
    names = [t["metadata"]["stream"] for t in scaled["spec"]["triggers"]]
    assert names == [partition_stream("eventflow:events", p) for p in range(16)]


def test_the_charts_partition_tags_are_eventflows() -> None:
    tags = (CHART / "files" / "partition-tags.txt").read_text().split()
    assert tags == [partition_tag(p) for p in range(MAX_PARTITIONS)], (
        "regenerate deploy/helm/eventflow/files/partition-tags.txt"
    )


def test_keda_on_a_redis_cluster() -> None:
    rendered = scenario("keda-cluster")
    scaled = rendered.get("ScaledObject", f"{FULLNAME}-worker")
    validate_scaled_object(scaled)
    spec = scaled["spec"]
    assert spec["scaleTargetRef"]["name"] == f"{FULLNAME}-worker"
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (1, 4)
    worker_env = env_values(container(rendered, "worker"))
    triggers = spec["triggers"]
    assert len(triggers) == 4  # one per partition
    for p, trigger in enumerate(triggers):
        assert trigger["type"] == "redis-cluster-streams"
        assert trigger["name"] == f"partition{p}"
        assert trigger["metadata"] == {
            "addresses": "redis-0.redis:6379,redis-1.redis:6379",
            "stream": CLUSTER_STREAMS[p],
            "consumerGroup": worker_env["EVENTFLOW_CONSUMER_GROUP"],
            "lagCount": "500",
            "enableTLS": "false",
        }
        assert trigger["authenticationRef"] == {"name": f"{FULLNAME}-redis"}
    # The backlog summed over partitions decides (not the busiest one alone).
    modifiers = spec["advanced"]["scalingModifiers"]
    assert modifiers == {
        "formula": "partition0 + partition1 + partition2 + partition3",
        "target": "500",
        "metricType": "AverageValue",
    }
    auth = rendered.get("TriggerAuthentication", f"{FULLNAME}-redis")
    assert auth["apiVersion"] == "keda.sh/v1alpha1"
    assert auth["spec"] == {
        "secretTargetRef": [
            {
                "parameter": "password",
                "name": "eventflow-connections",
                "key": "redis-password",
            }
        ]
    }
    assert "replicas" not in rendered.deployment("worker")["spec"]
    assert rendered.all("HorizontalPodAutoscaler") == []


def test_keda_on_one_redis_with_generated_stream_keys() -> None:
    rendered = scenario("keda-standalone")
    scaled = rendered.get("ScaledObject", f"{FULLNAME}-worker")
    validate_scaled_object(scaled)
    triggers = scaled["spec"]["triggers"]
    assert [t["metadata"]["stream"] for t in triggers] == [
        "eventflow:events:{0}",
        "eventflow:events:{1}",
        "eventflow:events:{2}",
    ]
    for trigger in triggers:
        assert trigger["type"] == "redis-streams"
        # Stream length needs no consumer group (KEDA reads XLEN).
        assert trigger["metadata"] == {
            "address": "redis.internal:6379",
            "databaseIndex": "2",
            "stream": trigger["metadata"]["stream"],
            "streamLength": "2000",
            "enableTLS": "true",
        }
    assert "advanced" not in scaled["spec"]  # aggregate: max
    # The password comes from the chart's own Secret.
    auth = rendered.get("TriggerAuthentication", f"{FULLNAME}-redis")
    assert auth["spec"]["secretTargetRef"] == [
        {"parameter": "password", "name": FULLNAME, "key": "REDIS_PASSWORD"}
    ]
    assert rendered.get("Secret", FULLNAME)["stringData"]["REDIS_PASSWORD"] == "s3cret"


def test_keda_without_a_password_has_no_authentication() -> None:
    values = merged(SCENARIOS["keda-cluster"], {"secrets": {"redisPasswordKey": ""}})
    rendered = render(values)
    assert rendered.all("TriggerAuthentication") == []
    scaled = rendered.get("ScaledObject", f"{FULLNAME}-worker")
    validate_scaled_object(scaled)
    assert all("authenticationRef" not in t for t in scaled["spec"]["triggers"])


def test_notes_warn_about_idle_workers() -> None:
    values = merged(
        SCENARIOS["keda-cluster"],
        {"worker": {"autoscaling": {"keda": {"maxReplicaCount": 6}}}},
    )
    notes = render(values).notes
    assert "maxReplicaCount (6) is above partitions (4)" in notes
    assert "above partitions" not in scenario("keda-cluster").notes


KEDA_AND_HPA: Values = merged(
    SCENARIOS["keda-cluster"],
    {"worker": {"autoscaling": {"hpa": {"enabled": True}}}},
)


def test_keda_and_hpa_together_are_refused_by_the_schema() -> None:
    message = refused(KEDA_AND_HPA)
    assert "/worker/autoscaling/hpa/enabled" in message


def test_keda_and_hpa_together_are_refused_by_the_templates_too(
    tmp_path: Path,
) -> None:
    """As with `helm install --skip-schema-validation`: the chart without its
    schema still refuses."""
    chart = tmp_path / "eventflow"
    shutil.copytree(CHART, chart)
    (chart / "values.schema.json").unlink()
    message = refused(KEDA_AND_HPA, chart)
    assert "keda and hpa cannot both be enabled" in message


# --- Bad values ----------------------------------------------------------------

BAD_VALUES: dict[str, tuple[Values, str]] = {
    "unknown top-level key": ({"replicas": 3}, "replicas"),
    "misspelt nested key": ({"worker": {"replicaCont": 3}}, "replicaCont"),
    "negative replicas": ({"api": {"replicaCount": -1}}, "/api/replicaCount"),
    "partitions as a string": ({"partitions": "8"}, "/partitions"),
    "zero partitions": ({"partitions": 0}, "/partitions"),
    "too many partitions": ({"partitions": 4096}, "/partitions"),
    "cluster as a string": ({"redis": {"cluster": "yes"}}, "/redis/cluster"),
    "port out of range": ({"api": {"port": 70000}}, "/api/port"),
    "worker metrics off": ({"worker": {"metricsPort": 0}}, "/worker/metricsPort"),
    "KEDA scaling to zero": (
        {"worker": {"autoscaling": {"keda": {"minReplicaCount": 0}}}},
        "/worker/autoscaling/keda/minReplicaCount",
    ),
    "KEDA without an address": (
        {"worker": {"autoscaling": {"keda": {"enabled": True, "streams": ["a"]}}}},
        "/worker/autoscaling/keda/address",
    ),
    "unknown KEDA metric": (
        {"worker": {"autoscaling": {"keda": {"metric": "xlen"}}}},
        "/worker/autoscaling/keda/metric",
    ),
    "env sets a chart-owned variable": (
        {"env": {"DATABASE_URL": "postgresql://x@y/z"}},
        "/env/DATABASE_URL",
    ),
    "env sets one consumer name for every pod": (
        {"worker": {"env": {"EVENTFLOW_CONSUMER_NAME": "w"}}},
        "/worker/env/EVENTFLOW_CONSUMER_NAME",
    ),
    "secretEnv sets a chart-owned variable": (
        {"secretEnv": {"REDIS_URL": {"secretName": "s", "key": "k"}}},
        "/secretEnv/REDIS_URL",
    ),
    "env with a bad name": ({"env": {"EVENTFLOW-LOG": "x"}}, "EVENTFLOW-LOG"),
    "no memory limit": (
        {"api": {"resources": {"limits": {"memory": None}}}},
        "/api/resources/limits",
    ),
    "bad quantity": (
        {"worker": {"resources": {"requests": {"cpu": "lots"}}}},
        "/worker/resources/requests/cpu",
    ),
    "both PDB limits": (
        {"worker": {"pdb": {"minAvailable": 1, "maxUnavailable": 1}}},
        "/worker/pdb",
    ),
    "not a PostgreSQL URL": (
        {"secrets": {"databaseUrl": "mysql://db/eventflow"}},
        "/secrets/databaseUrl",
    ),
    "no URLs and no existing Secret": (
        {"secrets": {"redisUrl": ""}},
        "/secrets/redisUrl",
    ),
    "running as root": (
        {"podSecurityContext": {"runAsNonRoot": False}},
        "/podSecurityContext/runAsNonRoot",
    ),
    "bad pull policy": ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
    "bad ingress host": (
        {"ingress": {"enabled": True, "host": "https://events.example.org"}},
        "/ingress/host",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_bad_values_are_refused_by_the_schema(case: str) -> None:
    values, where = BAD_VALUES[case]
    message = refused(values)
    assert "schema" in message and where in message, message


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (
            merged(
                SCENARIOS["keda-cluster"],
                {"worker": {"autoscaling": {"keda": {"streams": CLUSTER_STREAMS[:3]}}}},
            ),
            "lists 3 stream keys but partitions is 4",
        ),
        ({"api": {"metrics": {"port": 8000}}}, "api.metrics.port must differ"),
        (
            {"secrets": {"existingSecret": "", "databaseUrl": "", "redisUrl": ""}},
            "databaseUrl",
        ),
    ],
)
def test_inconsistent_values_are_refused(values: Values, expected: str) -> None:
    assert expected in refused(values)
