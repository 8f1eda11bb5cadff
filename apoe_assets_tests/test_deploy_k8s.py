"""The Kubernetes path (deploy/k8s, README "Scaling out") in step with the code, schema-level.

No cluster and no Docker daemon here: the Helm values, the run config and the op tags are
checked against the real definitions and dagster-k8s's own schemas, and the Docker build
context is listed by the Docker SDK's own .dockerignore matcher."""

from __future__ import annotations

import importlib
import posixpath
import re
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml
from dagster._config import validate_config
from dagster_k8s import k8s_job_executor
from dagster_k8s.container_context import K8sContainerContext
from dagster_k8s.job import UserDefinedDagsterK8sConfig, get_user_defined_k8s_config
from docker.utils.build import exclude_paths

from apoe_assets.definitions import build_definitions
from apoe_assets.orchestration.executors import GPU_NODE_LABEL, step_executor
from apoe_assets.study import DEMO_STUDY, load_study

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
DOCKERFILE = K8S / "Dockerfile"
GPU = "nvidia.com/gpu"
ENFORMER_STEPS = {"enformer_predictions", "snp_effects"}


def load(name: str) -> dict[str, Any]:
    """A YAML file of deploy/k8s."""
    return yaml.safe_load((K8S / name).read_text())


@pytest.fixture(scope="module")
def defs() -> dg.Definitions:
    """The demo study's definitions, built once for the module."""
    return build_definitions(load_study(DEMO_STUDY))


@pytest.fixture(scope="module")
def step_tags(defs: dg.Definitions) -> dict[str, dict[str, str]]:
    """Op tags of every step (op) of the code location, by step name."""
    job = defs.resolve_implicit_global_asset_job_def()
    return {node.name: dict(node.definition.tags) for node in job.graph.nodes}


def gpus(config: UserDefinedDagsterK8sConfig) -> object:
    """The GPUs a step's Kubernetes config asks for (None when none)."""
    resources = config.container_config.get("resources", {})
    return (resources.get("limits", {}).get(GPU)
            or resources.get("requests", {}).get(GPU))


def merge(*configs: UserDefinedDagsterK8sConfig) -> UserDefinedDagsterK8sConfig:
    """Kubernetes configs merged in order, later ones winning, as dagster-k8s merges them."""
    context = K8sContainerContext()
    for config in configs:
        context = context.merge(K8sContainerContext(run_k8s_config=config))
    return context.run_k8s_config


def test_every_yaml_parses() -> None:
    """Catches a YAML syntax error (a bad indent, a tab) in any file under deploy/k8s."""
    names = sorted(p.name for p in K8S.glob("*.y*ml"))
    assert {"values.yaml", "run_config.yaml"} <= set(names)
    for name in names:
        assert isinstance(load(name), dict), name


def test_run_config_fits_the_k8s_executor_and_names_real_steps(
        step_tags: dict[str, dict[str, str]]) -> None:
    """Catches a misspelt or misplaced executor field (dagster-k8s's own config schema) and a
    per-step entry for a step the code location does not have (renamed or never existed)."""
    run_config = load("run_config.yaml")
    assert set(run_config) == {"execution"}
    config = run_config["execution"]["config"]
    result = validate_config(k8s_job_executor.config_schema.config_type, config)
    assert result.success, [error.message for error in result.errors]
    assert set(config["per_step_k8s_config"]) <= set(step_tags)


def test_only_the_enformer_steps_ask_for_a_gpu_on_a_gpu_node(
        step_tags: dict[str, dict[str, str]]) -> None:
    """Catches a ``dagster-k8s/config`` op tag dagster-k8s cannot parse, an Enformer step
    without its one GPU, node selector or toleration, and a GPU asked for any other step."""
    configs = {step: get_user_defined_k8s_config(tags) for step, tags in step_tags.items()}
    assert {step for step, config in configs.items() if gpus(config)} == ENFORMER_STEPS
    for step in ENFORMER_STEPS:
        config = configs[step]
        assert gpus(config) == 1, step
        assert config.pod_spec_config["node_selector"] == GPU_NODE_LABEL
        assert any(t["key"] == GPU and t["effect"] == "NoSchedule"
                   for t in config.pod_spec_config["tolerations"])


def test_run_config_keeps_the_gpu_of_the_enformer_steps(
        step_tags: dict[str, dict[str, str]]) -> None:
    """Catches run config that asks for GPUs itself or whose per-step resources, merged the
    way the k8s executor merges them (executor, then op tags, then per step), lose the GPU."""
    config = load("run_config.yaml")["execution"]["config"]
    assert gpus(UserDefinedDagsterK8sConfig.from_dict(config["step_k8s_config"])) is None
    for step, override in config["per_step_k8s_config"].items():
        assert gpus(UserDefinedDagsterK8sConfig.from_dict(override)) is None, step
    for step in ENFORMER_STEPS:
        merged = merge(UserDefinedDagsterK8sConfig.from_dict(config["step_k8s_config"]),
                       get_user_defined_k8s_config(step_tags[step]),
                       UserDefinedDagsterK8sConfig.from_dict(
                           config["per_step_k8s_config"].get(step, {})))
        assert gpus(merged) == 1, step
        assert merged.pod_spec_config["node_selector"] == GPU_NODE_LABEL


