"""One inventory: a checkpoint is judged once, the same way by validate and every writer.

`inspect(path)` reads a source (an HF directory, its index, one .safetensors file, or
DeepSeek's model-parallel directory) into `Inventory`s (name, file, dtype, shape, offsets;
headers only) and compares them with the config's tensor plan, returning every finding
with its stable code (`findings.CODES`). `ckpt validate` reports them all; every writer
calls `require(path, command)`, which raises for the findings `policy.TOLERATED` does not
let that command through, with the same code in the message.

HF layout: structure (`shard_scan`), FP8 pairing and the plan in the layout found
(`plan_checks.majority`: FP8 when FP8 tensors outnumber the other matrices, so a
half-converted checkpoint is judged by its majority). One shard of a set (or the shards a
partial download fetched) is judged on its own entries: nothing is missing from a part.
Model-parallel layout (`model{i}-mp{N}.safetensors`, no index): every rank file against
its share of the plan from `mp_layout.MpLayout`; the MTP layer is expected only when
present (DeepSeek's convert.py drops it); FP8 scales are named `.scale` and are planned
tensors. Another layout plugs in the same way: build `Inventory`s from its headers and
call `check_plan` with name -> `Expect` maps.

A remote source (`hf://`, `s3://`) is inspected by the same code: its `RemotePath`
answers the directory questions from one listing and its headers are read by range
(`shard_scan.read_headers` fetches them at once). Every header is read through the
`source.Source` the run opened, which keeps it: the readers and jobs that follow reuse it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..configs.parse import Config
from ..errors import CkptError, FormatError
from ..families import family_of, family_of_tensors
from .findings import Check, Finding, Findings
from ..formats import FP8_BLOCK
from ..io.index import (
    INDEX_FILE,
    SHARD_NAME_RE,
    chosen_mp_set,
    is_model_parallel,
    mp_file_name,
    mp_layout_of,
    mp_rank_sets,
    read_index,
)
from .plan_checks import (
    Expect,
    check_config_layout,
    check_pairing,
    check_plan,
    expected_tensors,
    load_config,
    majority,
)
from .policy import Command, refusal
from ..remote.path import RemotePath
from .shard_scan import Inventory, gc_paused, read_headers, scan_hf
from ..io.source import Source, locate
from ..configs.sources import ConfigSource, no_such_path
from .tensor_plan import Layout, TensorPlan

__all__ = ["Inspection", "Inventory", "inspect", "require", "open_checkpoint"]


@dataclass
class Inspection:
    """What `inspect` found: the inventories, the config and plan used, every finding."""

    path: Path | RemotePath  # as given
    root: Path | RemotePath  # the checkpoint directory
    kind: Literal["hf", "mp"]
    inventories: list[Inventory]  # HF: one; model-parallel: one per readable rank file
    findings: list[Finding]
    checks: list[Check]
    layout: Layout
    config: Config | None = None
    config_source: str | None = None
    plan: TensorPlan | None = None  # the plan the tensors were checked against
    single: str | None = None  # the one file asked for, if any
    rank_files: dict[int, str] = field(default_factory=dict)  # model-parallel: rank -> file
    model_parallel: int = 0  # model-parallel: N of model{i}-mp{N} (some ranks may be absent)
    source: Source | None = None  # what was read: its headers, for every reader that follows

    @property
    def inventory(self) -> Inventory:
        """The HF layout's inventory."""
        return self.inventories[0]

    def require(self, command: Command) -> Inspection:
        """Self, or raise the `CkptError` of the first finding `command` refuses."""
        error = refusal(command, self.findings, str(self.root))
        if error is not None:
            raise error
        return self


def _split_single(path: Path | RemotePath) -> tuple[Path | RemotePath, str | None, bool]:
    """(directory, file asked for, whether that file is one part of a set of shards)."""
    if path.is_dir():
        return path, None, False
    if path.is_file() and path.suffix == ".safetensors":
        root, name = path.parent, path.name
        index = root / INDEX_FILE
        if index.is_file():
            try:
                shards = read_index(index).shards
            except FormatError:
                shards = []
            if name in shards and len(shards) > 1:
                return root, name, True
        m = SHARD_NAME_RE.fullmatch(name)
        return root, name, bool(m and int(m[2]) > 1)
    if path.is_file() and path.name == INDEX_FILE:
        return path.parent, None, False
    if path.exists():
        raise FormatError(f"{path}: not a checkpoint directory, index or .safetensors file")
    raise no_such_path(path)


