"""The local executor: results in job order whatever order jobs run in, largest first,
per-node totals, a job's own error raised as is, an unknown executor refused, and the Ray
executor's missing-extra message."""

from __future__ import annotations

import builtins
import json
import os
import socket
import sys

import pytest

from ckpt_tools.errors import FormatError, MissingDependencyError
from ckpt_tools.execution.parallel import (PARALLEL_MIN_BYTES, Job, merge_nodes, start_order,
                                          prepare_workers, run_jobs)


def square(x: int) -> tuple[int, int]:
    return x * x, os.getpid()


def fail_on(x: int) -> int:
    if x == 3:
        raise FormatError(f"shard {x}: broken")
    return x


@pytest.mark.parametrize("workers", [1, 2])
def test_results_in_job_order_and_nodes_summed(workers):
    jobs = [Job(f"f{i}", nbytes, (i,)) for i, nbytes in enumerate([5, 50, 10, 40])]
    seen = []
    run = run_jobs(square, jobs, workers=workers, on_result=lambda i, r: seen.append(i))
    assert [r[0] for r in run.results] == [0, 1, 4, 9]
    assert sorted(seen) == [0, 1, 2, 3]
    if workers == 1:
        assert seen == [0, 1, 2, 3] and {r[1] for r in run.results} == {os.getpid()}
    else:
        assert os.getpid() not in {r[1] for r in run.results}
    (node,) = run.nodes
    assert node.node == socket.gethostname() and node.jobs == 4 and node.bytes == 105
    assert node.files == ["f0", "f1", "f2", "f3"] and node.seconds >= 0


def test_largest_job_starts_first():
    jobs = [Job("a", 1, ()), Job("b", 30, ()), Job("c", 20, ()), Job("d", 30, ())]
    assert start_order(jobs, 2) == [1, 3, 2, 0]


def test_parts_of_one_file_do_not_start_side_by_side():
    # two workers writing one file wait on its lock: a file's parts alternate with another's
    jobs = [Job("a", 10, (i,)) for i in range(3)] + [Job("b", 10, (i,)) for i in range(2)]
    jobs.append(Job("c", 3, ()))
    order = start_order(jobs, 2)
    labels = [jobs[i].label for i in order]
    assert labels == ["a", "b", "a", "b", "a", "c"] and sorted(order) == list(range(6))
    # three workers: no label twice among any three jobs started in a row while others remain
    assert [jobs[i].label for i in start_order(jobs, 3)] == ["a", "b", "c", "a", "b", "a"]
    # one worker: simply largest first, each file's parts in order
    assert start_order(jobs, 1) == [0, 1, 2, 3, 4, 5]
    # only one file left: its parts run side by side rather than leave a worker idle
    assert start_order([Job("a", 10, (i,)) for i in range(3)], 2) == [0, 1, 2]


@pytest.mark.parametrize("workers", [1, 2])
def test_a_jobs_error_is_raised_as_is(workers):
    with pytest.raises(FormatError, match="shard 3: broken"):
        run_jobs(fail_on, [Job(str(i), 1, (i,)) for i in range(5)], workers=workers)


def test_merge_nodes_adds_runs_and_lists_each_file_once():
    a = run_jobs(square, [Job("x", 2, (1,)), Job("y", 3, (2,))]).nodes
    b = run_jobs(square, [Job("y", 4, (2,))]).nodes
    (merged,) = merge_nodes(a, b)
    assert (merged.jobs, merged.bytes, merged.files) == (3, 9, ["x", "y"])


@pytest.fixture
def without_ray(monkeypatch):
    """`import ray` fails, as without the `ray` extra."""
    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)


def test_unknown_executor_and_missing_ray(without_ray):
    with pytest.raises(ValueError, match="executor"):
        run_jobs(square, [Job("x", 1, (1,))], executor="dask")
    with pytest.raises(MissingDependencyError, match=r"pip install 'ckpt-tools\[ray\]'"):
        run_jobs(square, [Job("x", 1, (1,))], executor="ray")


def test_missing_ray_through_the_cli_is_one_json_error_naming_the_option(
        make_ckpt, tmp_path, run_cli, without_ray):
    r = run_cli("upcast", make_ckpt("v3", fp8=True), tmp_path / "out", "--executor", "ray",
                "--json")
    assert r.exit_code == 1
    error = json.loads(r.stdout)["error"]
    assert error["code"] == "missing_dependency"
    assert error["message"].startswith("--executor ray needs Ray")
    with pytest.raises(MissingDependencyError, match=r"^executor='ray' needs Ray"):
        run_jobs(square, [Job("x", 1, (1,))], executor="ray")


def loaded_by(name: str) -> tuple[int | None, int]:
    """The pid that imported module `name` (None: not imported here), and this pid."""
    module = sys.modules.get(name)
    return (module.LOADED_BY if module else None), os.getpid()


def test_prepared_modules_are_imported_once_and_inherited_by_every_worker(tmp_path,
                                                                          monkeypatch):
    for name in ("prepared_here", "left_to_the_jobs"):
        (tmp_path / f"{name}.py").write_text("import os\nLOADED_BY = os.getpid()\n")
    (tmp_path / "broken_module.py").write_text("raise ImportError('broken')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert not prepare_workers(PARALLEL_MIN_BYTES - 1, 2, "local", ["prepared_here"])
    assert not prepare_workers(PARALLEL_MIN_BYTES, 1, "local", ["prepared_here"])
    assert not prepare_workers(PARALLEL_MIN_BYTES, 2, "ray", ["prepared_here"])
    assert prepare_workers(PARALLEL_MIN_BYTES, 2, "local", ["broken_module", "prepared_here"])
    try:
        jobs = [Job(str(i), 1, (name,)) for i in range(4) for name in ("prepared_here",
                                                                       "left_to_the_jobs")]
        run = run_jobs(loaded_by, jobs, workers=2)
        assert {pid for _, pid in run.results} - {os.getpid()}  # forked workers ran them
        assert {by for (by, _), job in zip(run.results, jobs)
                if job.args == ("prepared_here",)} == {os.getpid()}
        assert {by for (by, _), job in zip(run.results, jobs)
                if job.args == ("left_to_the_jobs",)} == {None}
    finally:
        for name in ("prepared_here", "left_to_the_jobs", "broken_module"):
            sys.modules.pop(name, None)