def test_helm_values_deploy_this_code_location() -> None:
    """Catches Helm values that name a module that does not import, an executor that
    ``APOE_EXECUTOR`` does not accept, another run launcher, a written password, a demo
    storage root off the shared volume, and a pool limit out of step with deploy/dagster.yaml."""
    values = load("values.yaml")
    [deployment] = values["dagster-user-deployments"]["deployments"]
    args = deployment["dagsterApiGrpcArgs"]
    module = args[args.index("--module-name") + 1]
    importlib.import_module(module)
    workspace = yaml.safe_load((ROOT / "workspace.yaml").read_text())
    assert module == workspace["load_from"][0]["python_module"]["module_name"]
    assert deployment["includeConfigInLaunchedRuns"]["enabled"]
    env = deployment["env"]
    assert step_executor(env["APOE_EXECUTOR"]) is k8s_job_executor
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    # Storage: the demo study's storage root, resolved in the image, lies on the shared volume.
    study = yaml.safe_load(DEMO_STUDY.read_text())
    root = posixpath.normpath(posixpath.join(posixpath.dirname(env["APOE_STUDY"]),
                                             study["storage_root"]))
    mounts = [m["mountPath"] for m in deployment["volumeMounts"]]
    assert any(root.startswith(m.rstrip("/") + "/") for m in mounts), (root, mounts)
    assert f"APOE_STUDY={env['APOE_STUDY']}" in DOCKERFILE.read_text()
    # Credentials: an external database whose password is an existing Secret, none written.
    assert values["postgresql"]["enabled"] is False
    assert values["generatePostgresqlPasswordSecret"] is False
    assert values["global"]["postgresqlSecretName"]
    assert not [key for key, value in walk_items(values)
                if "password" in key.lower() and not isinstance(value, bool)]
    # The accelerator pool: one slot per GPU, as in the instance of the Celery path.
    instance = yaml.safe_load((ROOT / "deploy" / "dagster.yaml").read_text())
    assert values["concurrency"]["enabled"]
    assert (values["concurrency"]["pools"]["defaultLimit"]
            == instance["concurrency"]["pools"]["default_limit"])
    assert values["dagsterDaemon"]["runMonitoring"]["enabled"]


def walk_items(value: object) -> list[tuple[str, object]]:
    """Every (key, value) of the mappings in a parsed YAML document, at any depth."""
    if isinstance(value, dict):
        return [(str(k), v) for k, v in value.items()] + [
            item for v in value.values() for item in walk_items(v)]
    if isinstance(value, list):
        return [item for v in value for item in walk_items(v)]
    return []


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", "\n".join(
        line for line in dockerfile.read_text().splitlines()
        if not line.lstrip().startswith("#")))
    return [(parts[0].upper(), parts[1] if len(parts) > 1 else "")
            for line in text.splitlines() if (parts := line.strip().split(None, 1))]


def build_context() -> set[str]:
    """The paths ``docker build -f deploy/k8s/Dockerfile .`` sends, by the Docker SDK."""
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
    return exclude_paths(str(ROOT), patterns, dockerfile=str(DOCKERFILE.relative_to(ROOT)))


def test_docker_context_holds_what_the_image_copies_and_nothing_else() -> None:
    """Catches a COPY of a file .dockerignore leaves out (the build would fail), a context that
    ships the virtual environment, local storage, .git or the tests, and an image that is not
    multi-stage or whose final stage runs as root."""
    context = build_context()
    steps = instructions(DOCKERFILE)
    copies = [args.split() for name, args in steps if name == "COPY"]
    sources = [src for words in copies if not any(w.startswith("--from") for w in words)
               for src in [w for w in words if not w.startswith("--")][:-1]]
    assert sources
    for source in sources:
        source = source.rstrip("/")
        assert source in context or any(p.startswith(source + "/") for p in context), source
    assert {"pyproject.toml", "setup.py", "apoe_assets/definitions.py",
            "data/demo/study.yaml"} <= context
    for folder in (".venv", ".apoe", ".git", "apoe_assets_tests", "benchmarks", "docs"):
        assert not [p for p in context if p == folder or p.startswith(folder + "/")], folder
    assert not [p for p in context if "__pycache__" in p or p.endswith(".egg-info")]
    stages = [i for i, (name, _) in enumerate(steps) if name == "FROM"]
    assert len(stages) >= 2
    users = [args for name, args in steps[stages[-1]:] if name == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    assert "--module-name apoe_assets.definitions" in dict(steps)["CMD"]
