"""deploy/helm/values.yaml parses and names only settings Dagster's Helm chart has.

No Helm binary and no chart download here, so the chart's values schema is encoded below
from its source: the pydantic models the chart's `values.schema.json` is generated from,
in dagster-io/dagster under helm/dagster/schema/schema/charts/ (read for this test at
these commits: `dagster/values.py` and `subschema/daemon.py` 835892b4,
`subschema/run_launcher.py` 969d7265, `subschema/webserver.py` 288c6113,
`subschema/postgresql.py` 3f2daa0d, `subschema/retention.py` bbc1853b,
`subschema/global_.py` e5755924, `dagster_user_deployments/subschema/user_deployments.py`
58b05650). `runMonitoring` and `runRetries` are free-form maps in the schema; their keys
come from the chart's instance template tests (schema_tests/test_instance.py) and
values.yaml. Not verified: `helm template` output, value types beyond the checks below,
keys the chart added after those commits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
VALUES = REPO / "deploy" / "helm" / "values.yaml"

# A value of ANY: the schema takes any mapping there (Kubernetes objects, env maps).
ANY: dict[str, Any] = {}
K8S_IMAGE = {"repository": None, "tag": None, "pullPolicy": None}
SECRET_LIST = None  # a list of {name: ...}: checked in its own test
TICK_RETENTION = {
    "purgeAfterDays": {"skipped": None, "success": None, "failure": None, "started": None}
}
QUEUED = {
    "maxConcurrentRuns": None,
    "tagConcurrencyLimits": None,
    "dequeueIntervalSeconds": None,
    "dequeueNumWorkers": None,
    "dequeueUseThreads": None,
}
USER_DEPLOYMENT = {
    k: None
    for k in (
        "name",
        "dagsterApiGrpcArgs",
        "codeServerArgs",
        "port",
        "env",
        "envConfigMaps",
        "envSecrets",
        "annotations",
        "nodeSelector",
        "affinity",
        "tolerations",
        "podSecurityContext",
        "securityContext",
        "resources",
        "livenessProbe",
        "readinessProbe",
        "startupProbe",
        "labels",
        "volumeMounts",
        "volumes",
        "schedulerName",
    )
} | {"image": K8S_IMAGE, "includeConfigInLaunchedRuns": {"enabled": None}}
K8S_RUN_LAUNCHER = {
    k: None
    for k in (
        "imagePullPolicy",
        "jobNamespace",
        "loadInclusterConfig",
        "kubeconfigFile",
        "envConfigMaps",
        "envSecrets",
        "envVars",
        "volumeMounts",
        "volumes",
        "labels",
        "failPodOnRunFailure",
        "resources",
        "schedulerName",
        "securityContext",
    )
} | {
    "image": K8S_IMAGE,
    "runK8sConfig": {
        k: None
        for k in (
            "containerConfig",
            "podSpecConfig",
            "podTemplateSpecMetadata",
            "jobSpecConfig",
            "jobMetadata",
        )
    },
}
DAEMON = {
    k: None
    for k in (
        "enabled",
        "heartbeatTolerance",
        "env",
        "envConfigMaps",
        "envSecrets",
        "deploymentLabels",
        "labels",
        "nodeSelector",
        "affinity",
        "tolerations",
        "podSecurityContext",
        "securityContext",
        "resources",
        "livenessProbe",
        "readinessProbe",
        "startupProbe",
        "annotations",
        "schedulerName",
        "volumeMounts",
        "volumes",
    )
} | {
    "image": K8S_IMAGE,
    "runCoordinator": {
        "enabled": None,
        "type": None,
        "config": {"queuedRunCoordinator": QUEUED, "customRunCoordinator": ANY},
    },
    "runMonitoring": {
        k: None
        for k in (
            "enabled",
            "startTimeoutSeconds",
            "pollIntervalSeconds",
            "maxResumeRunAttempts",
            "freeSlotsAfterRunEndSeconds",
        )
    },
    "runRetries": {"enabled": None, "maxRetries": None, "retryOnAssetOrOpFailure": None},
    "sensors": {"useThreads": None, "numWorkers": None, "numSubmitWorkers": None},
    "schedules": {"useThreads": None, "numWorkers": None, "numSubmitWorkers": None},
}
WEBSERVER = {
    k: None
    for k in (
        "replicaCount",
        "nameOverride",
        "pathPrefix",
        "service",
        "env",
        "envConfigMaps",
        "envSecrets",
        "deploymentLabels",
        "labels",
        "nodeSelector",
        "affinity",
        "tolerations",
        "podSecurityContext",
        "securityContext",
        "resources",
        "readinessProbe",
        "livenessProbe",
        "startupProbe",
        "annotations",
        "enableReadOnly",
        "dbStatementTimeout",
        "dbPoolRecycle",
        "logLevel",
        "schedulerName",
        "volumeMounts",
        "volumes",
    )
} | {"image": K8S_IMAGE, "workspace": {"enabled": None, "servers": None, "externalConfigmap": None}}
CHART = {
    "dagsterWebserver": WEBSERVER,
    "dagster-user-deployments": {
        "enabled": None,
        "enableSubchart": None,
        "imagePullSecrets": None,
        "deployments": [USER_DEPLOYMENT],
    },
    "postgresql": {
        k: None
        for k in (
            "enabled",
            "postgresqlHost",
            "postgresqlUsername",
            "postgresqlPassword",
            "postgresqlDatabase",
            "postgresqlParams",
            "postgresqlScheme",
        )
    }
    | {"image": ANY, "service": {"port": None}},
    "generatePostgresqlPasswordSecret": None,
    "generateCeleryConfigSecret": None,
    "rabbitmq": ANY,
    "redis": ANY,
    "flower": ANY,
    "ingress": ANY,
    "imagePullSecrets": None,
    "computeLogManager": ANY,
    "scheduler": ANY,
    "runLauncher": {
        "type": None,
        "config": {
            "celeryK8sRunLauncher": ANY,
            "k8sRunLauncher": K8S_RUN_LAUNCHER,
            "customRunLauncher": ANY,
        },
    },
    "pythonLogs": ANY,
    "dagsterDaemon": DAEMON,
    "busybox": ANY,
    "migrate": ANY,
    "telemetry": {"enabled": None},
    "serviceAccount": ANY,
    "global": {
        k: None
        for k in (
            "postgresqlSecretName",
            "dagsterHome",
            "serviceAccountName",
            "celeryConfigSecretName",
        )
    },
    "retention": {
        "enabled": None,
        "sensor": TICK_RETENTION,
        "schedule": TICK_RETENTION,
        "autoMaterialize": TICK_RETENTION,
    },
    "additionalInstanceConfig": ANY,
}


def unknown_keys(values: Any, schema: Any, path: str = "") -> list[str]:
    """Dotted paths of the keys in `values` that `schema` does not have."""
    if schema is None or schema is ANY or not isinstance(values, (dict, list)):
        return []
    if isinstance(schema, list):
        return [k for i, v in enumerate(values) for k in unknown_keys(v, schema[0], f"{path}[{i}]")]
    if not isinstance(values, dict):
        return []
    out: list[str] = []
    for key, value in values.items():
        where = f"{path}.{key}" if path else key
        if key not in schema:
            out.append(where)
        elif isinstance(schema[key], dict) and schema[key] and isinstance(value, int):
            continue  # purgeAfterDays: an int or a per-type map
        else:
            out.extend(unknown_keys(value, schema[key], where))
    return out


@pytest.fixture(scope="module")
def values() -> dict[str, Any]:
    return yaml.safe_load(VALUES.read_text())


def test_values_name_only_settings_the_chart_has(values: dict[str, Any]) -> None:
    assert unknown_keys(values, CHART) == []


def test_the_key_check_catches_a_misspelt_or_invented_setting(values: dict[str, Any]) -> None:
    broken = yaml.safe_load(VALUES.read_text())
    broken["runLauncher"]["config"]["k8sRunLauncher"]["envVar"] = ["X=1"]
    broken["dagster-user-deployments"]["deployments"][0]["secrets"] = []
    broken["dagsterDaemon"]["runMonitoring"]["timeout"] = 1
    assert unknown_keys(broken, CHART) == [
        "dagster-user-deployments.deployments[0].secrets",
        "runLauncher.config.k8sRunLauncher.envVar",
        "dagsterDaemon.runMonitoring.timeout",
    ]


def test_runs_are_k8s_jobs_on_postgres_with_batched_events(values: dict[str, Any]) -> None:
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert (
        "DAGSTER_EVENT_BATCH_SIZE=500"
        in values["runLauncher"]["config"]["k8sRunLauncher"]["envVars"]
    )
    pg = values["postgresql"]
    # An external Postgres, its password from a secret (never in the values).
    assert pg["enabled"] is False and values["generatePostgresqlPasswordSecret"] is False
    assert values["global"]["postgresqlSecretName"]
    assert values["dagsterDaemon"]["enabled"] is True
    assert values["dagsterDaemon"]["env"]["DAGSTER_EVENT_BATCH_SIZE"] == "500"
    assert values["dagsterDaemon"]["runCoordinator"]["type"] == "QueuedRunCoordinator"


def test_user_deployment_runs_the_code_location_in_prod_with_secrets_from_k8s(
    values: dict[str, Any],
) -> None:
    (dep,) = values["dagster-user-deployments"]["deployments"]
    assert dep["dagsterApiGrpcArgs"] == ["--module-name", "sfdc_assets.definitions"]
    assert dep["port"] == 3030
    assert dep["includeConfigInLaunchedRuns"] == {"enabled": True}
    env = dep["env"]
    assert env["SFDC_ENV"] == "prod" and env["SFDC_PUBSUB_TLS"] == "true"
    assert env["DAGSTER_EVENT_BATCH_SIZE"] == "500"
    assert all(isinstance(v, str) for v in env.values())
    # No secret value in the values file: these come from envSecrets / mounted secrets.
    secret_vars = {
        "SNOWFLAKE_PASSWORD",
        "SNOWFLAKE_PRIVATE_KEY_PASSPHRASE",
        "SFDC_CLIENT_SECRET",
        "SFDC_ACCESS_TOKEN",
        "SLACK_WEBHOOK_URL",
        "SLACK_BOT_TOKEN",
        "DAGSTER_POSTGRES_URL",
    }
    assert not secret_vars & set(env)
    names = {s["name"] for s in dep["envSecrets"]}
    assert {"sfdc-sync-salesforce", "sfdc-sync-snowflake", "sfdc-sync-platform"} <= names
    mounts = {m["mountPath"] for m in dep["volumeMounts"]}
    assert str(Path(env["SFDC_PRIVATE_KEY_PATH"]).parent) in mounts
    assert str(Path(env["SNOWFLAKE_PRIVATE_KEY_PATH"]).parent) in mounts
    assert dep["podSecurityContext"]["runAsUser"] == 10001


def test_dockerfile_user_and_port_match_the_values(values: dict[str, Any]) -> None:
    docker = (REPO / "deploy" / "Dockerfile").read_text()
    (dep,) = values["dagster-user-deployments"]["deployments"]
    assert f"USER {dep['podSecurityContext']['runAsUser']}:" in docker
    assert f"EXPOSE {dep['port']}" in docker


def test_every_setting_the_values_set_is_documented() -> None:
    """A variable the deployment sets must be one the platform documents (README/docs)."""
    (dep,) = yaml.safe_load(VALUES.read_text())["dagster-user-deployments"]["deployments"]
    docs = (REPO / "README.md").read_text() + (REPO / "deploy" / "README.md").read_text()
    missing = [k for k in dep["env"] if k not in docs]
    assert missing == []
