"""Print the production requirement set of sfdc-sync, one requirement a line.

The code location's image installs exactly this (deploy/Dockerfile), and
tests/deploy/test_image_dependencies.py installs the same into a clean venv: the
`[project] dependencies` of pyproject.toml plus the extras a Kubernetes deployment needs
(`PRODUCTION_EXTRAS`). The emulator (`emulator` extra) and the tooling (`dev`) are left
out, so is the project itself: the image copies the production packages
(`PRODUCTION_PACKAGES`) instead of installing the wheel, which would bring
`sfdc_emulator` along.

Usage: `python deploy/requirements.py [path/to/pyproject.toml] > requirements.txt`
(standard library only: it runs before anything is installed).
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

# Postgres run/event storage, the K8sRunLauncher that run workers' instance names, and the
# S3 landing store.
PRODUCTION_EXTRAS = ("postgres", "k8s", "s3")
# What the image copies next to the dependencies; sfdc_emulator, bench, scripts and tests
# stay out (docs/architecture.md: production code never imports the emulator).
PRODUCTION_PACKAGES = ("sfdc_assets", "sensors", "resources", "sync_engine", "dbt")


def production_requirements(pyproject: Path) -> list[str]:
    """The requirement strings of the production set, in pyproject order."""
    project = tomllib.loads(pyproject.read_text())["project"]
    extras = project.get("optional-dependencies", {})
    missing = [e for e in PRODUCTION_EXTRAS if e not in extras]
    if missing:
        raise SystemExit(f"{pyproject}: extras {missing} are missing from optional-dependencies")
    reqs = list(project["dependencies"])
    for extra in PRODUCTION_EXTRAS:
        reqs += [r for r in extras[extra] if r not in reqs]
    # A self-reference (`sfdc-sync[...]`) would install the project and its emulator.
    own = project["name"].lower()
    return [r for r in reqs if not r.lower().replace("_", "-").startswith(own)]


def main(argv: list[str]) -> int:
    """Write the requirements to stdout."""
    default = Path(__file__).resolve().parent.parent / "pyproject.toml"
    path = Path(argv[0]) if argv else default
    sys.stdout.write("\n".join(production_requirements(path)) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