def inspect(path: str | Path | Source, *, config: str | Path | Config | None = None,
            shards: list[str] | None = None) -> Inspection:
    """Read `path`'s headers and judge them against the tensor plan; writes nothing.

    Args:
        path: a checkpoint directory (HF or model-parallel), its index, or one .safetensors
            file (a lone checkpoint, or one shard of a set: then only its own entries); or
            the `Source` a caller opened (its headers are read through it, once).
        config: what to check against (a preset name, a config.json, a checkpoint directory
            or a parsed config); default: the checkpoint's config.json.
        shards: judge only these shards of the index's set (a partial download).

    Raises:
        FormatError: PATH does not exist or is no checkpoint.
        ConfigError: `config` names no preset, readable config.json or checkpoint.
    """
    source = Source.open(path)
    root, single, part = _split_single(source.path)
    subset = [single] if part else shards
    f = Findings()
    with gc_paused():
        if single is None and shards is None and is_model_parallel(root):
            found = _inspect_mp(source, root, config, f)
        else:
            found = _inspect_hf(source, root, None if part else single, subset, config, f)
    f.explain({name: shard for inv in found.inventories for name, shard in inv.unreadable.items()})
    found.path, found.single, found.findings = source.path, single, f.items
    found.source = source
    return found


def require(path: str | Path | Source, command: Command, *,
            config: str | Path | Config | None = None) -> Inspection:
    """`inspect(path)`, raising for the first finding `command` refuses (`policy`)."""
    return inspect(path, config=config).require(command)


def open_checkpoint(path: str | Path | Source, *, config: str | Path | None = None,
                    command: Command = "read"):
    """The reader of `path`'s layout, after the inventory let `command` through:
    `checkpoint.Checkpoint` (HF) or `mp_layout.MpCheckpoint` (model-parallel), reading
    through the headers the inventory read."""
    found = require(path, command, config=config)
    # the config file a user named, resolved at this public entry (the readers take paths)
    return reader_of(found, None if config is None else locate(config))


def reader_of(found: Inspection, config: Path | RemotePath | None = None, *,
              given: ConfigSource | None = None):
    """The reader of an inspected checkpoint, over the headers its inventory read (`given`:
    the config a user gave for an HF directory, read instead of its config.json)."""
    if found.kind == "mp":
        from .mp_layout import MpCheckpoint  # only model-parallel directories pay for it

        return MpCheckpoint(found.root, config, plan=found.plan, source=found.source)
    from .checkpoint import Checkpoint

    return Checkpoint(found.root, source=found.source, given=given)


# -- the two layouts ----------------------------------------------------------------------
def _inspect_hf(source: Source, root: Path, single: str | None, subset: list[str] | None,
                config, f: Findings) -> Inspection:
    checks: list[Check] = ["structure", "pairing"]
    inv = scan_hf(source, root, f, single=single, subset=subset)
    if not inv.entries and not inv.unreadable and not f.errors:
        f.add("no-tensors", f"{root.name}: no tensor in any shard", file=single)
    cfg, cfg_source, own = load_config(root, config, f)
    family = family_of(cfg) if cfg is not None else family_of_tensors(inv.entries)
    if family.has_hook("check"):  # a family with its own checks (DeepSeek-V4's formats)
        layout, checks, plan = family.hook("check")(source, root, inv, cfg, own, f, check_plan,
                                                    expected_tensors, check_config_layout, Expect)
        return Inspection(root, root, "hf", [inv], [], checks, layout, cfg, cfg_source, plan)
    layout = majority(inv.entries, len(inv.fp8), len(inv.scales))
    qc = cfg.quantization_config if cfg else None
    check_pairing(inv, tuple(qc.weight_block_size) if qc else FP8_BLOCK, f)
    plan = None
    if cfg is not None:
        if own and not inv.partial:
            check_config_layout(cfg, layout, f)
        plan = family.plan(cfg, layout)
        stored = plan.stored_dtypes_in(lambda n: e.dtype if (e := inv.entries.get(n)) else None)
        plan = family.plan(cfg, layout, stored_dtypes=stored) if stored else plan
        mtp = range(cfg.num_hidden_layers, cfg.num_hidden_layers + cfg.num_mtp_layers)
        check_plan(expected_tensors(plan), inv, mtp, f, prefix=plan.prefix)
        checks.append("plan")
    return Inspection(root, root, "hf", [inv], [], checks, layout, cfg, cfg_source, plan)


