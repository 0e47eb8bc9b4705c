"""deploy/: every manifest and configuration checked with its tool's own loader
or schema where one is available offline, and the scripts run where they can.

- SLURM: dask-jobqueue loads deploy/slurm/jobqueue.yaml and renders the worker
  job script; the wrapper starts a real (job-less) SLURMCluster and runs a
  command against it.
- Kubernetes: the DaskCluster and DaskJob manifests are validated against the
  CRD schemas shipped in the dask-kubernetes package (plus a check for field
  names the schema does not know, which Kubernetes would silently drop).
- Helm values and compose.yaml are parsed and checked for what the services
  need (no schema for them is available offline; ``docker compose config`` runs
  when Docker Compose is installed).
- deploy/resumable-scan.sh runs real scans: a fresh one, a rerun, a resume.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from dlmm.simulate import simulate_families

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
PY = sys.executable


def _load(path):
    with open(path) as fh:
        return yaml.safe_load(fh)


# --------------------------------------------------------------------------
# SLURM
# --------------------------------------------------------------------------
@pytest.fixture
def slurm_cluster(monkeypatch, tmp_path):
    pytest.importorskip("dask_jobqueue", reason="pip install dask-jobqueue (the test extra)")
    monkeypatch.chdir(tmp_path)  # dask-jobqueue creates the log directory
    monkeypatch.syspath_prepend(str(DEPLOY / "slurm"))
    import slurm_cluster

    return slurm_cluster


def test_jobqueue_config_has_only_known_keys():
    """A misspelt key would be ignored silently: all must be dask-jobqueue's."""
    pytest.importorskip("dask_jobqueue", reason="pip install dask-jobqueue (the test extra)")
    spec = importlib.util.find_spec("dask_jobqueue")
    defaults = _load(Path(spec.origin).parent / "jobqueue.yaml")["jobqueue"]["slurm"]
    ours = _load(DEPLOY / "slurm" / "jobqueue.yaml")["jobqueue"]["slurm"]
    assert set(ours) <= set(defaults), set(ours) - set(defaults)
    assert ours["cores"] and ours["memory"] and ours["walltime"]


def test_slurm_job_script_renders(slurm_cluster):
    with slurm_cluster.make_cluster(scheduler_options={"dashboard_address": ":0"}) as cluster:
        script = cluster.job_script()
        address = cluster.scheduler_address
    lines = script.splitlines()
    assert lines[0] == "#!/usr/bin/env bash"
    directives = [ln for ln in lines if ln.startswith("#SBATCH")]
    for want in ("#SBATCH -J dlmm-worker", "#SBATCH --cpus-per-task=8", "#SBATCH --mem=32G",
                 "#SBATCH -t 04:00:00", "#SBATCH -n 1"):
        assert want in directives, (want, directives)
    worker = next(ln for ln in lines if "distributed.cli.dask_worker" in ln)
    assert address in worker
    for want in ("--nthreads 8", "--memory-limit 32.00GiB", "--lifetime 230m",
                 "--lifetime-stagger 5m", "--local-directory $TMPDIR"):
        assert want in worker, (want, worker)
    assert "export OMP_NUM_THREADS=1" in script
    # the script is valid bash
    r = subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True)
    assert r.returncode == 0, r.stderr


def test_slurm_wrapper_runs_the_command_against_its_scheduler(slurm_cluster, tmp_path):
    """--jobs 0: a real SLURMCluster (scheduler in-process), no job submitted."""
    probe = ("import os, sys\nfrom distributed import Client\n"
             "with Client(os.environ['DASK_SCHEDULER_ADDRESS'], timeout=30) as c:\n"
             "    print('connected', c.scheduler_info()['address'])\nsys.exit(3)\n")
    r = subprocess.run([PY, str(DEPLOY / "slurm" / "slurm_cluster.py"), "--jobs", "0", "--",
                        PY, "-c", probe], capture_output=True, text=True, cwd=tmp_path,
                       timeout=120)
    assert r.returncode == 3, r.stderr  # the command's own exit status
    assert re.search(r"^connected tcp://", r.stdout, re.M), r.stdout
    assert "#SBATCH --cpus-per-task=8" in r.stderr  # the job script is logged


def test_sbatch_script():
    path = DEPLOY / "slurm" / "scan.sbatch"
    r = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    text = path.read_text()
    directives = re.findall(r"^#SBATCH (\S+)", text, re.M)
    assert "--requeue" in directives and any(d.startswith("--time=") for d in directives)
    # sbatch reads #SBATCH lines only before the first command
    first_cmd = next(i for i, ln in enumerate(text.splitlines())
                     if ln and not ln.startswith("#"))
    assert all(i < first_cmd for i, ln in enumerate(text.splitlines())
               if ln.startswith("#SBATCH"))
    for rel in ("slurm/slurm_cluster.py", "slurm/jobqueue.yaml", "resumable-scan.sh"):
        assert f'"$deploy/{rel}"' in text and (DEPLOY / rel).exists(), rel


