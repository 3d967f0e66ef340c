"""Readers for the packaging files: examples/k8s, the Dockerfile, constraints.txt, pyproject.toml.

Small parsers shared by tests/test_packaging.py: the Kubernetes objects and the pod they run,
the Dockerfile's instructions per stage and the pip commands in them, and the pins.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from aitems_sync.cli import main as cli
from aitems_sync.spec.load import load_spec
from aitems_sync.spec.model import Spec

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "examples" / "k8s"
PYPROJECT: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def manifests() -> list[tuple[str, dict[str, Any]]]:
    """Every Kubernetes object in examples/k8s as (file name, object); not the Kustomization."""
    found = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc and doc["kind"] != "Kustomization":
                found.append((path.name, doc))
    return found


def manifest(kind: str) -> dict[str, Any]:
    """The one object of this kind in examples/k8s."""
    (only,) = [doc for _, doc in manifests() if doc["kind"] == kind]
    return only


def pod_spec() -> dict[str, Any]:
    """The CronJob's pod template spec."""
    spec: dict[str, Any] = manifest("CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return spec


def container() -> dict[str, Any]:
    """The pod's one container."""
    (only,) = pod_spec()["containers"]
    return dict(only)


def pod_env() -> dict[str, str]:
    """The environment the container gets: the Secret's values and the literal env entries."""
    secret = manifest("Secret")
    refs = [e["secretRef"]["name"] for e in container().get("envFrom", [])]
    assert refs == [secret["metadata"]["name"]]
    env = dict(secret["stringData"])
    env.update({e["name"]: e["value"] for e in container().get("env", [])})
    return env


def configmap_spec_text() -> str:
    """The spec the ConfigMap holds, as text."""
    text: str = manifest("ConfigMap")["data"]["sync.yaml"]
    return text


def load_configmap_spec(tmp_path: Path) -> Spec:
    """The ConfigMap's spec loaded with the environment the pod would give it."""
    spec_file = tmp_path / "sync.yaml"
    spec_file.write_text(configmap_spec_text(), encoding="utf-8")
    return load_spec(spec_file, env=pod_env())


@dataclass(frozen=True)
class Instruction:
    stage: int  # 0 for the first FROM's stage, 1 for the next...
    keyword: str
    args: str


def dockerfile() -> list[Instruction]:
    """The Dockerfile's instructions, continuation lines joined and comments dropped."""
    instructions: list[Instruction] = []
    stage, pending = -1, ""
    for raw in (ROOT / "Dockerfile").read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pending = f"{pending} {line}" if pending else line
        if pending.endswith("\\"):
            pending = pending[:-1].rstrip()
            continue
        keyword, _, args = pending.partition(" ")
        pending = ""
        if keyword.upper() == "FROM":
            stage += 1
        instructions.append(Instruction(stage, keyword.upper(), args.strip()))
    return instructions


def stage_of(name_or_last: str) -> list[Instruction]:
    """The instructions of the stage named so (``AS name``), or of the last stage."""
    all_ = dockerfile()
    last = max(i.stage for i in all_)
    if name_or_last == "final":
        number = last
    else:
        (number,) = [i.stage for i in all_
                     if i.keyword == "FROM" and i.args.split()[-1] == name_or_last]
    return [i for i in all_ if i.stage == number]


def pip_commands(text: str) -> list[list[str]]:
    """Each pip command in shell text, as the words after ``pip``."""
    commands = []
    for command in re.split(r"&&|;|\n", text):
        words = shlex.split(command, comments=True)
        for at, word in enumerate(words):
            if word == "pip" or word.endswith("/pip"):
                commands.append(words[at + 1:])
                break
    return commands


def builder_pip() -> list[list[str]]:
    """The builder stage's pip commands, in order."""
    return [c for i in stage_of("builder") if i.keyword == "RUN" for c in pip_commands(i.args)]


def pip_command(verb: str) -> list[str]:
    """The builder's one ``pip wheel`` or ``pip install`` of the project (not of setuptools)."""
    (only,) = [c for c in builder_pip()
               if c[0] == verb and not any(w.startswith("setuptools") for w in c)]
    return only


#: The extras the image installs (Dockerfile), in its order.
IMAGE_EXTRAS = ("postgres", "objectstorage")


def wheel_target(install: list[str]) -> tuple[str, str]:
    """The install's wheel glob and extras, from ``$(echo DIR/aitems_sync-*.whl)[a,b]``."""
    (target,) = [w for w in install[1:] if w.startswith("$(")]
    match = re.fullmatch(r"\$\(echo (\S+)\)\[([\w,]+)\]", target)
    assert match, f"cannot read the wheel to install from {target!r}"
    return match.group(1), match.group(2)


def constraints() -> dict[str, Version]:
    """constraints.txt as canonical name -> pinned version; every line must be ``name==V``."""
    pins: dict[str, Version] = {}
    for line in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==" and "*" not in spec.version, f"{line} is not pinned"
            pins[canonicalize_name(req.name)] = Version(spec.version)
    return pins


def runtime_requirements() -> list[Requirement]:
    """The project's requirements as the image installs them: dependencies plus its extras."""
    project = PYPROJECT["project"]
    lines = [*project["dependencies"],
             *(line for extra in IMAGE_EXTRAS for line in project["optional-dependencies"][extra])]
    return [Requirement(line) for line in lines]


def run_options() -> dict[str, Any]:
    """The container's command line, parsed by the real CLI (without running it)."""
    args = list(container()["args"])
    at = args.index("run")
    group = cli.main_group.make_context("aitems-sync", args[:at])
    with group:
        run = cli.main_group.get_command(group, "run")
        assert run is not None
        with run.make_context("run", args[at + 1:], parent=group) as context:
            return {**group.params, **context.params}
