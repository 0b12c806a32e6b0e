"""``sqltune k8s ...``: run sqltune on Kubernetes through KubeRay.

  submit               create a ConfigMap with a job config and a RayJob running it; follow it
  list                 list sqltune RayJobs and their status
  serve                create or update the serving RayService (serveConfigV2 from serve/config.yaml)
  render-serve-config  print the serveConfigV2 text
  generate             (re)write the generated manifests under k8s/ (--check: fail if stale)
  validate             validate YAML manifests offline (KubeRay CRDs + Kubernetes schemas)
  local-run            run rendered RayJobs/RayService on a local Ray (the KubeRay stand-in, sqltune.k8s.local)

``--dry-run`` prints the objects as YAML and contacts no cluster. Exit codes of ``submit --follow``:
0 SUCCEEDED, 1 FAILED, 2 bad input (or rejected by the operator), 3 STOPPED / other.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import sys
from pathlib import Path
from typing import Any

import yaml

from sqltune.config import load_config
from sqltune.data.embedded import build_embedded
from sqltune.errors import ConfigError
from sqltune.k8s import builders as b
from sqltune.k8s import local
from sqltune.k8s import placement as pl
from sqltune.k8s.cluster import Cluster
from sqltune.k8s.generate import generate
from sqltune.k8s.localray import LocalRay
from sqltune.k8s.placement import config_class
from sqltune.k8s.validate import validate_objects
from sqltune.k8s.versions import CPU_IMAGE, GPU_IMAGE
from sqltune.models.tiny import TinyModelConfig, build_tiny_model
from sqltune.storage import EmbeddedS3, publish


def _default_serve_config() -> Path:
    for cand in (Path("serve/config.yaml"), Path(__file__).resolve().parents[3] / "serve" / "config.yaml"):
        if cand.is_file():
            return cand
    return Path("serve/config.yaml")


def _nonneg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _positive(text: str) -> int:
    value = _nonneg(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="k8s_command", metavar="SUBCOMMAND", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--namespace", "-n", default=b.NAMESPACE, help="namespace (default: %(default)s)")
        p.add_argument("--context", default=None, help="kubeconfig context (default: current)")

    s = sub.add_parser("submit", help="Run a training/eval/export config as a RayJob.")
    s.add_argument("--config", required=True, type=Path, help="job config YAML (e.g. jobs/configs/tiny.yaml)")
    s.add_argument("--kind", choices=sorted(b.ENTRYPOINT_MODULES), default=None,
                   help="entry point; default from the file name (eval-*, export-*, pipeline-*, else train)")
    s.add_argument("--name", default=None, help="RayJob name (default: sqltune-<kind>-<run_name>-<random>)")
    s.add_argument("--image", default=None, help=f"image (default: {GPU_IMAGE}, or {CPU_IMAGE} with --gpus 0)")
    s.add_argument("--gpus", type=_nonneg, default=None,
                   help="GPUs per worker (default: from the config: scaling.use_gpu, ray.use_gpu, device); "
                   "becomes that config key in the entrypoint")
    s.add_argument("--workers", type=_positive, default=None,
                   help="workers (default: from the config: scaling.num_workers for training); training: "
                   "becomes scaling.num_workers")
    s.add_argument("--ttl", type=_nonneg, default=3600, help="seconds to keep the finished cluster's CR")
    s.add_argument("--retries", type=_nonneg, default=0, help="RayJob backoffLimit (default: 0)")
    s.add_argument("--deadline", type=_nonneg, default=0, help="activeDeadlineSeconds (0: none)")
    s.add_argument("--timeout", type=_nonneg, default=0, help="stop following after N seconds (0: never)")
    s.add_argument("--dry-run", action="store_true", help="print the objects as YAML; contact no cluster")
    s.add_argument("--follow", action=argparse.BooleanOptionalAction, default=True,
                   help="wait for the job and stream its logs (default: follow)")
    s.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides for the entry point")
    common(s)
    s.set_defaults(func=cmd_submit)

    ls = sub.add_parser("list", help="List sqltune RayJobs.")
    common(ls)
    ls.add_argument("--all-namespaces", "-A", action="store_true")
    ls.set_defaults(func=cmd_list)

    sv = sub.add_parser("serve", help="Create or update the serving RayService.")
    sv.add_argument("--model-uri", required=True, help="model to serve, e.g. s3://sqltune/runs/tiny/merged")
    sv.add_argument("--name", default="sqltune", help="RayService name (default: %(default)s)")
    sv.add_argument("--image", default=None)
    sv.add_argument("--gpus", type=_nonneg, default=1, help="GPUs per serving worker and model replica")
    sv.add_argument("--workers", type=_positive, default=1, help="serving worker pods")
    sv.add_argument("--serve-config", type=Path, default=None, help="Ray Serve config (serve/config.yaml)")
    sv.add_argument("--dry-run", action="store_true", help="print the RayService as YAML; contact no cluster")
    common(sv)
    sv.set_defaults(func=cmd_serve)

    r = sub.add_parser("render-serve-config", help="Print serveConfigV2 generated from serve/config.yaml.")
    r.add_argument("--model-uri", default=None)
    r.add_argument("--gpus", type=float, default=None, help="num_gpus of the model deployment")
    r.add_argument("--serve-config", type=Path, default=None)
    r.set_defaults(func=cmd_render)

    g = sub.add_parser("generate", help="Rewrite the generated manifests under k8s/.")
    g.add_argument("--root", type=Path, default=Path("."), help="repository root (default: .)")
    g.add_argument("--check", action="store_true", help="write nothing; exit 1 if anything is stale")
    g.set_defaults(func=cmd_generate)

    v = sub.add_parser("validate", help="Validate manifests offline (KubeRay CRDs, Kubernetes schemas).")
    v.add_argument("files", nargs="+", help="YAML files ('-' for stdin)")
    v.add_argument("--crds", default=None, help="folder of the KubeRay CRDs (default: $SQLTUNE_CRD_DIR)")
    v.set_defaults(func=cmd_validate)

    lr = sub.add_parser(
        "local-run", help="Run rendered RayJobs and the RayService on a local Ray cluster (KubeRay stand-in).",
        description="Runs `kubectl kustomize` or `sqltune k8s submit --dry-run` output the way KubeRay would: "
        "ConfigMap files at their mountPaths under a temporary root (paths in the entrypoint get the root as "
        "prefix), pod env with Secrets from --env-file, runtimeEnvYAML, the entrypoint via `ray job submit`; "
        "RayService: serve deploy of serveConfigV2, /readyz and one /v1/sql answer. Not emulated: scheduling, "
        "GPUs, image pulls, probes.",
    )
    lr.add_argument("-f", "--filename", required=True, help="rendered manifests ('-' for stdin)")
    lr.add_argument("--env-file", default=None, help="Secrets as <secret>.<key>=<value> lines")
    lr.add_argument("--job", action="append", default=None, metavar="NAME",
                    help="RayJob to run, in order (repeat; default: every RayJob but the pipeline: train, export, eval)")
    lr.add_argument("--service", action="append", default=None, metavar="NAME",
                    help="RayService to deploy (repeat; default: every RayService)")
    lr.add_argument("--no-service", action="store_true", help="deploy no RayService")
    lr.add_argument("--args", action="append", default=[], metavar="JOB:key=value",
                    help="append key=value to JOB's entrypoint (e.g. sqltune-train-tiny:train.max_steps=5)")
    lr.add_argument("--address", default=None,
                    help="use this running Ray (dashboard address) instead of starting one; RAY_AUTH_* from the env")
    lr.add_argument("--num-cpus", type=_positive, default=4, help="logical CPUs of the local Ray it starts")
    lr.add_argument("--embedded-s3", action="store_true",
                    help="start the embedded S3 server (bucket sqltune), fill Secret sqltune-s3 from it (and "
                    "sqltune-api with a random token unless --env-file has one)")
    lr.add_argument("--tiny-base", action="store_true",
                    help="with --embedded-s3: build the tiny base model and dataset as `make demo` does and publish them")
    lr.add_argument("--induction-steps", type=_nonneg, default=None,
                    help="with --tiny-base: pre-training steps instead of jobs/configs/tiny-base.yaml's (quick runs)")
    lr.add_argument("--work", type=Path, default=Path(".state/k8s-local"), help="mounts, logs, serve config")
    lr.add_argument("--timeout", type=_nonneg, default=0, help="seconds per RayJob (0: no limit)")
    lr.add_argument("--keep-running", action="store_true", help="leave the local Ray (and S3) up afterwards")
    lr.set_defaults(func=cmd_local_run)


# ----------------------------------------------------------------------------------------------- submit


def _read_config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"--config {path}: no such file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"--config {path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"--config {path}: expected a mapping of config fields at the top level")
    return data


def infer_kind(path: Path) -> str:
    stem = path.stem.lower()
    if stem.startswith("tune"):
        raise ConfigError(
            f"--config {path}: a hyper-parameter sweep (jobs.tune) is not submitted as a RayJob; run it on a Ray "
            f"cluster with `ray job submit --working-dir . -- python -m jobs.tune --config {path}`"
        )
    for prefix, kind in (("eval", "eval"), ("export", "export"), ("pipeline", "pipeline")):
        if stem.startswith(prefix):
            return kind
    return "train"


def _config_files(kind: str, path: Path, overrides: list[str]) -> dict[str, str]:
    """The files the RayJob's ConfigMap carries: the config, and for a pipeline the presets it chains
    (they must sit beside it, as they will in the mounted folder)."""
    files = {path.name: path.read_text()}
    if kind == "pipeline":
        cfg = load_config(config_class(b.ENTRYPOINT_MODULES[kind]), path, overrides)
        for stage, key in (("train", "train_config"), ("export", "export_config"), ("evaluate", "eval_config")):
            name = getattr(cfg, key)
            if Path(name).name != name:
                raise ConfigError(
                    f"{path}: {key}: {name!r} is a path; a submitted pipeline mounts its presets in one folder, "
                    f"so name a file beside the pipeline config ({key}={Path(name).name})"
                )
            files[name] = cfg.stage_file(stage, path.parent).read_text()
    return files


def plan_submit(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ConfigMap and RayJob ``submit`` creates (pure: used by --dry-run and the real run).

    The job's config (plus the overrides) is parsed with the job's own config class, and the worker
    group is sized from what it asks Ray for (``scaling`` for training, ``ray`` for evaluation,
    ``device`` for export); ``--workers``/``--gpus`` become the config keys that mean the same.
    """
    _read_config(args.config)
    kind = args.kind or infer_kind(args.config)
    module = b.ENTRYPOINT_MODULES[kind]
    for o in args.overrides:
        if "=" not in o or o.startswith("="):
            raise ConfigError(f"override {o!r} is not key=value")
    overrides = list(args.overrides) + pl.flag_overrides(kind, workers=args.workers, gpus=args.gpus)
    try:
        demand = pl.job_demand(module, args.config, overrides)
    except ConfigError as exc:
        raise ConfigError(
            f"--config {args.config} is not a valid {module} config ({exc}); fix the file or the override, "
            f"or pass --kind if it is not a {kind} config"
        ) from None
    # evaluation: --gpus is the GPUs of each worker pod (variant actors share it by ray.num_gpus_per_actor)
    replicas, gpus, cpus = pl.group_shape(demand, gpu_pod_gpus=args.gpus if kind == "eval" and args.gpus else None)
    if kind == "eval" and args.workers is not None:
        replicas = args.workers  # evaluation has no worker-count key: --workers sizes the group only
    run = str(_read_config(args.config).get("run_name") or _read_config(args.config).get("eval_name")
              or args.config.stem)
    if args.name:
        name = b.check_name(args.name, "--name", b.MAX_RAYJOB_NAME)
    else:
        name = f"{b.slug(f'sqltune-{kind}-{run}', b.MAX_RAYJOB_NAME - 7)}-{secrets.token_hex(3)}"
    b.check_name(args.namespace, "--namespace")
    worker = b.GPU_WORKER if gpus else b.CPU_WORKER
    if gpus != worker.gpus:
        worker = b.Resources(**{**worker.__dict__, "gpus": gpus})
    if cpus > pl._quantity_cpu(worker.cpu_limit):
        # Ray's num-cpus comes from the limit: a worker must hold one bundle of what the job asks
        need = str(int(cpus)) if float(cpus).is_integer() else str(cpus)
        worker = b.Resources(**{**worker.__dict__, "cpu": need, "cpu_limit": need})
    image = args.image or (GPU_IMAGE if gpus else CPU_IMAGE)
    configmap = b.build_configmap(
        f"{name}-config", _config_files(kind, args.config, overrides), namespace=args.namespace,
        labels={"sqltune.io/run": name},
    )
    rayjob = b.build_rayjob(
        b.JobSpec(
            name=name, kind=kind, config_file=args.config.name, configmap=configmap["metadata"]["name"],
            namespace=args.namespace, image=image, workers=replicas, worker=worker,
            overrides=tuple(overrides), ttl_seconds_after_finished=args.ttl, backoff_limit=args.retries,
            active_deadline_seconds=args.deadline or None, entrypoint_num_gpus=demand.driver_gpus,
        )
    )
    pl.check_fits(demand, rayjob, where=f"--config {args.config}")
    return configmap, rayjob