# --------------------------------------------------------------------------
# Kubernetes
# --------------------------------------------------------------------------
def _crd_schema(kind: str) -> dict:
    spec = importlib.util.find_spec("dask_kubernetes")
    if spec is None:
        pytest.skip("pip install dask-kubernetes (the test extra) for the operator's CRDs")
    path = (Path(spec.submodule_search_locations[0]) / "operator" / "deployment" / "helm" /
            "dask-kubernetes-operator" / "crds" / f"{kind.lower()}.yaml")
    crd = _load(path)
    assert crd["spec"]["names"]["kind"] == kind
    (version,) = [v for v in crd["spec"]["versions"] if v["served"]]
    return crd["spec"]["group"], version["name"], version["schema"]["openAPIV3Schema"]


def _unknown_fields(obj, schema, path="") -> list[str]:
    """Field names not in the schema (the API server would prune them)."""
    out = []
    if schema.get("x-kubernetes-preserve-unknown-fields") or "properties" not in schema:
        if isinstance(obj, list) and "items" in schema:
            for i, item in enumerate(obj):
                out += _unknown_fields(item, schema["items"], f"{path}[{i}]")
        return out
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k not in schema["properties"]:
                out.append(f"{path}.{k}")
            else:
                out += _unknown_fields(v, schema["properties"][k], f"{path}.{k}")
    return out


def _volume_mounts_match(pod_spec):
    volumes = {v["name"] for v in pod_spec.get("volumes", [])}
    for c in pod_spec["containers"]:
        for m in c.get("volumeMounts", []):
            assert m["name"] in volumes, (m, volumes)


@pytest.mark.parametrize("name,kind", [("daskcluster.yaml", "DaskCluster"),
                                       ("daskjob-scan.yaml", "DaskJob")])
def test_kubernetes_manifests_validate_against_the_operator_crds(name, kind):
    jsonschema = pytest.importorskip("jsonschema")
    group, version, schema = _crd_schema(kind)
    doc = _load(DEPLOY / "kubernetes" / name)
    assert doc["apiVersion"] == f"{group}/{version}" and doc["kind"] == kind
    jsonschema.validate(doc, schema)
    # apiVersion, kind and metadata are the API server's; spec is the CRD's
    assert _unknown_fields(doc["spec"], schema["properties"]["spec"], ".spec") == []
    cluster = doc["spec"] if kind == "DaskCluster" else doc["spec"]["cluster"]["spec"]
    # the scheduler service selects the operator's scheduler pod of this cluster
    sel = cluster["scheduler"]["service"]["selector"]
    assert sel == {"dask.org/cluster-name": doc["metadata"]["name"],
                   "dask.org/component": "scheduler"}
    pods = [cluster["worker"]["spec"], cluster["scheduler"]["spec"]]
    if kind == "DaskJob":
        job = doc["spec"]["job"]["spec"]
        pods.append(job)
        (c,) = job["containers"]
        assert c["args"][0] == "dlmm-resumable-scan" and c["args"][1].startswith("/data/")
        assert job["restartPolicy"] == "OnFailure"
    claim = _load(DEPLOY / "kubernetes" / "data-pvc.yaml")
    assert claim["kind"] == "PersistentVolumeClaim"
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    for pod in pods:
        _volume_mounts_match(pod)
        for v in pod.get("volumes", []):
            assert v["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    images = {c["image"] for pod in pods for c in pod["containers"]}
    assert len(images) == 1, images  # client, scheduler and workers: one Dask version
    worker = cluster["worker"]["spec"]["containers"][0]
    assert worker["args"][:2] == ["dask", "worker"] and "/data" in str(worker["volumeMounts"])


def test_helm_values():
    """Checked against the keys of the dask/dask chart's values.yaml (no schema offline)."""
    v = _load(DEPLOY / "kubernetes" / "helm-values.yaml")
    assert set(v) <= {"scheduler", "webUI", "worker", "jupyter", "nameOverride",
                      "fullnameOverride"}
    claim = _load(DEPLOY / "kubernetes" / "data-pvc.yaml")["metadata"]["name"]
    for part in ("scheduler", "worker", "jupyter"):
        assert set(v[part]["image"]) <= {"repository", "tag", "pullPolicy", "pullSecrets",
                                         "dask_worker"}
    assert v["scheduler"]["image"]["repository"] == v["worker"]["image"]["repository"]
    tags = {v[p]["image"]["tag"] for p in ("scheduler", "worker", "jupyter")}
    assert len(tags) == 1, tags
    assert v["worker"]["replicas"] >= 1 and v["jupyter"]["enabled"] is True
    for part in ("worker", "jupyter"):
        mounts = v[part]["mounts"]
        assert {m["mountPath"] for m in mounts["volumeMounts"]} == {"/data"}
        _volume_mounts_match({"volumes": mounts["volumes"],
                              "containers": [{"volumeMounts": mounts["volumeMounts"]}]})
        assert mounts["volumes"][0]["persistentVolumeClaim"]["claimName"] == claim


# --------------------------------------------------------------------------
# Docker
# --------------------------------------------------------------------------
def test_compose_file():
    path = DEPLOY / "docker" / "compose.yaml"
    c = _load(path)
    s = c["services"]
    assert {"scheduler", "worker", "notebook", "scan"} <= set(s)
    for name in ("scheduler", "worker", "notebook", "scan"):
        build = s[name]["build"]
        context = (path.parent / build["context"]).resolve()
        assert context == ROOT and (context / build["dockerfile"]).is_file()
        assert "data:/data" in s[name]["volumes"], name
    assert "data" in c["volumes"]
    sched_cmd = s["scheduler"]["command"]
    port = sched_cmd[sched_cmd.index("--port") + 1]
    assert s["worker"]["command"][:3] == ["dask", "worker", f"tcp://scheduler:{port}"]
    for name in ("notebook", "scan"):
        assert s[name]["environment"]["DASK_SCHEDULER_ADDRESS"] == f"tcp://scheduler:{port}"
    assert s["scan"]["entrypoint"] == ["dlmm-resumable-scan"]
    nb = [m for m in s["notebook"]["volumes"] if m.startswith("../../notebooks:")]
    assert nb, s["notebook"]["volumes"]
    assert s["notebook"]["build"]["args"]["BASE"] == "ghcr.io/dask/dask-notebook"
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"],
                                                 capture_output=True).returncode == 0:
        r = subprocess.run(["docker", "compose", "-f", str(path), "config", "--quiet"],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr


def test_dockerfile():
    text = (DEPLOY / "docker" / "Dockerfile").read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)", text, re.M))
    assert args["BASE"] == "ghcr.io/dask/dask"  # the official Dask image
    assert re.search(r"^FROM \$\{BASE\}:\$\{DASK_TAG\}$", text, re.M)
    for src in re.findall(r"^COPY (?:--\S+ )*(.+) \S+$", text, re.M):
        for f in src.split():
            assert (ROOT / f).exists(), f  # relative to the build context: the repo root
    assert re.search(r"^RUN python -m pip install .*/opt/dlmm", text, re.M)
    assert "/usr/local/bin/dlmm-resumable-scan" in text


