"""Packaging: the Kubernetes manifests, the Dockerfile's build and install steps, the wheel.

There is no container engine here, so the Dockerfile is checked by parsing it: its `pip wheel`
command is run as written (on a copy of exactly the files it COPYs), its `pip install` command is
resolved with `--dry-run` against the package index, and README.md must show the same commands.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import Iterator
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.packaging_files import (
    IMAGE_EXTRAS,
    K8S,
    PYPROJECT,
    ROOT,
    builder_pip,
    configmap_spec_text,
    constraints,
    container,
    dockerfile,
    load_configmap_spec,
    manifest,
    manifests,
    pip_command,
    pip_commands,
    pod_env,
    pod_spec,
    run_options,
    runtime_requirements,
    stage_of,
    wheel_target,
)

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
REGENERATE = "regenerate constraints.txt as its header says"

# The oldest Kubernetes the manifests promise to work on, and the newest whose schemas we have.
KUBERNETES_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())


# --- Kubernetes manifests --------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize(
    "doc", [pytest.param(doc, id=f"{file}:{doc['kind']}") for file, doc in manifests()])
def test_manifest_validates_against_kubernetes_schema(doc: dict[str, Any], version: str) -> None:
    # strict: an unknown (misspelled) field is an error, not silently dropped by the API server.
    validated = kubernetes_validate.validate(doc, version, strict=True)
    assert validated == kubernetes_validate.utils.major_minor(version)


def test_schema_check_rejects_a_misspelled_field() -> None:
    cronjob = manifest("CronJob")
    cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["restartPolcy"] = "Never"
    with pytest.raises(kubernetes_validate.ValidationError, match="restartPolcy"):
        kubernetes_validate.validate(cronjob, KUBERNETES_VERSIONS[-1], strict=True)


def test_examples_folder_holds_the_expected_objects() -> None:
    kinds = sorted(doc["kind"] for _, doc in manifests())
    assert kinds == ["ConfigMap", "CronJob", "Secret"]


def test_kustomization_applies_every_manifest_but_the_placeholder_secret() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text(encoding="utf-8"))
    listed = kustomization["resources"]
    assert all((K8S / name).is_file() for name in listed)
    others = {file for file, doc in manifests() if doc["kind"] != "Secret"}
    assert sorted(listed) == sorted(others)
    (image,) = kustomization["images"]
    assert container()["image"].startswith(image["name"] + ":")


def test_cronjob_never_overlaps_and_drops_late_starts() -> None:
    spec = manifest("CronJob")["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    assert 0 < spec["startingDeadlineSeconds"] <= 3600
    assert spec["successfulJobsHistoryLimit"] >= 1
    assert spec["failedJobsHistoryLimit"] >= 1


def test_pod_failure_policy_fails_the_job_on_exit_2_and_3() -> None:
    job = manifest("CronJob")["spec"]["jobTemplate"]["spec"]
    rules = job["podFailurePolicy"]["rules"]
    fail = rules[0]  # first: the first matching rule wins
    assert fail["action"] == "FailJob"
    assert fail["onExitCodes"] == {
        "containerName": container()["name"], "operator": "In", "values": [2, 3]}
    ignore = [r for r in rules if r["action"] == "Ignore"]
    assert [c["type"] for r in ignore for c in r["onPodConditions"]] == ["DisruptionTarget"]
    (count,) = [r for r in rules if r["action"] == "Count"]
    assert count["onExitCodes"]["operator"] == "NotIn"
    assert {2, 3} <= set(count["onExitCodes"]["values"])
    assert job["backoffLimit"] >= 1
    assert job["activeDeadlineSeconds"] > 0
    # The API server refuses a podFailurePolicy with any other restartPolicy.
    assert pod_spec()["restartPolicy"] == "Never"


def test_container_args_are_a_valid_run_command_line() -> None:
    options = run_options()
    assert options["log_format"] == "json" and options["json_output"] is True
    assert str(options["config"]) == "/etc/aitems-sync/sync.yaml"


def test_run_finishes_its_uploads_and_exits_before_the_kubelet_kills_it(tmp_path: Path) -> None:
    aitems = load_configmap_spec(tmp_path).aitems
    grace = run_options()["grace"]
    # A whole request fits in the run's grace; the run then has time to commit and exit 143
    # before SIGKILL at the pod's termination grace period.
    assert aitems.connect_timeout + aitems.timeout <= grace
    assert grace + 5 <= pod_spec()["terminationGracePeriodSeconds"]


def test_pod_runs_as_the_image_user_with_a_read_only_root() -> None:
    pod = pod_spec()["securityContext"]
    (user,) = [i.args for i in stage_of("final") if i.keyword == "USER"]
    assert pod["runAsNonRoot"] is True
    assert str(pod["runAsUser"]) == user.split(":")[0] == "10001"
    assert pod["fsGroup"] == 10001
    box = container()["securityContext"]
    assert box["readOnlyRootFilesystem"] is True
    assert box["allowPrivilegeEscalation"] is False
    assert box["capabilities"] == {"drop": ["ALL"]}
    assert box["seccompProfile"] == {"type": "RuntimeDefault"}
    volumes = {v["name"]: v for v in pod_spec()["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container()["volumeMounts"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]


def test_container_has_requests_within_limits() -> None:
    resources = container()["resources"]
    assert set(resources["requests"]) == set(resources["limits"]) == {"cpu", "memory"}
    assert resources["requests"]["memory"] == "128Mi"
    assert resources["limits"]["memory"] == "256Mi"


def test_container_runs_the_spec_mounted_from_the_configmap() -> None:
    assert container()["command"] == list(PYPROJECT["project"]["scripts"])
    config = Path(run_options()["config"])
    mounts = {m["mountPath"]: m["name"] for m in container()["volumeMounts"]}
    volume = {v["name"]: v for v in pod_spec()["volumes"]}[mounts[str(config.parent)]]
    assert volume["configMap"]["name"] == manifest("ConfigMap")["metadata"]["name"]
    assert volume["configMap"]["items"] == [{"key": config.name, "path": config.name}]
    assert config.name in manifest("ConfigMap")["data"]


def test_every_spec_variable_comes_from_the_pod_and_every_secret_is_used() -> None:
    referenced = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", configmap_spec_text()))
    assert referenced == set(pod_env())
    assert set(manifest("Secret")["stringData"]) <= referenced


def test_configmap_spec_loads_with_state_in_postgresql(tmp_path: Path) -> None:
    spec = load_configmap_spec(tmp_path)
    env = pod_env()
    assert spec.state_url == env["AITEMS_SYNC_STATE"]
    assert spec.state_url.startswith("postgresql+psycopg://")
    assert spec.sources["shop"].url.startswith("postgresql+psycopg://")
    assert {d.dataset_id for d in spec.datasets.values()} == {
        env["AITEMS_USER_DATASET_ID"], env["AITEMS_ITEM_DATASET_ID"],
        env["AITEMS_EVENT_DATASET_ID"]}
    assert spec.aitems.secret_key == env["NCP_SECRET_KEY"]


# --- Dockerfile ------------------------------------------------------------------------------


def test_dockerfile_builds_in_a_builder_stage_on_python_3_11_slim() -> None:
    instructions = dockerfile()
    froms = [i.args for i in instructions if i.keyword == "FROM"]
    assert len(froms) == 2 and froms[0].endswith(" AS builder")
    (base,) = [i.args for i in instructions if i.keyword == "ARG" and i.stage == -1]
    assert base == "PYTHON_IMAGE=python:3.11-slim"
    assert all(f.split()[0] == "${PYTHON_IMAGE}" for f in froms)
    assert SpecifierSet(PYPROJECT["project"]["requires-python"]).contains("3.11")


def test_final_stage_holds_the_venv_runs_non_root_and_builds_nothing() -> None:
    final = stage_of("final")
    copies = [i.args for i in final if i.keyword == "COPY"]
    assert copies == ["--from=builder /opt/aitems-sync /opt/aitems-sync"]
    runs = " ".join(i.args for i in final if i.keyword == "RUN")
    assert not re.search(r"\bpip\b|apt-get|\bgcc\b|build-essential", runs)
    (user,) = [i.args for i in final if i.keyword == "USER"]
    assert re.fullmatch(r"[1-9][0-9]*(:[0-9]+)?", user), "numeric, for runAsNonRoot"
    (entrypoint,) = [i.args for i in final if i.keyword == "ENTRYPOINT"]
    assert json.loads(entrypoint) == list(PYPROJECT["project"]["scripts"]) == ["aitems-sync"]


def test_dockerfile_pins_a_build_backend_that_satisfies_pyproject() -> None:
    (install,) = [c for c in builder_pip() if any(w.startswith("setuptools") for w in c)]
    (pin,) = [Requirement(w) for w in install if w.startswith("setuptools")]
    (spec,) = pin.specifier
    assert spec.operator == "=="
    for line in PYPROJECT["build-system"]["requires"]:
        required = Requirement(line)
        assert canonicalize_name(required.name) == "setuptools"
        assert required.specifier.contains(spec.version)


def test_dockerfile_installs_the_wheel_with_constraints_and_its_extras() -> None:
    wheel = pip_command("wheel")
    assert {"--no-deps", "--no-build-isolation", "--check-build-dependencies"} <= set(wheel)
    install = pip_command("install")
    assert install[install.index("--constraint") + 1] == "constraints.txt"
    glob, extras = wheel_target(install)
    assert tuple(extras.split(",")) == IMAGE_EXTRAS
    assert set(IMAGE_EXTRAS) <= set(PYPROJECT["project"]["optional-dependencies"])
    assert Path(glob).parent == Path(wheel[wheel.index("--wheel-dir") + 1])
    copied = " ".join(i.args for i in stage_of("builder") if i.keyword == "COPY").split()
    assert "constraints.txt" in copied


def test_readme_shows_the_dockerfile_pip_commands() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Kubernetes", 1)[1].split("\n#", 1)[0]
    (block,) = re.findall(r"```sh\n(.*?)```", section, re.S)
    docker = [" ".join(c) for c in builder_pip()]
    shown = [" ".join(c).replace("dist", "/wheels") for c in pip_commands(block)]
    assert shown == docker


def test_dockerignore_lets_in_what_the_dockerfile_copies() -> None:
    lines = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert lines[0] == "*"  # everything else stays out of the build context
    let_in = {line[1:] for line in lines if line.startswith("!")}
    copied = {word for i in stage_of("builder") if i.keyword == "COPY"
              for word in i.args.split()[:-1] if not word.startswith("--")}
    assert copied == let_in


# --- constraints.txt -------------------------------------------------------------------------


def test_constraints_cover_every_runtime_requirement() -> None:
    pins = constraints()
    for req in runtime_requirements():
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is not in constraints.txt: {REGENERATE}"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"constraints.txt pins {name}=={pins[name]}, outside {req}: {REGENERATE}")


def test_constraints_hold_no_test_tools() -> None:
    runtime = {canonicalize_name(r.name) for r in runtime_requirements()}
    tools = {canonicalize_name(Requirement(line).name)
             for line in PYPROJECT["project"]["optional-dependencies"]["test"]} - runtime
    assert tools and not tools & set(constraints())


# --- The wheel the Dockerfile builds ---------------------------------------------------------


@pytest.fixture(scope="module")
def built_wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The wheel, built by the Dockerfile's own `pip wheel` command from the files it COPYs."""
    work = tmp_path_factory.mktemp("docker-build")
    source = work / "src"
    source.mkdir()
    for instruction in stage_of("builder"):
        if instruction.keyword == "COPY":
            *names, destination = instruction.args.split()
            for name in names:  # Docker's rules: a folder's content goes into the destination
                origin = ROOT / name
                if origin.is_dir():
                    shutil.copytree(origin, source / destination, dirs_exist_ok=True,
                                    ignore=shutil.ignore_patterns("__pycache__", "*.py[cod]"))
                elif destination.endswith("/"):
                    shutil.copy2(origin, source / destination / name)
                else:
                    shutil.copy2(origin, source / destination)
    wheel_args = pip_command("wheel")
    out = work / "wheels"
    wheel_args[wheel_args.index("--wheel-dir") + 1] = str(out)
    done = subprocess.run([sys.executable, "-m", "pip", *wheel_args, "--quiet"],
                          cwd=source, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    (wheel,) = out.glob("*.whl")
    yield wheel


def test_wheel_holds_the_package_data_and_the_console_script(built_wheel: Path) -> None:
    glob, _ = wheel_target(pip_command("install"))
    assert fnmatch(built_wheel.name, Path(glob).name)
    with zipfile.ZipFile(built_wheel) as archive:
        names = set(archive.namelist())
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        scripts = archive.read(entry_points).decode()
    modules = {str(p.relative_to(ROOT)) for p in (ROOT / "aitems_sync").rglob("*.py")}
    assert {"aitems_sync/py.typed", "aitems_sync/spec/spec.schema.json", *modules} <= names
    assert not [n for n in names if "__pycache__" in n or n.startswith("tests/")]
    assert "[console_scripts]\naitems-sync = aitems_sync.cli.main:main" in scripts


def test_installed_wheel_validates_the_configmap_spec(
    built_wheel: Path, tmp_path: Path
) -> None:
    # A fresh venv holding the wheel alone; its dependencies come from this interpreter's
    # site-packages through a .pth file (no network), which does not carry the checkout's
    # editable install (that is a .pth of its own, read only in a site directory).
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site_dir = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True).stdout.strip()
    (Path(site_dir) / "dependencies.pth").write_text(
        sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8")
    done = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
         str(built_wheel)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    spec_file = tmp_path / "sync.yaml"
    spec_file.write_text(configmap_spec_text(), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | pod_env()
    where = subprocess.run(
        [str(python), "-c", "import aitems_sync; print(aitems_sync.__file__)"],
        env=env, cwd=tmp_path, capture_output=True, text=True, check=True)
    assert Path(where.stdout.strip()).is_relative_to(site_dir)
    done = subprocess.run([str(venv / "bin" / "aitems-sync"), "--config", str(spec_file),
                           "--json", "validate"],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["valid"] is True
    worker = subprocess.run([str(python), "-m", "aitems_sync.sync.worker", "--help"],
                            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert worker.returncode == 0, worker.stderr
    assert worker.stdout.startswith("usage: python -m aitems_sync.sync.worker")


_OFFLINE = re.compile(r"NewConnectionError|Temporary failure in name resolution|"
                      r"ConnectTimeout|Network is unreachable|Max retries exceeded")


def test_dockerfile_install_resolves_to_exactly_the_constraints(
    built_wheel: Path, tmp_path: Path
) -> None:
    install = pip_command("install")
    _, extra = wheel_target(install)
    args = [f"{built_wheel}[{extra}]" if w.startswith("$(") else w for w in install]
    args[args.index("--constraint") + 1] = str(ROOT / "constraints.txt")
    report = tmp_path / "report.json"
    # The image's Python and binary wheels only: its builder stage has no compiler.
    done = subprocess.run(
        [sys.executable, "-m", "pip", *args, "--dry-run", "--ignore-installed", "--quiet",
         "--target", str(tmp_path / "unused"),  # pip < 24 wants it with --python-version
         "--python-version", "3.11", "--only-binary", ":all:", "--report", str(report),
         "--retries", "0", "--timeout", "15"],
        capture_output=True, text=True, timeout=180)
    if done.returncode != 0 and _OFFLINE.search(done.stderr) and not IN_CI:
        pytest.skip("the package index is unreachable: cannot resolve the image's install")
    assert done.returncode == 0, done.stderr[-3000:]
    resolved = {canonicalize_name(item["metadata"]["name"]): Version(item["metadata"]["version"])
                for item in json.loads(report.read_text())["install"]}
    project = resolved.pop(canonicalize_name(PYPROJECT["project"]["name"]))
    assert project == Version(PYPROJECT["project"]["version"])
    assert resolved == constraints(), f"the image would install other versions: {REGENERATE}"