def cmd_submit(args: argparse.Namespace) -> int:
    configmap, rayjob = plan_submit(args)
    if args.dry_run:
        sys.stdout.write(b.dump_yaml(configmap, rayjob))
        return 0

    cluster = Cluster(args.context)
    cluster.create(configmap)
    created = cluster.create(rayjob)
    cluster.own(configmap, created)
    name, ns = rayjob["metadata"]["name"], rayjob["metadata"]["namespace"]
    print(f"[sqltune] created RayJob {ns}/{name}", file=sys.stderr)
    if not args.follow:
        print(name)
        return 0
    return cluster.follow_rayjob(name, ns, timeout_s=args.timeout)


def cmd_list(args: argparse.Namespace) -> int:
    items = Cluster(args.context).list_rayjobs(
        None if args.all_namespaces else args.namespace, f"app.kubernetes.io/part-of={b.PART_OF}"
    )
    rows = [("NAMESPACE", "NAME", "KIND", "JOB STATUS", "DEPLOYMENT", "START", "END")]
    for it in sorted(items, key=lambda i: i["metadata"].get("creationTimestamp", "")):
        st, md = it.get("status") or {}, it["metadata"]
        rows.append((
            md.get("namespace", ""), md["name"], (md.get("labels") or {}).get("app.kubernetes.io/component", ""),
            st.get("jobStatus", "-") or "-", st.get("jobDeploymentStatus", "-") or "-",
            st.get("startTime", "-"), st.get("endTime", "-"),
        ))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())
    return 0


