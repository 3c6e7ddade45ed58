"""The Ray executor on a real multi-node Ray cluster on this machine (a head without CPUs and
worker nodes of one CPU each): the same jobs as the local executor, byte-identical outputs,
jobs on more than one node, Ray's retries after a killed worker or a removed node, and a
job's own error raised as locally. Skipped without the `ray` extra."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="the ray extra is not installed "
                                        "(pip install 'ckpt-tools[ray]')")
from ray.cluster_utils import Cluster  # noqa: E402

from ckpt_tools.commands.convert import quantize, upcast  # noqa: E402
from ckpt_tools.errors import VerificationError  # noqa: E402
from ckpt_tools.execution.fault_injection import KILL_ONCE_VAR, STALL_ONCE_VAR  # noqa: E402
from ckpt_tools.commands.reshard import (REPORT_FILE, from_deepseek_mp, report_file,  # noqa: E402
                                         to_deepseek_mp)
from ckpt_tools.io.safetensors_io import read_header  # noqa: E402
from ckpt_tools.commands.tiny import make_tiny  # noqa: E402
from ckpt_tools.commands.validate import validate  # noqa: E402

pytestmark = pytest.mark.slow
STORE = 100 << 20  # object store per node: jobs return small results only


def files_of(path: Path) -> dict[str, bytes]:
    """Every output file's bytes; the reshard report (beside the output) without the paths
    it names (and the job id, which fingerprints the source files by path and mtime)."""
    out = {p.name: p.read_bytes() for p in sorted(path.iterdir())
           if p.is_file() and not p.name.startswith(".")}
    if report_file(path).is_file():
        report = json.loads(report_file(path).read_text())
        assert report.pop("destination") == str(path.resolve())
        report.pop("source")
        report.pop("job_id", None)  # V4's model-parallel runs have none
        out[REPORT_FILE] = report
    return out


@pytest.fixture(scope="module")
def cluster():
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "object_store_memory": STORE})
    for rank in range(2):  # each node serves one rank of --model-parallel 2
        c.add_node(num_cpus=1, object_store_memory=STORE, resources={f"rank{rank}": 1})
    c.wait_for_nodes()
    yield c
    ray.shutdown()
    c.shutdown()


@pytest.fixture
def connect(cluster):
    """connect(**env): this process joins the cluster; its tasks' workers get `env`."""

    def join(**env: str) -> None:
        ray.shutdown()
        ray.init(address=cluster.address, log_to_driver=False,
                 runtime_env={"env_vars": env} if env else None)

    yield join
    ray.shutdown()


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("ray-src")
    make_tiny(root / "fp8", "v3", fp8=True, shards=4, seed=3)
    # tiny FP8 widths are not multiples of 128 x N, so the mp split runs on BF16
    make_tiny(root / "bf16", "v3", shards=4, seed=4)
    return root


def test_same_bytes_as_local_on_more_than_one_node(sources, tmp_path, connect):
    connect()
    local = upcast(sources / "fp8", tmp_path / "up-local", workers=1)
    remote = upcast(sources / "fp8", tmp_path / "up-ray", executor="ray")
    assert files_of(tmp_path / "up-ray") == files_of(tmp_path / "up-local")
    assert sum(n.jobs for n in remote.nodes) == len(remote.files)
    assert sum(n.bytes for n in remote.nodes) == sum(n.bytes for n in local.nodes)

    to_deepseek_mp(sources / "bf16", tmp_path / "mp-local", 2, workers=1)
    mp = to_deepseek_mp(sources / "bf16", tmp_path / "mp-ray", 2, executor="ray")
    assert files_of(tmp_path / "mp-ray") == files_of(tmp_path / "mp-local")
    from_deepseek_mp(tmp_path / "mp-local", tmp_path / "hf-local", max_shard_size=200_000,
                     workers=1)
    back = from_deepseek_mp(tmp_path / "mp-ray", tmp_path / "hf-ray", max_shard_size=200_000,
                            executor="ray")
    assert files_of(tmp_path / "hf-ray") == files_of(tmp_path / "hf-local")
    assert len(back.files) > 2

    # a NaN for --deep to find; the manifest written by Ray's hashing jobs
    bad = tmp_path / "bad"
    shutil.copytree(sources / "fp8", bad)
    shard = sorted(bad.glob("model-*.safetensors"))[1]
    h = read_header(shard)
    name, entry = next((n, e) for n, e in h.entries.items() if e.dtype == "BF16")
    with open(shard, "r+b") as fh:
        fh.seek(h.data_offset + entry.start)
        fh.write(b"\xc0\x7f")  # a BF16 NaN
    want = validate(bad, deep=True, workers=1)
    got = validate(bad, deep=True, executor="ray")
    assert [f.message for f in got.findings] == [f.message for f in want.findings]
    assert any(f.code == "nan-values" and f.tensor == name for f in got.findings)
    good = tmp_path / "up-ray"
    validate(good, write_manifest=tmp_path / "local.json", workers=1)
    checked = validate(good, write_manifest=tmp_path / "ray.json", executor="ray")
    assert (tmp_path / "ray.json").read_bytes() == (tmp_path / "local.json").read_bytes()
    assert validate(good, checksums=tmp_path / "ray.json", executor="ray").ok
    assert sum(n.jobs for n in checked.nodes) == len(list(good.iterdir()))
    # where Ray puts a run of a few tiny jobs depends on timing (a node whose worker is
    # free takes the next job; a loaded machine starts the other's late): judged over
    # all the runs, which must have used more than one node
    ran_on = {n.node for r in (remote, mp, back, got, checked) for n in r.nodes}
    assert len(ran_on) >= 2 and ran_on <= {n["NodeID"] for n in ray.nodes()}