def _mp_rank_files(root: Path, f: Findings) -> tuple[int, dict[int, str]]:
    """(N, rank -> file) of DeepSeek's model-parallel layout (`model{i}-mp{N}.safetensors`);
    the N with a complete set wins, other files are reported."""
    sets = mp_rank_sets(root)
    n = chosen_mp_set(sets)
    for other, files in sets.items():
        for rank, name in files.items():
            if other != n or rank >= n:
                f.add("shard-unreferenced", f"{name}: not a rank of the {n}-way layout that "
                      f"DeepSeek's generate.py would load", file=name)
    for rank in range(n):
        if rank not in sets[n]:
            f.add("shard-missing", f"{mp_file_name(rank, n)}: rank {rank} of the {n}-way "
                  f"layout is absent", file=mp_file_name(rank, n))
    return n, {r: name for r, name in sorted(sets[n].items()) if r < n}


def _check_replica_dtypes(invs: dict[int, Inventory], ranks: dict[int, str],
                          f: Findings) -> None:
    """A tensor several ranks hold is stored alike on each (a float retag is accepted on
    its own, but copies that disagree cannot be joined into one tensor): every family."""
    first: dict[str, tuple[int, str]] = {}
    for rank, inv in sorted(invs.items()):
        for name, e in inv.entries.items():
            seen = first.setdefault(name, (rank, e.dtype))
            if seen[1] != e.dtype:
                f.add("dtype-mismatch", f"{ranks[rank]}: tensor '{name}': stored as {e.dtype}, "
                      f"but as {seen[1]} in {ranks[seen[0]]}: the ranks' copies disagree",
                      file=ranks[rank], tensor=name, expected=seen[1], found=e.dtype)


def _inspect_mp(source: Source, root: Path, config, f: Findings) -> Inspection:
    from .mp_layout import MpLayout, rank_plan  # only for such directories (imports numpy)

    n, ranks = _mp_rank_files(root, f)
    checks: list[Check] = ["structure"]
    headers = read_headers(source, root, list(ranks.values()), f)
    invs: dict[int, Inventory] = {}
    for rank, name in ranks.items():
        if (h := headers.get(name)) is not None:
            invs[rank] = Inventory(root, [name], dict(h.entries), dict.fromkeys(h.entries, name),
                                   tensor_bytes=h.file_size - h.data_offset)
    cfg, cfg_source, own = load_config(root, config, f)
    first = next(iter(invs.values()), Inventory(root)).entries
    layout = mp_layout_of(first)
    found = Inspection(root, root, "mp", list(invs.values()), [], checks, layout, cfg,
                       cfg_source, rank_files=ranks, model_parallel=n)
    if cfg is None or not invs:
        return found
    if own:
        check_config_layout(cfg, layout, f)
    _check_replica_dtypes(invs, ranks, f)
    if family_of(cfg).has_hook("check_mp"):
        found.checks = family_of(cfg).hook("check_mp")(cfg, n, invs, ranks, f, check_plan, Expect)
        return found
    try:
        found.plan = rank_plan(cfg, first)
        mp = MpLayout(found.plan, n, keep_mtp=True)
    except CkptError as e:
        f.add("mp-split-invalid", str(e))
        return found
    alt = {family: groups[0].alt_dtypes for family, groups in mp.plan.families.items()}
    for rank, inv in invs.items():
        expected = {p.name: Expect(p.shape, p.dtype, None, alt[mp.plan.by_name[p.hf_name].family])
                    for p in mp.ranks[rank]}
        check_plan(expected, inv, range(0), f, file=ranks[rank])
    checks.append("plan")
    return found
