"""The code location's image: its dependency set installs into a clean venv and loads
the code location with `SFDC_ENV=prod`, without the emulator (issue 13).

No Docker engine runs here, so the image's build steps are replayed on the host: the
requirement set from deploy/requirements.py (as the Dockerfile computes it), installed by
pip into a fresh venv from a wheelhouse re-packed offline from the dev venv
(tests/deploy/wheelhouse.py), the production packages copied beside it, `dbt parse` for
the prod target, then `dagster`'s way of loading the module with every socket refused.
Not verified: the base image, the OS packages, the non-root user and file modes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest

from tests.deploy import wheelhouse

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "deploy" / "Dockerfile"
# What only the emulator and the dev tooling need; none may reach the image.
NOT_IN_IMAGE = {
    "starlette",
    "uvicorn",
    "trustme",
    "fakesnow",
    "pytest",
    "dagster-webserver",
    "hypothesis",
}
PROD_ENV = {
    "SFDC_ENV": "prod",
    "SNOWFLAKE_ACCOUNT": "acme-prod",
    "SNOWFLAKE_USER": "SFDC_LOADER_SVC",
    "SNOWFLAKE_DATABASE": "SFDC",
    "SNOWFLAKE_ROLE": "SFDC_LOADER",
    "SNOWFLAKE_WAREHOUSE": "SFDC_LOAD_WH",
    "SNOWFLAKE_PRIVATE_KEY_PATH": "/var/run/secrets/sfdc/snowflake/rsa_key.p8",
    "SFDC_INSTANCE_URL": "https://acme.my.salesforce.com",
    "SFDC_TOKEN_URL": "https://login.salesforce.com/services/oauth2/token",
    "SFDC_CLIENT_ID": "3MVG9-connected-app",
    "SFDC_USERNAME": "sfdc-sync@acme.com",
    "SFDC_PRIVATE_KEY_PATH": "/var/run/secrets/sfdc/salesforce/server.key",
    "SFDC_PUBSUB_TARGET": "api.pubsub.salesforce.com:7443",
    "SFDC_TENANT_ID": "00D000000000001",
    "LANDING_URL": "s3://acme-sfdc-landing/prod",
}


def _requirements() -> list[str]:
    # The same command the Dockerfile runs.
    out = subprocess.run(
        [sys.executable, str(REPO / "deploy" / "requirements.py"), str(REPO / "pyproject.toml")],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [line for line in out.splitlines() if line]


def _site() -> Path:
    return Path(sysconfig.get_paths()["purelib"])


def _packages() -> tuple[str, ...]:
    text = (REPO / "deploy" / "requirements.py").read_text()
    ns: dict[str, object] = {}
    exec(compile(text, "requirements.py", "exec"), ns)
    return ns["PRODUCTION_PACKAGES"]  # type: ignore[return-value]


def test_requirement_set_is_the_project_dependencies_plus_the_production_extras() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = _requirements()
    extras = project["optional-dependencies"]
    assert reqs[: len(project["dependencies"])] == project["dependencies"]
    for extra in ("postgres", "k8s", "s3"):
        assert set(extras[extra]) <= set(reqs)
    assert not set(extras["emulator"]) & set(reqs)
    assert not any(r.startswith("sfdc-sync") for r in reqs)


def test_production_closure_leaves_out_the_emulator_and_the_tooling() -> None:
    names = wheelhouse.closure(_requirements(), _site())
    assert not names & NOT_IN_IMAGE
    # What the Helm values name must be importable in the image.
    assert {"dagster-k8s", "dagster-postgres", "psycopg2-binary", "s3fs", "dbt-snowflake"} <= names


def test_dockerfile_copies_exactly_the_production_packages() -> None:
    text = DOCKERFILE.read_text()
    copied = {
        line.split()[1]
        for line in text.splitlines()
        if line.startswith("COPY ") and line.split()[1] in (*_packages(), "sfdc_emulator")
    }
    assert copied == set(_packages())
    assert not [line for line in text.splitlines() if line.startswith("COPY sfdc_emulator")]
    assert "requirements.py pyproject.toml > requirements.txt" in text


@pytest.fixture(scope="module")
def image_venv(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A clean venv with the production set installed offline, and the app folder."""
    root = tmp_path_factory.mktemp("image")
    reqs = root / "requirements.txt"
    reqs.write_text("\n".join(_requirements()) + "\n")
    wheels = root / "wheels"
    wheelhouse.build(_requirements(), _site(), wheels)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    env = {"PATH": "/usr/bin:/bin", "PIP_DISABLE_PIP_VERSION_CHECK": "1", "HOME": str(root)}
    pip = [str(py), "-m", "pip", "install", "--quiet", "--no-index"]
    subprocess.run(
        [*pip, "--find-links", str(wheels), "-r", str(reqs)],
        check=True,
        env=env,
        timeout=900,
    )
    app = root / "app"
    for pkg in _packages():
        shutil.copytree(
            REPO / pkg,
            app / pkg,
            ignore=shutil.ignore_patterns("__pycache__", "target", "logs", "dbt_packages"),
        )
    return venv, app


def _clean_env(venv: Path, app: Path, extra: dict[str, str]) -> dict[str, str]:
    return {
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        "HOME": str(app.parent),
        "PYTHONPATH": str(app),
        "DBT_LOG_PATH": str(app / "dbt" / "logs"),
        **extra,
    }


@pytest.mark.slow
def test_code_location_loads_in_prod_from_the_production_set_alone(
    image_venv: tuple[Path, Path],
) -> None:
    venv, app = image_venv
    py = str(venv / "bin" / "python")
    listed = subprocess.run(
        [py, "-m", "pip", "list", "--format=json"], check=True, capture_output=True, text=True
    ).stdout
    installed = {p["name"].lower() for p in json.loads(listed)}
    assert not installed & NOT_IN_IMAGE
    subprocess.run([py, "-m", "pip", "check"], check=True, capture_output=True)

    # The Dockerfile's build step: the manifest exists before the code server starts.
    dbt_env = _clean_env(venv, app, {**PROD_ENV, "SNOWFLAKE_PRIVATE_KEY_PATH": "/dev/null"})
    subprocess.run(
        [str(venv / "bin" / "dbt"), "parse", "--profiles-dir", ".", "--target", "prod", "--quiet"],
        cwd=app / "dbt",
        env=dbt_env,
        check=True,
        timeout=600,
    )
    assert (app / "dbt" / "target" / "manifest.json").is_file()

    env = _clean_env(venv, app, PROD_ENV)
    out = subprocess.run(
        [py, str(REPO / "tests" / "deploy" / "load_code_location.py")],
        cwd=app,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    report = json.loads(out.stdout.splitlines()[-1])
    assert report["warehouse"] == "SnowflakeWarehouse"
    assert report["emulator_loaded"] is False
    assert not set(report["modules"]) & {"starlette", "uvicorn", "trustme", "fakesnow"}
    assert "sfdc_erase_subject" in report["jobs"]
    assert report["assets"] > 20 and report["sensors"] > 3

    # The emulator is not importable at all in the image, not merely unused.
    probe = subprocess.run(
        [py, "-c", "import sfdc_emulator"], cwd=app, env=env, capture_output=True, text=True
    )
    assert probe.returncode != 0 and "No module named 'sfdc_emulator'" in probe.stderr
    assert os.path.exists(app / "sfdc_assets" / "objects.yaml")