def test_each_rank_runs_on_the_node_holding_its_resource(sources, tmp_path, cluster, connect):
    to_deepseek_mp(sources / "bf16", tmp_path / "local", 2, workers=1)
    connect()
    report = to_deepseek_mp(sources / "bf16", tmp_path / "ray", 2, executor="ray",
                            rank_resource="rank")
    assert files_of(tmp_path / "ray") == files_of(tmp_path / "local")
    holder = {n["NodeID"]: k for n in ray.nodes() if n["Alive"]
              for k in n["Resources"] if k.startswith("rank")}
    placed = {f: holder[n.node] for n in report.nodes for f in n.files}
    assert placed == {"model0-mp2.safetensors": "rank0", "model1-mp2.safetensors": "rank1"}


def test_killed_worker_is_retried_to_the_same_bytes(sources, tmp_path, connect):
    upcast(sources / "fp8", tmp_path / "local", workers=1)
    marker = tmp_path / "killed"
    connect(**{KILL_ONCE_VAR: str(marker)})
    upcast(sources / "fp8", tmp_path / "ray", executor="ray")
    assert marker.is_file()  # a worker did die mid-job
    assert files_of(tmp_path / "ray") == files_of(tmp_path / "local")

    to_deepseek_mp(sources / "bf16", tmp_path / "mp-local", 2, workers=1)
    marker = tmp_path / "killed-mp"
    connect(**{KILL_ONCE_VAR: str(marker)})
    to_deepseek_mp(sources / "bf16", tmp_path / "mp-ray", 2, executor="ray")
    assert marker.is_file()
    assert files_of(tmp_path / "mp-ray") == files_of(tmp_path / "mp-local")


def test_a_job_error_fails_the_run_as_locally(sources, tmp_path, connect, run_cli):
    mp = tmp_path / "mp"
    to_deepseek_mp(sources / "bf16", mp, 2, workers=1)
    rank1 = mp / "model1-mp2.safetensors"  # corrupt a replicated tensor on rank 1
    h = read_header(rank1)
    entry = h.entries["norm.weight"]
    with open(rank1, "r+b") as fh:
        fh.seek(h.data_offset + entry.start)
        fh.write(b"\x00\x00")
    with pytest.raises(VerificationError) as local:
        from_deepseek_mp(mp, tmp_path / "local", workers=1)
    connect()
    with pytest.raises(VerificationError) as remote:
        from_deepseek_mp(mp, tmp_path / "ray", executor="ray")
    assert str(remote.value) == str(local.value)
    cli = run_cli("reshard", mp, tmp_path / "cli", "--to", "hf", "--executor", "ray")
    assert cli.exit_code == 1
    assert cli.stderr.strip() == f"Error: {local.value}"


def test_removed_node_is_retried_to_the_same_bytes(sources, tmp_path, cluster, connect):
    """Last in this module: it takes a node away (a fresh one joins first)."""
    upcast(sources / "fp8", tmp_path / "local", workers=1)
    cluster.add_node(num_cpus=1, object_store_memory=STORE)
    cluster.wait_for_nodes()
    marker = tmp_path / "stalled"
    connect(**{STALL_ONCE_VAR: str(marker)})
    outcome: dict = {}
    run = threading.Thread(target=lambda: outcome.update(
        report=upcast(sources / "fp8", tmp_path / "ray", executor="ray")))
    run.start()
    deadline = time.monotonic() + 120
    while not (marker.is_file() and marker.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    worker_pid = int(marker.read_text())
    parent = int(Path(f"/proc/{worker_pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    node = next(n for n in cluster.worker_nodes
                if n.all_processes["raylet"][0].process.pid == parent)
    cluster.remove_node(node)
    run.join(timeout=180)
    assert not run.is_alive() and "report" in outcome
    assert files_of(tmp_path / "ray") == files_of(tmp_path / "local")
    assert node.node_id not in {n.node for n in outcome["report"].nodes}


def test_v4_jobs_on_ray_give_the_local_bytes(tmp_path, connect):
    """DeepSeek-V4 upcast (both layouts), quantize and reshard --to deepseek-mp run their
    per-file jobs on the Ray executor with the local executor's bytes."""
    connect()
    src = make_tiny(tmp_path / "v4", "v4-flash", fp8=True, shards=3, seed=2).path
    for layout in ("deepseek", "hf"):
        upcast(src, tmp_path / f"up-local-{layout}", workers=1, layout=layout)
        remote = upcast(src, tmp_path / f"up-ray-{layout}", executor="ray", layout=layout)
        assert files_of(tmp_path / f"up-ray-{layout}") == files_of(tmp_path / f"up-local-{layout}")
        assert sum(n.jobs for n in remote.nodes) == len(remote.files)
    quantize(tmp_path / "up-local-deepseek", tmp_path / "q-local", workers=1)
    q = quantize(tmp_path / "up-local-deepseek", tmp_path / "q-ray", executor="ray")
    assert files_of(tmp_path / "q-ray") == files_of(tmp_path / "q-local")
    assert sum(n.jobs for n in q.nodes) == len(q.files)
    to_deepseek_mp(src, tmp_path / "mp-local", 2, workers=1)
    mp = to_deepseek_mp(src, tmp_path / "mp-ray", 2, executor="ray")
    assert files_of(tmp_path / "mp-ray") == files_of(tmp_path / "mp-local")
    assert sum(n.jobs for n in mp.nodes) == 2