# --------------------------------------------------------------------------
# the resumable scan script
# --------------------------------------------------------------------------
def test_resumable_scan_script(tmp_path):
    sim = simulate_families(n_families=15, n_children=2, n_variants=40, seed=3)
    np.savetxt(tmp_path / "X.txt", (sim["dosage"] - 1).T, fmt="%d")
    np.savetxt(tmp_path / "Y.txt", sim["phenotype"])
    np.savetxt(tmp_path / "A.txt", sim["kinship"])
    env = {k: v for k, v in os.environ.items() if k != "DASK_SCHEDULER_ADDRESS"}
    env["DLMM"] = f"{PY} -m dlmm.cli"
    out = tmp_path / "res"

    def run():
        return subprocess.run(["sh", str(DEPLOY / "resumable-scan.sh"), str(out),
                               str(tmp_path / "X.txt"), "--pheno", str(tmp_path / "Y.txt"),
                               "--kinship", str(tmp_path / "A.txt"), "--chunk-size", "10"],
                              capture_output=True, text=True, env=env)

    r = run()
    assert r.returncode == 0, r.stderr
    first = Path(f"{out}.assoc.tsv").read_text()
    assert len(pd.read_csv(f"{out}.assoc.tsv", sep="\t")) == 40
    r = run()  # complete: nothing is done
    assert r.returncode == 0 and "the scan is complete" in r.stdout, r.stdout
    # as after a crash once every block was written but before the TSV
    Path(f"{out}.assoc.tsv").unlink()
    Path(f"{out}.log.txt").unlink()
    r = run()
    assert r.returncode == 0, r.stderr
    assert "writing any missing output" in r.stdout
    assert Path(f"{out}.assoc.tsv").read_text() == first
    import zarr

    assert (zarr.open_group(f"{out}.zarr", mode="r")["blocks/run"][:] == 0).all()
    # as after a crash mid-scan: the interrupted store is resumed
    os.replace(f"{out}.zarr", f"{out}.zarr.partial")
    Path(f"{out}.assoc.tsv").unlink()
    r = run()
    assert r.returncode == 0 and "resuming" in r.stdout, (r.stdout, r.stderr)
    assert Path(f"{out}.assoc.tsv").read_text() == first
    r = subprocess.run(["sh", str(DEPLOY / "resumable-scan.sh"), str(out)],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 2 and "usage:" in r.stderr
