"""`ckpt download`: plan the download, fetch only what is needed, verify every byte.

Plan first, from the repo's file list at one commit: a full download, `config_only`
(config, index, tokenizer and code files) or `layers=(A, B)`, which reads config.json and
model.safetensors.index.json and fetches only the shards holding the tensors the tensor
plan puts in layers A..B (weights and their scales, wherever the index puts them). The plan
names every file and byte and checks free disk space before anything large is fetched.

Then fetch at the resolved commit (so a branch moving mid-download cannot mix revisions)
and verify: each file's size, LFS files against the Hub's SHA-256 and git-stored files
against their git blob id; a file that fails is moved aside (`.NAME.corrupt`, or dropped
from the shared cache) so it never looks complete, and the run fails naming it. The
safetensors headers of the fetched shards are checked against the tensor plan (names,
dtypes, shapes, index placement, coverage), and a manifest (path, size, SHA-256, commit) is
written for offline re-checks with `ckpt validate --checksums`.

The steps live in their own modules: `download_plan` (what to fetch), `download_fetch`
(fetching and verifying bytes); this one checks the result against the tensor plan,
writes the manifest, and runs the three.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import partial
from pathlib import Path
from typing import Literal

from pydantic import Field, computed_field

from ..io import hub
from .download_fetch import FileResult, fetch_all, verified_fetch, where_moved
from .download_plan import (  # noqa: F401  (plan_download, require_fit: this module's API)
    DEFAULT_WORKERS,
    DownloadPlan,
    check_layers,
    destination_dir,
    layer_specs,
    plan_files,
    plan_download,
    require_fit,
)
from ..errors import ConfigError, FormatError, VerificationError
from ..io.index import INDEX_FILE, read_index
from ..inventory.inspect import inspect
from ..io.manifest import MANIFEST_FILE, Manifest, ManifestEntry, read_manifest, write_manifest
from ..inventory.policy import refuses
from ..execution.progress import Progress
from ..results import Result
from ..configs.sources import CONFIG_FILE
from .validate import validate


class TensorCheck(Result):
    method: Literal["header", "validate"]
    shards: int
    tensors: int = Field(description="Tensors in the fetched shards, each checked against the plan")
    expected: int = Field(description="Plan tensors the selection must cover (the layers, or all "
                                      "when every shard was fetched; 0: per-shard checks only)")
    complete: bool = Field(description="Every expected tensor was found")
    problems: list[str]


class DownloadReport(Result):
    plan: DownloadPlan
    local_dir: str
    files: list[FileResult]
    transferred_bytes: int
    verified: bool = Field(description="Every file's bytes were hashed and matched the Hub")
    tensor_check: TensorCheck | None
    manifest: str | None
    notes: list[str] = []

    @computed_field(description="Every file verified and every fetched shard matches the "
                                "tensor plan")
    @property
    def ok(self) -> bool:
        tensors_ok = self.tensor_check is None or not self.tensor_check.problems
        return tensors_ok and all(f.status == "verified" for f in self.files)



# -- the tensor plan ------------------------------------------------------------------------
def check_tensors(root: str | Path, shards: Iterable[str], *,
                  layers: tuple[int, int] | None = None) -> TensorCheck:
    """Header-level check of fetched shards against the tensor plan of `root`'s config.

    The inventory judges the fetched shards on their own entries (each in the plan with its
    dtype and shape, indexed in that shard, every indexed tensor of a fetched shard in it;
    the whole checkpoint when every indexed shard was fetched). Coverage: the plan's
    tensors of `layers` (or all of them, when every indexed shard was fetched) must be
    present. Problems carry the finding code `ckpt validate` gives.
    """
    root = Path(root)
    fetched = list(shards)
    listed = read_index(root / INDEX_FILE).shards if (root / INDEX_FILE).is_file() else fetched
    whole = set(listed) <= set(fetched)
    found = inspect(root) if whole else inspect(root, shards=fetched)
    if found.config is None:
        raise ConfigError(next(f.message for f in found.findings if f.code.startswith("config")))
    problems = [f"{f.message} [{f.code}]" for f in found.findings if refuses("download", f)]
    seen = found.inventory.entries
    if layers is not None:
        expected = [s.name for s in layer_specs(found.plan, layers)]
        missing = [n for n in expected if n not in seen]
        problems += [f"tensor '{n}' of the tensor plan is in no fetched shard [tensor-missing]"
                     for n in missing]
    else:
        expected = list(found.plan.by_name) if whole else []
        missing = [n for n in expected if n not in seen]
    return TensorCheck(method="header", shards=len(fetched), tensors=len(seen),
                       expected=len(expected), complete=bool(expected) and not missing,
                       problems=problems)


def _check_result(dest: Path, plan: DownloadPlan, results: list[FileResult],
                  notes: list[str]) -> TensorCheck | None:
    """`ckpt validate` (headers, FP8 pairing, the plan) when the whole checkpoint was
    fetched; the header-level `check_tensors` of the fetched shards otherwise."""
    shards = [r.path for r in results if r.path.endswith(".safetensors") and "/" not in r.path]
    if not shards:
        return None
    fetched = {r.path for r in results}
    try:
        if plan.mode == "full" and {CONFIG_FILE, INDEX_FILE} <= fetched and set(
                read_index(dest / INDEX_FILE).shards) <= fetched:
            return _validate_all(dest, notes)
        return check_tensors(dest, shards, layers=plan.layers)
    except ConfigError as e:  # not a DeepSeek V2/V3 config: bytes verified, tensors not
        notes.append(f"tensor check skipped: {e}")
        return None


def _validate_all(dest: Path, notes: list[str]) -> TensorCheck:
    report = validate(dest)
    if "plan" not in report.checks:
        raise ConfigError(next((f.message for f in report.findings if f.code.startswith("config")),
                               "no usable config.json"))
    notes += [f"validate: {f.message}" for f in report.findings if f.severity == "warning"]
    problems = [f"{f.message} [{f.code}]" for f in report.findings if refuses("download", f)]
    return TensorCheck(method="validate", shards=report.files, tensors=report.tensors,
                       expected=report.tensors, complete=not problems, problems=problems)


def _summary(problems: list[str]) -> str:
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return problems[0] + more


def _write_manifest(dest: Path, plan: DownloadPlan, results: list[FileResult]) -> Path:
    """Record what was verified; entries of earlier runs at the same commit are kept while
    their files are still there with the same size."""
    path = dest / MANIFEST_FILE
    entries = {r.path: ManifestEntry(path=r.path, size=r.size, sha256=r.sha256)
               for r in results if r.sha256}
    if path.is_file():
        try:
            old = read_manifest(path)
        except FormatError:
            old = None
        if old is not None and (old.repo_id, old.revision) == (plan.repo_id, plan.commit):
            for e in old.files:
                local = dest / e.path
                if e.path not in entries and local.is_file() and local.stat().st_size == e.size:
                    entries[e.path] = e
    write_manifest(path, Manifest(repo_id=plan.repo_id, revision=plan.commit,
                                  files=sorted(entries.values(), key=lambda e: e.path)))
    return path


def download(repo_id: str, *, revision: str = hub.DEFAULT_REVISION,
             local_dir: str | Path | None = None, include: Sequence[str] = (),
             exclude: Sequence[str] = (), layers: tuple[int, int] | None = None,
             config_only: bool = False, verify: bool = True, workers: int = DEFAULT_WORKERS,
             token: str | bool | None = None, cache_dir: str | Path | None = None,
             progress: Progress | None = None) -> DownloadReport:
    """Plan, fetch and verify a checkpoint (or the part of it `layers` / `config_only` pick).

    Args:
        repo_id: "org/name" on the Hub (HF_ENDPOINT, HF_TOKEN and HF_HOME are honoured).
        revision: branch, tag or commit; it is resolved once and every file comes from it.
        local_dir: destination; None uses the shared Hugging Face cache (its snapshot
            directory is the result).
        include, exclude: glob patterns on repository paths. A full download keeps the
            files matching `include` (all if empty) minus `exclude`; with `layers` or
            `config_only` they add files to / remove files from that selection.
        layers: inclusive (first, last) layer numbers; MTP layers follow the decoder layers.
        config_only: config, index, tokenizer and code files only.
        verify: hash every file against the Hub and write the manifest; when False only
            sizes and safetensors headers are checked.
        workers: files downloaded at once.
        token: Hub token (default: HF_TOKEN, then the saved login); False sends none.
        cache_dir: the Hugging Face cache to use instead of HF_HUB_CACHE / HF_HOME/hub.
        progress: receives bytes downloaded and hashed.

    Raises:
        ArgumentError: `repo_id` is not a repository id, or `layers` is not A <= B.
        HubError: not found, unauthorised, unreachable, disk full, or the plan does not fit
            (OfflineError when HF_HUB_OFFLINE is set: a download must ask the Hub).
        VerificationError: a file's bytes differ from the Hub (it is moved aside) or the
            shards do not match the tensor plan.
    """
    check_layers(layers)
    settings = hub.hub_settings(token=token, cache_dir=cache_dir)
    repo = hub.repo_files(repo_id, revision, settings=settings)
    target = Path(local_dir) if local_dir is not None else None
    dest = destination_dir(repo, target, settings)
    fetch = partial(hub.fetch_file, repo_id, commit=repo.commit, local_dir=target,
                    settings=settings)
    plan = plan_files(repo, dest, verified_fetch(repo, fetch), include=include, exclude=exclude,
                 layers=layers, config_only=config_only)
    require_fit(plan)
    results = fetch_all(plan, repo, fetch, verify=verify, workers=workers, progress=progress)
    bad = [r for r in results if r.status == "corrupt"]
    if bad:
        problems = [f"{dest / r.path}: {r.detail}; {where_moved(r.moved_to)}" for r in bad]
        raise VerificationError(f"{repo_id}@{repo.commit[:12]}: {len(bad)} file(s) differ from "
                                f"the Hub: {_summary(problems)}; rerun to fetch them again")
    manifest = _write_manifest(dest, plan, results) if verify else None
    notes: list[str] = []
    tensor_check = _check_result(dest, plan, results, notes)
    if tensor_check is not None and tensor_check.problems:
        raise VerificationError(f"{dest}: the files match the Hub but not the tensor plan of "
                                f"{CONFIG_FILE}: {_summary(tensor_check.problems)}")
    return DownloadReport(plan=plan, local_dir=str(dest), files=results,
                          transferred_bytes=sum(r.transferred for r in results), verified=verify,
                          tensor_check=tensor_check, manifest=str(manifest) if manifest else None,
                          notes=notes)

