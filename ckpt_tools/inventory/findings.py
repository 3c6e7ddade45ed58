"""What `ckpt validate` reports: the stable finding codes, `Finding` and `ValidationReport`.

Codes never change meaning once released; tools may match on them. A code's severity is
fixed here, so a finding cannot be an error in one place and a warning in another.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Literal

from pydantic import Field, computed_field

from ..execution.parallel import NodeWork
from ..results import Result
from .tensor_plan import Layout

if TYPE_CHECKING:
    from ..configs.layouts import ConfigReading

Severity = Literal["error", "warning", "info"]

# The stable finding codes: code -> (severity, meaning). Tools may match on these.
CODES: dict[str, tuple[Severity, str]] = {
    # structure (headers only)
    "index-missing": ("error", "neither model.safetensors.index.json nor model.safetensors"),
    "index-invalid": ("error", "the index is not JSON or not shaped like an index"),
    "shard-path-unsafe": ("error", "a file name in the index escapes the directory"),
    "shard-missing": ("error", "a shard the index lists does not exist"),
    "shard-unreferenced": ("warning", "a *.safetensors file the index does not list"),
    "header-invalid": ("error", "a shard's header breaks the safetensors format"),
    "shard-truncated": ("error", "a shard is shorter than its header says (partial copy)"),
    "shard-metadata": ("warning", "a shard's __metadata__ lacks format=pt (transformers wants it)"),
    "no-tensors": ("error", "no tensor found at all"),
    "tensor-not-in-shard": ("error", "the index names a shard that does not hold the tensor"),
    "tensor-not-indexed": ("error", "a shard holds a tensor the index does not list"),
    "tensor-duplicate": ("error", "a tensor stored in more than one shard"),
    "total-size-missing": ("info", "the index has no metadata.total_size"),
    "total-size-mismatch": ("error", "metadata.total_size differs from the sum of tensor bytes"),
    # FP8 pairing
    "scale-missing": ("error", "an FP8 (or V4 MXFP4) weight without its scale"),
    "scale-shape": ("error", "a scale not of ceil(rows/block) x ceil(cols/block) "
                             "(V4 MXFP4: rows x in/32)"),
    "scale-dtype": ("error", "a scale not stored as F32 (V4: F8_E8M0)"),
    "scale-orphan": ("error", "a scale whose weight is absent or not quantized"),
    # config and tensor plan
    "config-missing": ("error", "no config.json (and no --config): plan checks skipped"),
    "config-invalid": ("error", "config.json does not parse: plan checks skipped"),
    "config-layout": ("error", "config.json's quantization_config disagrees with the tensors"),
    "config-inconsistent": ("error", "the config parses but is inconsistent for routing or "
                                     "conversion"),
    "config-unknown-key": ("warning", "an unknown config key close to a known one (did you mean)"),
    "config-quantization": ("error", "a quantisation scheme other than DeepSeek's block FP8"),
    "tensor-missing": ("error", "a tensor the plan expects is absent"),
    "tensor-unexpected": ("error", "a tensor the plan does not know"),
    "tensor-outside-plan": ("info", "tensors of a wrapper's other towers (vision, projector), "
                                    "not checked"),
    "shape-mismatch": ("error", "a tensor whose shape differs from the plan"),
    "dtype-mismatch": ("error", "a tensor whose dtype is wrong for the layout"),
    "dtype-differs": ("warning", "a float dtype other than the plan's that loaders cast"),
    "mtp-missing": ("error", "an MTP layer the config declares is absent"),
    "mtp-unexpected": ("warning", "an MTP layer the config does not declare"),
    "mp-split-invalid": ("error", "the config cannot be split across this many MP ranks"),
    "tid2eid-range": ("error", "a DeepSeek-V4 hash table (tid2eid) entry outside "
                               "[0, n_routed_experts)"),
    # deep
    "nan-values": ("error", "NaN values in a tensor"),
    "inf-values": ("error", "infinite values in a tensor"),
    "fp8-nan": ("error", "FP8 NaN codes (0x7F/0xFF in e4m3fn) in a weight"),
    "scale-invalid": ("error", "weight_scale_inv entries that are not finite and > 0"),
    "scale-not-power-of-two": ("error", "scale_fmt ue8m0, but weight_scale_inv entries that are "
                                        "not exact powers of two"),
    "e8m0-nan": ("error", "F8_E8M0 scale bytes 255 (NaN) in a DeepSeek-V4 .scale"),
    "e8m0-overflow": ("error", "F8_E8M0 scales so large that the dequantised weight overflows "
                               "BF16/F32 to Inf"),
    "all-zero": ("warning", "a tensor whose every value is zero"),
    "read-error": ("error", "a tensor could not be read (I/O error)"),
    # checksums
    "checksum-path-unsafe": ("error", "a manifest path escapes the directory"),
    "checksum-file-missing": ("error", "a file the manifest lists is absent"),
    "checksum-size-mismatch": ("error", "a file's size differs from the manifest"),
    "checksum-mismatch": ("error", "a file's SHA-256 differs from the manifest"),
    "checksum-file-extra": ("warning", "a file the manifest does not list"),
    "manifest-not-written": ("warning", "errors were found, so no manifest was recorded"),
}
Code = Literal[tuple(CODES)]  # the schema lists every code
Check = Literal["structure", "pairing", "plan", "deep", "checksums"]


class Finding(Result):
    """One defect, located as precisely as known."""

    severity: Severity
    code: Code = Field(
        description="Stable code; its meaning is in ckpt_tools.inventory.findings.CODES")
    file: str | None = Field(None, description="Relative to the checkpoint directory")
    tensor: str | None = None
    expected: str | None = None
    found: str | None = None
    message: str = Field(description="One line naming file, tensor, expected and found")
    explained_by: str | None = Field(
        None, description="The earlier finding this one follows from, as 'CODE FILE' (a shard "
                          "that cannot be read, a misspelled config key): reports list it under "
                          "that finding, counted, not one by one")


class ValidationReport(Result):
    """What `ckpt validate` found; `--json` prints exactly this."""

    path: str
    checks: list[Check] = Field(description="The checks that ran")
    config: str | None = Field(None, description="Where the config came from, if any")
    layout: Layout | None = None
    files: int = Field(description="Safetensors files whose header was read")
    tensors: int
    tensor_bytes: int
    findings: list[Finding]
    manifest_written: str | None = None
    nodes: list[NodeWork] = Field(
        default_factory=list, description="Per machine, the deep scan's and hashing's jobs, "
                                          "bytes and seconds (Ray nodes with --executor ray)")
    strict: bool = Field(False, description="Warnings count as failures (`ok` is false)")

    @computed_field
    @property
    def errors(self) -> int:
        return sum(f.severity == "error" for f in self.findings)

    @computed_field
    @property
    def warnings(self) -> int:
        return sum(f.severity == "warning" for f in self.findings)

    @computed_field
    @property
    def explained(self) -> int:
        """Findings that follow from an earlier one (`Finding.explained_by`)."""
        return sum(f.explained_by is not None for f in self.findings)

    @computed_field
    @property
    def ok(self) -> bool:
        """No error; with `strict`, no warning either."""
        return self.errors == 0 and not (self.strict and self.warnings)


# A finding that explains others comes first, and the ones it explains are not repeated:
# they carry `explained_by` and reports count them under it. A file that cannot be read
# (or is absent) explains what is said about the tensors the index puts in it; a misspelled
# config key whose intended key therefore took its default explains the tensor plan's
# findings (2,128 "missing" tensors of a config read with the default 61 layers).
FILE_CAUSES = frozenset({"shard-missing", "header-invalid", "shard-truncated"})
TENSOR_EFFECTS = frozenset({
    "tensor-not-in-shard", "tensor-not-indexed", "tensor-duplicate", "total-size-mismatch",
    "scale-missing", "scale-shape", "scale-dtype", "scale-orphan", "tensor-missing",
    "tensor-unexpected", "shape-mismatch", "dtype-mismatch", "dtype-differs"})
PLAN_EFFECTS = frozenset({"tensor-missing", "tensor-unexpected", "shape-mismatch",
                          "dtype-mismatch", "dtype-differs", "mtp-missing", "mtp-unexpected",
                          "scale-missing", "scale-orphan", "config-layout", "mp-split-invalid"})
_MEANT_KEY = re.compile(r"did you mean '([^']+)'")


def cause_label(finding: Finding) -> str:
    return f"{finding.code} {finding.file}" if finding.file else finding.code


class Findings:
    """Collects findings while checks run; the severity always comes from `CODES`."""

    def __init__(self) -> None:
        self.items: list[Finding] = []
        self.config_causes: list[Finding] = []  # near-miss keys that changed the config read

    def add(self, code: str, message: str, *, file: str | None = None, tensor: str | None = None,
            expected: object = None, found: object = None) -> None:
        self.items.append(Finding(
            severity=CODES[code][0], code=code, file=file, tensor=tensor,
            expected=None if expected is None else _text(expected),
            found=None if found is None else _text(found), message=message))

    def judge_config(self, reading: ConfigReading, where: str) -> None:
        """What `info` and `diff` only describe: near-miss keys (warnings), routing
        inconsistencies and a foreign quantisation scheme (errors)."""
        for w in reading.warnings:
            meant = _MEANT_KEY.search(w)
            if meant and meant[1] in reading.defaulted:
                default = reading.defaulted[meant[1]]
                w = f"{w} ({meant[1]} was read as its default, {default})"
            self.add("config-unknown-key", f"{where}: {w}", file=where)
            if meant and meant[1] in reading.defaulted:
                self.config_causes.append(self.items[-1])
        for problem in reading.inconsistencies:
            field, _, rest = problem.partition(": ")
            self.add("config-inconsistent", f"{where}: field '{field}': {rest}", file=where)
        if reading.quantization_scheme:
            self.add("config-quantization", f"{where}: quantization_config is "
                     f"{reading.quantization_scheme}; the plan checks assume DeepSeek's block "
                     f"FP8 or BF16", file=where)

    @property
    def errors(self) -> int:
        return sum(f.severity == "error" for f in self.items)

    def explain(self, unreadable: dict[str, str]) -> None:
        """Put the findings that explain others first, and mark the ones they explain
        (`unreadable`: tensor -> the file the index puts it in, which could not be read)."""
        files = {f.file: f for f in self.items if f.code in FILE_CAUSES and f.file}
        config = self.config_causes[0] if self.config_causes else None
        first = {id(f) for f in files.values()} | {id(config)}
        causes, rest, explained = [], [], []
        for f in self.items:
            cause = None
            if f.code in TENSOR_EFFECTS:
                cause = files.get(f.file) or files.get(unreadable.get(f.tensor or ""))
            if cause is None and config is not None and f.code in PLAN_EFFECTS:
                cause = config
            if cause is not None and cause is not f:
                explained.append(f.model_copy(update={"explained_by": cause_label(cause)}))
            elif id(f) in first:
                causes.append(f)
            else:
                rest.append(f)
        self.items = causes + rest + explained


def _text(value: object) -> str:
    return str(list(value)) if isinstance(value, tuple) else str(value)