# ----------------------------------------------------------------------------------------------- serve


def plan_serve(args: argparse.Namespace) -> dict[str, Any]:
    text = b.render_serve_config(
        args.serve_config or _default_serve_config(), model_uri=args.model_uri, gpus_per_replica=args.gpus
    )
    worker = b.GPU_WORKER if args.gpus else b.CPU_WORKER
    if args.gpus and args.gpus != worker.gpus:
        worker = b.Resources(**{**worker.__dict__, "gpus": args.gpus})
    return b.build_rayservice(
        b.ServeSpec(
            serve_config=text, name=args.name, namespace=args.namespace,
            image=args.image or (GPU_IMAGE if args.gpus else CPU_IMAGE), workers=args.workers, worker=worker,
        )
    )


def cmd_serve(args: argparse.Namespace) -> int:
    obj = plan_serve(args)
    if args.dry_run:
        sys.stdout.write(b.dump_yaml(obj))
        return 0

    action, _ = Cluster(args.context).apply(obj)
    md = obj["metadata"]
    print(f"[sqltune] {action} RayService {md['namespace']}/{md['name']}; "
          f"Service {md['name']}-serve-svc port {b.SERVE_PORT} once ready", file=sys.stderr)
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    sys.stdout.write(
        b.render_serve_config(
            args.serve_config or _default_serve_config(), model_uri=args.model_uri, gpus_per_replica=args.gpus
        )
    )
    return 0


