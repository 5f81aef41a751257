#!/usr/bin/env python3
"""Validates deploy/k8s offline: every object against the Kubernetes API schemas
(kubernetes-validate, strict: unknown fields are errors), the GPU overlay merged onto its base
the way kustomize's strategic merge does it (containers and env by name), KEDA's ScaledObject
against the fields KEDA requires, and the wiring between the objects (scale target, consumer
group and topic, probe paths and ports, volumes, the relabel shard). Writes the pipeline files of
the ConfigMap to OUT so tests can run `prodcat check` on them.

    python3 scripts/validate-deploy.py [--k8s deploy/k8s] [--out DIR] [--kubernetes-version 1.31.0]
"""
import argparse
import copy
import pathlib
import sys
import tomllib

import kubernetes_validate
import yaml

problems = []


def problem(where, message):
    problems.append(f"{where}: {message}")


def load(path):
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def merge(base, patch):
    """Strategic merge as kustomize applies it to Deployments: maps merge, lists of named items
    (containers, env, volumes, volumeMounts by mountPath) merge by name, other lists replace."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            out[k] = merge(base[k], v) if k in base else copy.deepcopy(v)
        return out
    if isinstance(base, list) and isinstance(patch, list) and all(isinstance(x, dict) for x in base + patch):
        key = next((k for k in ("name", "mountPath") if all(k in x for x in base + patch)), None)
        if key:
            out = [copy.deepcopy(x) for x in base]
            for item in patch:
                match = next((i for i, x in enumerate(out) if x[key] == item[key]), None)
                if match is None:
                    out.append(copy.deepcopy(item))
                else:
                    out[match] = merge(out[match], item)
            return out
    return copy.deepcopy(patch)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--k8s", default="deploy/k8s", type=pathlib.Path)
    ap.add_argument("--out", type=pathlib.Path)
    ap.add_argument("--kubernetes-version", default="1.31.0")
    args = ap.parse_args()
    kustomization = yaml.safe_load((args.k8s / "kustomization.yaml").read_text())
    objects = []
    for name in kustomization["resources"]:
        for doc in load(args.k8s / name):
            objects.append((name, doc))
    by_kind = {}
    for name, doc in objects:
        by_kind.setdefault(doc["kind"], []).append(doc)

    # 1. Kubernetes API schemas (CRDs checked below).
    for name, doc in objects:
        if doc["apiVersion"].startswith("keda.sh/"):
            continue
        try:
            kubernetes_validate.validate(doc, args.kubernetes_version, strict=True)
        except kubernetes_validate.ValidationError as e:
            problem(f"{name} {doc['kind']}/{doc['metadata']['name']}", f"{e.message} at {'.'.join(map(str, e.path))}")

    deployments = {d["metadata"]["name"]: d for d in by_kind.get("Deployment", [])}
    # 2. The GPU overlay, merged and validated as a whole Deployment.
    gpu = yaml.safe_load((args.k8s / "gpu" / "kustomization.yaml").read_text())
    for p in gpu["patches"]:
        target = p["target"]["name"]
        patched = merge(deployments[target], yaml.safe_load((args.k8s / "gpu" / p["path"]).read_text()))
        try:
            kubernetes_validate.validate(patched, args.kubernetes_version, strict=True)
        except kubernetes_validate.ValidationError as e:
            problem(f"gpu/{p['path']}", f"merged Deployment invalid: {e.message} at {'.'.join(map(str, e.path))}")
        container = patched["spec"]["template"]["spec"]["containers"][0]
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        if env.get("PRODCAT__MODEL__DEVICE") != "cuda" or "nvidia.com/gpu" not in container["resources"].get("limits", {}):
            problem("gpu", "the GPU variant must set PRODCAT__MODEL__DEVICE=cuda and limit nvidia.com/gpu")
        if "PRODCAT__KAFKA__BROKERS" not in env:
            problem("gpu", "the patch's env replaced the base env without the brokers")

    # 3. Pipelines in the ConfigMap, written out for `prodcat check`.
    pipelines = {}
    for cm in by_kind.get("ConfigMap", []):
        for key, text in cm["data"].items():
            if key.endswith(".toml"):
                pipelines[key] = tomllib.loads(text)
                if args.out:
                    args.out.mkdir(parents=True, exist_ok=True)
                    (args.out / key).write_text(text)

    # 4. Wiring: workloads mount the ConfigMap, run a pipeline that exists, probe the port the
    # pipeline listens on; KEDA scales the serving Deployment on its group's lag.
    pvcs = {p["metadata"]["name"] for p in by_kind.get("PersistentVolumeClaim", [])}
    for dname, d in deployments.items():
        spec = d["spec"]["template"]["spec"]
        c = spec["containers"][0]
        run = [a for a in c["args"] if a.endswith(".toml")]
        if len(run) != 1 or pathlib.PurePath(run[0]).name not in pipelines:
            problem(dname, f"runs {run}, not a pipeline of the ConfigMap ({sorted(pipelines)})")
            continue
        pipeline = pipelines[pathlib.PurePath(run[0]).name]
        port = int(pipeline["http"]["listen"].rsplit(":", 1)[1])
        if pipeline["http"]["listen"].startswith("127."):
            problem(dname, "http.listen on loopback: probes and Prometheus cannot reach it")
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            got = c.get(probe, {}).get("httpGet", {})
            if got.get("path") != path or ports.get(got.get("port")) != port:
                problem(dname, f"{probe} must GET {path} on port {port}")
        claims = {v["persistentVolumeClaim"]["claimName"] for v in spec["volumes"] if "persistentVolumeClaim" in v}
        if not claims <= pvcs:
            problem(dname, f"claims {claims - pvcs} that no manifest creates")
        model = pipeline["model"]["path"]
        if not any(model.startswith(m["mountPath"]) for m in c["volumeMounts"]):
            problem(dname, f"model.path {model} is on no mounted volume")
        training = pipeline.get("training", {})
        if training.get("enabled"):
            if d["spec"]["replicas"] != 1 or d["spec"].get("strategy", {}).get("type") != "Recreate":
                problem(dname, "a learner must be one replica with the Recreate strategy (one label-store writer)")
            writable = [m for m in c["volumeMounts"] if not m.get("readOnly")]
            for key in ("state_dir",):
                if not any(training[key].startswith(m["mountPath"]) for m in writable):
                    problem(dname, f"training.{key} {training[key]} is on no writable volume")
            if not any(model.startswith(m["mountPath"]) for m in writable):
                problem(dname, "the learner publishes into model.path: its volume must be writable")
        if d["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", 30) * 1000 <= pipeline["kafka"].get("drain_timeout_ms", 30000):
            problem(dname, "terminationGracePeriodSeconds must exceed kafka.drain_timeout_ms (a drain is never cut short)")

    for so in by_kind.get("ScaledObject", []):
        name = f"ScaledObject/{so['metadata']['name']}"
        spec = so.get("spec", {})
        target = spec.get("scaleTargetRef", {}).get("name")
        if target not in deployments:
            problem(name, f"scaleTargetRef {target!r} is not a Deployment here")
            continue
        if not isinstance(spec.get("minReplicaCount"), int) or spec.get("maxReplicaCount", 0) < spec["minReplicaCount"]:
            problem(name, "minReplicaCount/maxReplicaCount must be integers, max >= min")
        run = [a for a in deployments[target]["spec"]["template"]["spec"]["containers"][0]["args"] if a.endswith(".toml")]
        kafka = pipelines[pathlib.PurePath(run[0]).name]["kafka"]
        for trigger in spec.get("triggers", []):
            meta = trigger.get("metadata", {})
            if trigger.get("type") != "kafka":
                problem(name, f"unexpected trigger {trigger.get('type')}")
                continue
            for key in ("bootstrapServers", "consumerGroup", "topic", "lagThreshold"):
                if not isinstance(meta.get(key), str) or not meta[key]:
                    problem(name, f"kafka trigger needs metadata.{key} (a string)")
            if meta.get("consumerGroup") != kafka["group_id"] or meta.get("topic") != kafka["input_topic"]:
                problem(name, "the trigger must watch the serving pipeline's consumer group and input topic")
        if "learner" in target:
            problem(name, "the learner must not be scaled")

    for cj in by_kind.get("CronJob", []):
        job = cj["spec"]["jobTemplate"]["spec"]
        args_ = job["template"]["spec"]["containers"][0]["args"]
        shard = args_[args_.index("--shard") + 1] if "--shard" in args_ else ""
        if job.get("completionMode") != "Indexed" or shard != f"$(JOB_COMPLETION_INDEX)/{job['completions']}":
            problem(cj["metadata"]["name"], "an Indexed Job whose pods pass --shard $(JOB_COMPLETION_INDEX)/<completions>")

    for p in problems:
        print(f"INVALID {p}", file=sys.stderr)
    print(f"{len(objects)} objects, GPU overlay, {len(pipelines)} pipelines: {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
