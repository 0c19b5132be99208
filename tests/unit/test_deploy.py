"""Static checks of deploy/: Docker and Kubernetes cannot run here, so the manifests are parsed and checked
against the code they configure (settings, CLI commands, metric names, health routes, grace periods, users).
"""

from __future__ import annotations

import ast
import dataclasses
import json
import pathlib
import re
import shlex
import tomllib
from collections.abc import Iterator, Mapping
from typing import Any, cast

import pytest
import yaml

from fallback_daemon import app, cli, config, metrics
from fallback_daemon import web as web_
from fallback_daemon.db import sql

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE = DEPLOY / "docker-compose.yml"
UNIT = DEPLOY / "systemd" / "fallback-daemon.service"
UNIT_ENV = DEPLOY / "systemd" / "fallback-daemon.env.example"
K8S = DEPLOY / "k8s"
DASHBOARD = DEPLOY / "grafana" / "fallback-daemon.json"

# Variables that are not the daemon's settings but are legitimately set by the manifests, and why.
STANDARD_ENV = {
    "PATH": "the virtualenv's bin/ first",
    "PYTHONUNBUFFERED": "logs reach the collector at once",
    "PYTHONDONTWRITEBYTECODE": "the image is read-only at run time",
    "PIP_NO_CACHE_DIR": "builder stage only",
    "PIP_DISABLE_PIP_VERSION_CHECK": "builder stage only",
}
STANDARD_PREFIXES = ("AWS_",)  # the standard AWS credential chain (SQS, SNS), never the daemon's settings
POSTGRES_IMAGE_ENV = {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"}  # the postgres service only
SETTING_TOKEN = re.compile(r"\b(?:FALLBACK|ALIBABA_CLOUD)_[A-Z0-9_]*[A-Z0-9]\b")
DAEMON_IMAGE = "fallback-daemon:"
ALL_INTERFACES = "0.0.0.0"  # noqa: S104 - compared with, not bound: containers must listen beyond loopback


# ---- loading -----------------------------------------------------------------------------------------------
def yaml_files() -> list[pathlib.Path]:
    return sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")])


def load_yaml(path: pathlib.Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def compose() -> dict[str, Any]:
    return cast(dict[str, Any], yaml.safe_load(COMPOSE.read_text()))


def k8s_objects() -> dict[tuple[str, str], dict[str, Any]]:
    objects = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in load_yaml(path):
            if "kind" in doc and doc["kind"] != "Kustomization":
                objects[(doc["kind"], doc["metadata"]["name"])] = doc
    return objects


def k8s_kind(kind: str) -> dict[str, Any]:
    [obj] = [o for (k, _), o in k8s_objects().items() if k == kind]
    return obj


def pod_containers() -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(object kind, pod spec, container) for every container of every workload."""
    for (kind, _), obj in k8s_objects().items():
        if kind in ("Deployment", "Job"):
            spec = obj["spec"]["template"]["spec"]
            for container in spec["containers"]:
                yield kind, spec, container


def configmap_env() -> dict[str, str]:
    return dict(k8s_kind("ConfigMap")["data"])


def secret_env() -> dict[str, str]:
    return dict(k8s_kind("Secret")["stringData"])


def env_file(path: pathlib.Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"{path.name}: {line!r} is not KEY=VALUE"
            out[key] = value
    return out


@dataclasses.dataclass
class Stage:
    """One FROM stage of the Dockerfile: its base, name and instructions (with continuations joined)."""

    base: str
    name: str | None
    instructions: list[tuple[str, str]] = dataclasses.field(default_factory=list)

    def all(self, instr: str) -> list[str]:
        return [args for name, args in self.instructions if name == instr]

    def last(self, instr: str) -> str:
        found = self.all(instr)
        assert found, f"stage {self.name or self.base} has no {instr}"
        return found[-1]


def dockerfile_stages() -> list[Stage]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        instr, _, rest = line.partition(" ")
        instr, rest = instr.upper(), rest.strip()
        if instr == "ARG" and not stages:
            key, _, default = rest.partition("=")
            args[key] = default
        elif instr == "FROM":
            parts = rest.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), parts[0])
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(base=base, name=name))
        else:
            assert stages, f"{instr} before FROM"
            stages[-1].instructions.append((instr, rest))
    return stages


def dockerfile_env(stage: Stage) -> dict[str, str]:
    env = {}
    for args in stage.all("ENV"):
        for pair in shlex.split(args):
            key, sep, value = pair.partition("=")
            assert sep, f"ENV {args!r}: use the KEY=VALUE form"
            env[key] = value
    return env


def json_args(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list), f"not the exec form: {args}"
    assert all(isinstance(v, str) for v in value), f"not the exec form: {args}"
    return cast(list[str], value)


def unit_options() -> dict[str, list[str]]:
    """systemd options of the unit, section-qualified (Service.Environment may repeat)."""
    options: dict[str, list[str]] = {}
    section = ""
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, sep, value = line.partition("=")
        assert sep, f"unit line {line!r}"
        options.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return options


def daemon_services() -> dict[str, dict[str, Any]]:
    """Compose services that run the daemon's image with `run`."""
    return {
        name: svc
        for name, svc in compose()["services"].items()
        if str(svc.get("image", "")).startswith(DAEMON_IMAGE) and svc.get("command", ["run"])[0] == "run"
    }


def compose_env(svc: Mapping[str, Any]) -> dict[str, str]:
    env = svc.get("environment", {})
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {str(k): str(v) for k, v in env.items()}


def interpolate(value: str) -> str:
    """Compose `${NAME:-default}` → default (the value a fresh checkout runs with); `${NAME}` → ""."""
    return re.sub(r"\$\{\w+(?::?-([^}]*))?\}", lambda m: m.group(1) or "", value)


def grace_of(env: Mapping[str, str]) -> float:
    return config.load(env).shutdown_grace_s


def seconds(value: str | int) -> float:
    """Compose/systemd durations: 30, "30s", "1m30s"."""
    if isinstance(value, int):
        return float(value)
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*(ms|s|m|min|h)?", value):
        total += float(number) * {"ms": 0.001, "s": 1, "": 1, "m": 60, "min": 60, "h": 3600}[unit]
    return total


def secret_vars() -> set[str]:
    """ENV names whose Settings field is a Secret."""
    types = {f.name: str(f.type) for f in dataclasses.fields(config.Settings)}
    return {var for var, (field, _) in config.ENV.items() if "Secret" in types[field]}


# ---- the files parse ---------------------------------------------------------------------------------------
def test_every_yaml_and_json_file_parses() -> None:
    """Every YAML document and the dashboard JSON under deploy/ parse, and each document is a mapping."""
    files = yaml_files()
    assert {p.name for p in files} >= {
        "docker-compose.yml",
        "deployment.yaml",
        "pdb.yaml",
        "configmap.yaml",
        "secret.yaml",
        "service.yaml",
        "migrate-job.yaml",
        "kustomization.yaml",
    }
    for path in files:
        docs = load_yaml(path)
        assert docs, path
        assert all(isinstance(d, dict) for d in docs), path
    for path in DEPLOY.rglob("*.json"):
        assert isinstance(json.loads(path.read_text()), dict), path


def test_kustomization_lists_existing_files() -> None:
    """Every resource in kustomization.yaml exists, and every manifest except the one-off Job is listed."""
    [kust] = load_yaml(K8S / "kustomization.yaml")
    listed = set(kust["resources"])
    assert all((K8S / r).is_file() for r in listed)
    assert listed == {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", "migrate-job.yaml"}


# ---- environment variables are real settings ---------------------------------------------------------------
def _container_env_vars() -> Iterator[tuple[str, str]]:
    """(name, where) set by the Dockerfile, compose services and k8s workloads."""
    for stage in dockerfile_stages():
        for key in dockerfile_env(stage):
            yield key, "Dockerfile ENV"
    for name, svc in compose()["services"].items():
        if name == "postgres":
            assert set(compose_env(svc)) <= POSTGRES_IMAGE_ENV
            continue
        for key in compose_env(svc):
            yield key, f"compose {name}"
    for ref in re.findall(r"\$\{(\w+)", COMPOSE.read_text()):
        yield ref, "compose interpolation"
    for key in [*configmap_env(), *secret_env()]:
        yield key, "k8s ConfigMap/Secret"
    for kind, _, container in pod_containers():
        for item in container.get("env", []):
            yield item["name"], f"k8s {kind} env"


def named_env_vars() -> dict[str, set[str]]:
    """Every environment variable the deploy files set or mention -> where."""
    found: dict[str, set[str]] = {}
    pairs = [
        (token, path.name)
        for path in DEPLOY.rglob("*")
        if path.is_file()
        for token in SETTING_TOKEN.findall(path.read_text())
    ]
    unit_env = unit_options().get("Service.Environment", [])
    pairs += [(v.partition("=")[0], "systemd Environment=") for v in unit_env]
    pairs += [(key, UNIT_ENV.name) for key in env_file(UNIT_ENV)]
    for name, where in [*pairs, *_container_env_vars()]:
        found.setdefault(name, set()).add(where)
    return found


def test_env_vars_exist_in_config() -> None:
    """Every variable named in the Dockerfile, compose, systemd and k8s files is in config.ENV or standard."""
    found = named_env_vars()
    assert {"FALLBACK_SHUTDOWN_GRACE_S", "DATABASE_URL", "FALLBACK_API_TOKEN"} <= set(found)
    unknown = {
        name: sorted(where)
        for name, where in found.items()
        if name not in config.ENV and name not in STANDARD_ENV and not name.startswith(STANDARD_PREFIXES)
    }
    assert unknown == {}


def test_secrets_live_only_in_secret_places() -> None:
    """The k8s Secret holds the required secrets; no secret setting is in the ConfigMap or the Dockerfile."""
    secrets = secret_vars()
    required = {
        "DATABASE_URL",
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET",
        "FALLBACK_API_TOKEN",
        "FALLBACK_RECEIPT_TOKEN",
    }
    assert required <= secrets  # the detection works (optional secrets, e.g. queue keys, may be added)
    assert set(secret_env()) >= required | {"ALIBABA_CLOUD_ACCESS_KEY_ID"}
    assert not secrets & set(configmap_env())
    for stage in dockerfile_stages():
        assert not secrets & set(dockerfile_env(stage))
    assert all("REPLACE_ME" in v for v in secret_env().values()), "secret.yaml must hold placeholders only"


@pytest.mark.parametrize(
    ("where", "env", "complete"),
    [
        ("k8s ConfigMap + Secret", lambda: {**configmap_env(), **secret_env()}, True),
        ("systemd env file", lambda: env_file(UNIT_ENV), True),
        ("compose daemon-sandbox", lambda: compose_env(compose()["services"]["daemon-sandbox"]), True),
        (
            "compose daemon (live)",
            lambda: {k: interpolate(v) for k, v in compose_env(compose()["services"]["daemon"]).items()},
            False,
        ),
        ("Dockerfile runtime ENV", lambda: dockerfile_env(dockerfile_stages()[-1]), False),
    ],
)
def test_settings_values_are_valid(where: str, env: Any, complete: bool) -> None:
    """Each place's values load through config.load; complete ones also pass the non-sandbox start check."""
    settings = config.load(env())
    if complete:
        app.check_can_run(settings, use_sandbox=False)
    if where != "systemd env file":  # containers listen on every interface of their network namespace
        assert settings.http_host == ALL_INTERFACES, where
        assert settings.http_port == 8080, where


# ---- commands exist in the CLI -----------------------------------------------------------------------------
def commands() -> dict[str, list[str]]:
    """Every argument vector handed to `fallback-daemon` by the deploy files."""
    stages = dockerfile_stages()
    runtime = stages[-1]
    assert json_args(runtime.last("ENTRYPOINT")) == ["fallback-daemon"]
    found = {"Dockerfile CMD": json_args(runtime.last("CMD"))}
    for name, svc in compose()["services"].items():
        if str(svc.get("image", "")).startswith(DAEMON_IMAGE):
            found[f"compose {name}"] = [str(a) for a in svc.get("command", found["Dockerfile CMD"])]
    for kind, _, container in pod_containers():
        assert "command" not in container, "keep the image's ENTRYPOINT"
        found[f"k8s {kind} {container['name']}"] = container["args"]
    exec_start = shlex.split(unit_options()["Service.ExecStart"][0])
    assert exec_start[0].endswith("/fallback-daemon")
    found["systemd ExecStart"] = exec_start[1:]
    return found


def test_commands_parse_with_the_cli() -> None:
    """Every command line in the Dockerfile, compose, k8s and systemd files parses with cli.build_parser()."""
    found = commands()
    parser = cli.build_parser()
    for where, argv in found.items():
        try:
            parser.parse_args(argv)
        except SystemExit:
            pytest.fail(f"{where}: `fallback-daemon {' '.join(argv)}` is rejected by the CLI")
    used = {argv[0] for argv in found.values()}
    assert used == {"run", "migrate", "sandbox"}


# ---- health probes -----------------------------------------------------------------------------------------
def routes() -> set[str]:
    settings = config.load({})
    application = web_.create_app(settings, cast(Any, None))
    return {r.resource.canonical for r in application.router.routes() if r.method == "GET" and r.resource}


def test_probes_point_at_real_health_routes() -> None:
    """Readiness uses /readyz and liveness/startup /healthz on the container's port; both routes exist."""
    assert {"/healthz", "/readyz"} <= routes()
    deployment = k8s_kind("Deployment")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": int(configmap_env()["FALLBACK_HTTP_PORT"])}
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["port"] in (*ports, *ports.values())
    healthcheck = dockerfile_stages()[-1].last("HEALTHCHECK")
    assert "/healthz" in healthcheck
    assert "FALLBACK_HTTP_PORT" in healthcheck


# ---- graceful shutdown budgets -----------------------------------------------------------------------------
def test_k8s_termination_grace_exceeds_the_daemon_grace() -> None:
    """terminationGracePeriodSeconds > preStop sleep + FALLBACK_SHUTDOWN_GRACE_S: no SIGKILL mid-drain."""
    spec = k8s_kind("Deployment")["spec"]["template"]["spec"]
    grace = grace_of(configmap_env())
    [container] = spec["containers"]
    pre_stop = container.get("lifecycle", {}).get("preStop", {})
    sleep = float(pre_stop["exec"]["command"][-1]) if "exec" in pre_stop else 0.0
    assert grace > 0
    assert spec["terminationGracePeriodSeconds"] > sleep + grace


def test_systemd_and_compose_stop_timeouts_exceed_the_grace() -> None:
    """systemd TimeoutStopSec and compose stop_grace_period exceed the daemon's shutdown grace."""
    options = unit_options()
    assert seconds(options["Service.TimeoutStopSec"][0]) > max(
        grace_of(env_file(UNIT_ENV)), config.Settings().shutdown_grace_s
    )
    services = daemon_services()
    assert set(services) == {"daemon", "daemon-sandbox"}
    for name, svc in services.items():
        env = {k: interpolate(v) for k, v in compose_env(svc).items()}
        assert seconds(svc["stop_grace_period"]) > grace_of(env), name
        assert svc.get("stop_signal", "SIGTERM") == "SIGTERM", name


# ---- Dockerfile --------------------------------------------------------------------------------------------
def test_dockerfile_runtime_stage() -> None:
    """Multi-stage; the runtime is python:3.11-slim, non-root, exposes 8080 and stops on SIGTERM."""
    stages = dockerfile_stages()
    assert len(stages) >= 2
    runtime = stages[-1]
    assert runtime.base == "python:3.11-slim"
    user = runtime.last("USER").split(":")[0]
    assert user not in ("root", "0", "")
    assert not user.isdigit() or int(user) >= 1000
    assert runtime.last("EXPOSE") == "8080"
    assert runtime.last("STOPSIGNAL") == "SIGTERM"
    assert dockerfile_env(runtime)["FALLBACK_HTTP_HOST"] == ALL_INTERFACES
    assert any(s.name and f"--from={s.name}" in c for s in stages[:-1] for c in runtime.all("COPY"))


def test_dockerfile_installs_the_package_like_a_user() -> None:
    """The image installs a wheel built from fallback_daemon/ (no editable install, no sql/ copied beside it:
    the SQL is package data) and its runtime stage holds only the virtualenv, not the sources."""
    assert sql.ROOT.resolve().is_relative_to(pathlib.Path(sql.__file__).resolve().parents[1])
    builder = next(s for s in dockerfile_stages() if s.name == "builder")
    workdir = pathlib.PurePosixPath(builder.last("WORKDIR"))
    dest = {}
    for args in builder.all("COPY"):
        *sources, target = args.split()
        for source in sources:
            dest[source.rstrip("/")] = workdir / target
    assert dest["fallback_daemon"] == workdir / "fallback_daemon"
    assert {"pyproject.toml", "requirements.lock"} <= set(dest)
    assert not {"sql", "tests"} & set(dest), "the image needs no source tree beside the package"
    install = " ".join(builder.all("RUN"))
    assert "--editable" not in install
    assert not re.search(r"pip install\b[^&]*\s-e\s", install)
    assert "pip wheel --no-deps --no-build-isolation" in install
    assert re.search(r"pip install --no-deps \S*fallback_daemon-\*\.whl", install)
    # The start-up check runs outside the build folder, so it imports the installed package, not the sources.
    check = install[install.index("cd /") :]
    assert "migrate.available()" in check
    runtime_copies = dockerfile_stages()[-1].all("COPY")
    assert runtime_copies == ["--from=builder /opt/venv /opt/venv"]
    lines = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    ignored = {line.strip().rstrip("/") for line in lines if line.strip() and not line.startswith("#")}
    assert not {"fallback_daemon", "pyproject.toml", "requirements.lock", "README.md"} & ignored


def test_the_sql_and_the_operator_page_are_package_data() -> None:
    """pyproject.toml ships every folder the running daemon reads files from (the wheel test builds it)."""
    with (ROOT / "pyproject.toml").open("rb") as f:
        setuptools = tomllib.load(f)["tool"]["setuptools"]
    data = setuptools["package-data"]
    assert data["fallback_daemon.sql_files.migrations"] == ["*.sql"]
    assert data["fallback_daemon.sql_files.queries"] == ["*.sql"]
    assert data["fallback_daemon.web.static"] == ["*"]
    assert setuptools["packages"]["find"]["namespaces"] is True  # data folders have no __init__.py


# ---- compose -----------------------------------------------------------------------------------------------
def test_compose_wiring() -> None:
    """Postgres 16 has a health check; daemons wait for it; the sandbox profile points a daemon at it."""
    services = compose()["services"]
    postgres = services["postgres"]
    assert postgres["image"] == "postgres:16"
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    pg = postgres["environment"]
    for name, svc in daemon_services().items():
        assert svc["depends_on"]["postgres"]["condition"] == "service_healthy", name
        assert compose_env(svc)["DATABASE_URL"] == (
            f"postgresql://{pg['POSTGRES_USER']}:{pg['POSTGRES_PASSWORD']}@postgres:5432/{pg['POSTGRES_DB']}"
        )
    sandbox = services["sandbox"]
    assert sandbox["profiles"] == ["sandbox"]
    args = cli.build_parser().parse_args([str(a) for a in sandbox["command"]])
    daemon = services["daemon-sandbox"]
    assert daemon["profiles"] == ["sandbox"]
    assert daemon["depends_on"]["sandbox"]["condition"] == "service_healthy"
    env = compose_env(daemon)
    sandbox_url = f"http://sandbox:{args.port}"
    assert env["FALLBACK_CAMS_ENDPOINT"] == env["FALLBACK_SMS_ENDPOINT"] == sandbox_url
    assert (env["ALIBABA_CLOUD_ACCESS_KEY_ID"], env["ALIBABA_CLOUD_ACCESS_KEY_SECRET"]) == (
        args.access_key_id,
        args.access_key_secret,
    )
    receipts = f"http://daemon-sandbox:{env['FALLBACK_HTTP_PORT']}/receipts/{env['FALLBACK_RECEIPT_TOKEN']}"
    assert (args.chatapp_callback, args.sms_callback) == (f"{receipts}/chatapp", f"{receipts}/sms")
    assert services["daemon"]["profiles"] == ["live"]


# ---- systemd -----------------------------------------------------------------------------------------------
def test_systemd_unit() -> None:
    """The unit is Type=exec, non-root, reads an EnvironmentFile, restarts on failure and is hardened."""
    o = unit_options()
    expected = {
        "Service.Type": "exec",
        "Service.Restart": "on-failure",
        "Service.KillSignal": "SIGTERM",
        "Service.NoNewPrivileges": "yes",
        "Service.ProtectSystem": "strict",
        "Service.ProtectHome": "yes",
        "Service.PrivateTmp": "yes",
    }
    assert {k: o[k][-1] for k in expected} == expected
    assert o["Service.User"][-1] not in ("root", "0")
    assert o["Service.EnvironmentFile"][-1].endswith(".env")
    assert shlex.split(o["Service.ExecStart"][-1])[1:] == ["run"]
    assert o["Service.RestartPreventExitStatus"] == ["2"]  # cli.main: 2 = configuration error
    assert o["Install.WantedBy"] == ["multi-user.target"]


# ---- Kubernetes --------------------------------------------------------------------------------------------
def test_k8s_deployment_is_production_shaped() -> None:
    """3 replicas, resources, non-root read-only containers, real envFrom refs; the PDB and Service match."""
    objects = k8s_objects()
    deployment = k8s_kind("Deployment")
    assert deployment["spec"]["replicas"] == 3
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    for kind, spec, container in pod_containers():
        assert spec["securityContext"]["runAsNonRoot"] is True, kind
        assert spec["securityContext"]["runAsUser"] >= 1000, kind
        sc = container["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True, kind
        assert sc["allowPrivilegeEscalation"] is False, kind
        assert sc["capabilities"]["drop"] == ["ALL"], kind
        assert container["resources"]["requests"], kind
        assert container["resources"]["limits"]["memory"], kind
        refs = {
            (
                ("ConfigMap", e["configMapRef"]["name"])
                if "configMapRef" in e
                else ("Secret", e["secretRef"]["name"])
            )
            for e in container["envFrom"]
        }
        assert refs <= set(objects), kind
        assert container["image"] == deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    pdb = k8s_kind("PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert 1 <= pdb["spec"]["minAvailable"] < deployment["spec"]["replicas"]
    service = k8s_kind("Service")
    assert service["spec"]["selector"].items() <= labels.items()
    [port] = service["spec"]["ports"]
    assert port["targetPort"] == "http"
    assert all(isinstance(v, str) for v in configmap_env().values()), "ConfigMap values must be strings"


# ---- Grafana -----------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Declared:
    """A metric as declared in metrics.py."""

    name: str
    kind: str
    labels: frozenset[str]

    def series(self) -> set[str]:
        """The names Prometheus scrapes for it (prometheus-client appends _total to counters)."""
        if self.kind == "Counter":
            return {self.name.removesuffix("_total") + "_total"}
        if self.kind == "Histogram":
            return {f"{self.name}_{s}" for s in ("bucket", "sum", "count")}
        if self.kind == "Summary":
            return {self.name, f"{self.name}_sum", f"{self.name}_count"}
        return {self.name}


def declared_metrics() -> dict[str, Declared]:
    """Exposed series name -> the metric declared in fallback_daemon/metrics.py (read from its source)."""
    tree = ast.parse(pathlib.Path(metrics.__file__).read_text())
    out: dict[str, Declared] = {}
    for node in ast.walk(tree):
        if not (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("Counter", "Gauge", "Histogram", "Summary")
        ):
            continue
        name = ast.literal_eval(node.args[0])
        labels_node = (
            node.args[2]
            if len(node.args) > 2
            else next((k.value for k in node.keywords if k.arg == "labelnames"), None)
        )
        labels = frozenset(ast.literal_eval(labels_node)) if labels_node is not None else frozenset()
        metric = Declared(name=name, kind=node.func.id, labels=labels)
        for series in metric.series():
            out[series] = metric
    return out


PROMQL_WORDS = {
    "sum",
    "min",
    "max",
    "avg",
    "count",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
    "group",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "rate",
    "irate",
    "increase",
    "delta",
    "idelta",
    "deriv",
    "histogram_quantile",
    "abs",
    "clamp_min",
    "clamp_max",
    "label_values",
    "vector",
    "scalar",
    "time",
    "absent",
    "changes",
    "resets",
    "max_over_time",
    "min_over_time",
    "avg_over_time",
    "sum_over_time",
    "last_over_time",
    "round",
    "ceil",
    "floor",
    "sort",
    "sort_desc",
    "label_replace",
    "inf",
    "nan",
}
TARGET_LABELS = {"job", "instance", "namespace", "pod"}  # attached by the scraper, not by the daemon


def parse_promql(expr: str) -> tuple[set[str], set[str]]:
    """(metric names, label names) used in a PromQL expression (Grafana variables removed)."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    s = re.sub(r"\$\{\w+\}|\$\w+", "", s)
    labels: set[str] = set()
    for inner in re.findall(r"\{([^}]*)\}", s):
        labels |= set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", inner))
    s = re.sub(r"\{[^}]*\}", " ", s)
    for inner in re.findall(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", s):
        labels |= {x.strip() for x in inner.split(",") if x.strip()}
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    s = re.sub(r"\[[^\]]*\]", " ", s)
    words = set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", s))
    label_values = re.findall(r"label_values\(\s*([A-Za-z_:][\w:]*)\s*,\s*(\w+)\s*\)", expr)
    labels |= {label for _, label in label_values}
    return words - PROMQL_WORDS - labels, labels


def dashboard_exprs() -> list[tuple[str, str]]:
    """(panel title, expression) for every query in the dashboard, variables included."""
    dash = json.loads(DASHBOARD.read_text())
    out = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            walk(panel.get("panels", []))
            out.extend((panel["title"], t["expr"]) for t in panel.get("targets", []))

    walk(dash["panels"])
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            out.append((f"${var['name']}", query))
    return out


def test_dashboard_metrics_and_labels_exist() -> None:
    """Every series and label a dashboard query uses is declared in fallback_daemon/metrics.py."""
    declared = declared_metrics()
    assert declared["fallback_sends_total"].labels == {"outcome"}  # the parser reads the real file
    problems = []
    for title, expr in dashboard_exprs():
        names, labels = parse_promql(expr)
        assert names, f"{title}: no metric in {expr}"
        unknown = names - set(declared)
        if unknown:
            problems.append((title, "unknown series", sorted(unknown)))
            continue
        allowed = set(TARGET_LABELS)
        for name in names:
            allowed |= declared[name].labels | ({"le"} if name.endswith("_bucket") else set())
        if labels - allowed:
            problems.append((title, "unknown labels", sorted(labels - allowed)))
    assert problems == []


def test_dashboard_covers_the_operator_questions() -> None:
    """The dashboard shows every metric the operations issue asks for, with p50/p99 latency and lateness."""
    declared = declared_metrics()
    used = {declared[n].name for _, e in dashboard_exprs() for n in parse_promql(e)[0]}
    assert used >= {
        "fallback_sends_total",
        "fallback_provider_latency_seconds",
        "fallback_throttled_total",
        "fallback_receipts_total",
        "fallback_receipt_lag_seconds",
        "fallback_timer_lateness_seconds",
        "fallback_fired_total",
        "fallback_sms_total",
        "fallback_double_delivered_total",
        "fallback_dead_letters_total",
        "fallback_held",
        "fallback_pending_timers",
        "fallback_feed_gate_closed",
    }
    exprs = [e for _, e in dashboard_exprs()]
    for histogram in ("fallback_provider_latency_seconds", "fallback_timer_lateness_seconds"):
        for quantile in ("0.5", "0.99"):
            assert any(f"histogram_quantile({quantile}," in e and histogram in e for e in exprs), histogram


def test_dashboard_panels_are_well_formed() -> None:
    """Panel ids are unique, panels fit the 24-column grid, and every query uses the datasource variable."""
    dash = json.loads(DASHBOARD.read_text())
    panels = dash["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    for p in panels:
        assert p["gridPos"]["x"] + p["gridPos"]["w"] <= 24, p["title"]
        if p["type"] != "row":
            assert p["targets"], p["title"]
            assert all(t["datasource"]["uid"] == "${datasource}" for t in p["targets"]), p["title"]
    assert {v["name"] for v in dash["templating"]["list"]} >= {"datasource", "job"}