# ----------------------------------------------------------------------------------------------- files


def cmd_generate(args: argparse.Namespace) -> int:
    stale = generate(args.root, check=args.check)
    for path in stale:
        print(f"{'stale' if args.check else 'wrote'}: {path}", file=sys.stderr)
    if args.check and stale:
        print("run: sqltune k8s generate", file=sys.stderr)
        return 1
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    objs: list[dict[str, Any]] = []
    for f in args.files:
        text = sys.stdin.read() if f == "-" else Path(f).read_text()
        objs += [o for o in yaml.safe_load_all(text) if o]
    errors = validate_objects(objs, args.crds)
    for e in errors:
        print(e, file=sys.stderr)
    print(f"{len(objs)} objects, {len(errors)} errors", file=sys.stderr)
    return 1 if errors else 0


# ----------------------------------------------------------------------------------------------- local


DEFAULT_JOB_ORDER = ("train", "export", "eval")


def _job_args(items: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for item in items:
        name, sep, kv = item.partition(":")
        if not sep or "=" not in kv or kv.startswith("="):
            raise ConfigError(f"--args {item!r}: expected JOB:key=value, e.g. sqltune-train-tiny:train.max_steps=5")
        out.setdefault(name, []).append(kv)
    return out


def cmd_local_run(args: argparse.Namespace) -> int:
    if args.tiny_base and not args.embedded_s3:
        raise ConfigError("--tiny-base publishes the tiny base to the embedded S3: add --embedded-s3")
    if args.induction_steps is not None and not args.tiny_base:
        raise ConfigError("--induction-steps shortens the tiny base's pre-training: only with --tiny-base")
    text = sys.stdin.read() if args.filename == "-" else Path(args.filename).read_text()
    objs = local.load_objects(text, args.filename)
    secrets = local.read_env_file(args.env_file)
    if args.job is None:
        by_component = {o["metadata"]["name"]: (o["metadata"].get("labels") or {}).get("app.kubernetes.io/component")
                        for o in objs if o["kind"] == "RayJob"}
        names = [n for c in DEFAULT_JOB_ORDER for n, comp in by_component.items() if comp == c]
        names += [n for n, comp in by_component.items() if comp not in (*DEFAULT_JOB_ORDER, "pipeline")]
        jobs = local.select(objs, "RayJob", names)
    else:
        jobs = local.select(objs, "RayJob", args.job)
    services = [] if args.no_service else local.select(objs, "RayService", args.service)
    extra = _job_args(args.args)
    unknown = sorted(set(extra) - {j["metadata"]["name"] for j in jobs})
    if unknown:
        raise ConfigError(f"--args names {unknown[0]!r}, which is not among the RayJobs run")
    repo = Path(__file__).resolve().parents[3]
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    s3 = None
    ray = LocalRay(work, num_cpus=args.num_cpus, cwd=repo)
    try:
        if args.embedded_s3:
            s3 = _embedded_s3(secrets, work, repo, tiny_base=args.tiny_base, induction_steps=args.induction_steps)
        if args.address:
            ray.env = dict(os.environ)  # the running cluster's RAY_AUTH_* come from the caller's environment
            ray.dashboard_port = int(args.address.rstrip("/").rsplit(":", 1)[1])
        else:
            ray.start()
        for job in jobs:
            name = job["metadata"]["name"]
            outcome = local.run_rayjob(job, objs, ray, root=work / "mounts", repo=repo, secrets=secrets,
                                       extra_args=extra.get(name), timeout=args.timeout or None, stream=True)
            if not outcome.ok:
                print(f"sqltune: RayJob {name} ended {outcome.status}", file=sys.stderr)
                return 1
        for svc in services:
            local.run_rayservice(svc, objs, ray, work=work, repo=repo, secrets=secrets)
    finally:
        if not args.keep_running:
            if not args.address:
                ray.stop()
            if s3 is not None:
                s3.stop()
    return 0


def secrets_token() -> str:
    return secrets.token_hex(16)


def _embedded_s3(secrets: dict[str, dict[str, str]], work: Path, repo: Path, *, tiny_base: bool,
                 induction_steps: int | None = None):
    """Start the embedded S3 (bucket sqltune), put its settings in Secret sqltune-s3, publish the tiny base."""
    s3 = EmbeddedS3().start()
    s3.create_bucket("sqltune")
    secrets.setdefault(b.S3_SECRET, {}).update(s3.env())
    if b.API_SECRET_KEY not in secrets.get(b.API_SECRET, {}):
        secrets.setdefault(b.API_SECRET, {})[b.API_SECRET_KEY] = secrets_token()
        print(f"[stand-in] Secret {b.API_SECRET}: token {secrets[b.API_SECRET][b.API_SECRET_KEY]}", file=sys.stderr)
    if tiny_base:
        os.environ.update(s3.env())
        for folder in ("dataset", "tiny-base"):
            shutil.rmtree(work / folder, ignore_errors=True)
        build_embedded(work / "dataset", seed=0)
        steps = [f"induction_steps={induction_steps}"] if induction_steps is not None else []
        cfg = load_config(TinyModelConfig, repo / "jobs/configs/tiny-base.yaml", steps)
        build_tiny_model(work / "tiny-base", cfg, cache_dir=repo / ".cache" / "tiny-models")
        publish(work / "dataset", "s3://sqltune/datasets/embedded", kind="dataset", overwrite=True)
        publish(work / "tiny-base", "s3://sqltune/models/tiny-base", kind="base", overwrite=True)
    return s3
