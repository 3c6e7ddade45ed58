"""Value statistics of stored tensors, each read once in bounded chunks (`ckpt validate --deep`).

Counts come from the raw bits (no float conversion, no temporary of the tensor's size):
NaN, Inf and zero for every float format, FP8 NaN codes (0x7F/0xFF in e4m3fn, which has no
Inf), and, for a `weight_scale_inv`, the entries that are not finite and > 0 and, under
`scale_fmt: ue8m0`, the valid ones that are not exact powers of two (E8M0 holds only those).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..io.dtypes import DTYPES, itemsize
from ..errors import FormatError
from ..formats import SCALE_SUFFIX
from ..execution.parallel import WORKER_MEMORY, ExecutorName, Job, JobRun, run_jobs, workers_for
from ..execution.progress import Progress
from ..io.safetensors_io import SafetensorsReader
from ..io.source import Source

# bits view, |x| mask, |x| bits of +inf (None: no inf; then |x| == mask is NaN, as in e4m3fn)
FLOAT_BITS: dict[str, tuple[type, int, int | None]] = {
    "F64": (np.uint64, 0x7FFF_FFFF_FFFF_FFFF, 0x7FF0_0000_0000_0000),
    "F32": (np.uint32, 0x7FFF_FFFF, 0x7F80_0000),
    "F16": (np.uint16, 0x7FFF, 0x7C00),
    "BF16": (np.uint16, 0x7FFF, 0x7F80),
    "F8_E5M2": (np.uint8, 0x7F, 0x7C),
    "F8_E4M3": (np.uint8, 0x7F, None),
}
_F32_MAX_BITS = 0x7F7F_FFFF  # an F32 is finite and > 0 iff its bits are in [1, this]
# Bytes read and counted at a time, into buffers allocated once per job: a fresh 16 MB
# buffer for every chunk and temporary cost a page fault per 4 KB, 80% of the scan's CPU.
SCAN_CHUNK_BYTES = 1 << 20


class _Scratch:
    """The read buffer and the bit-level temporaries of one scan, reused chunk after chunk."""

    def __init__(self, nbytes: int = SCAN_CHUNK_BYTES):
        self.read = bytearray(nbytes)
        self.bits = np.empty(nbytes, np.uint8)
        self.flags = np.empty(nbytes, np.bool_)


class TensorValues(NamedTuple):
    numel: int
    nan: int = 0
    inf: int = 0
    zero: int = 0
    bad_scales: int = 0  # scales only: entries not finite and > 0
    not_power_of_two: int = 0  # scales only, when asked: valid entries that are not 2^k
    too_large: int = 0  # E8M0 scales only, when a limit is given: bytes above it (NaN aside)


# an I8 byte of DeepSeek-V4 packs two e2m1 codes; bit 3 of each is its sign
_FP4_PAIR_MAGNITUDE = 0x77


def value_counts(chunk: bytes | memoryview, dtype: str,
                 scratch: _Scratch | None = None) -> tuple[int, int, int]:
    """(NaN, Inf, zero) in a chunk of a tensor stored as `dtype` (a `FLOAT_BITS` key, or I8:
    MXFP4 pairs, which have no NaN or Inf; a byte counts as zero when both values are);
    `scratch` (at least the chunk's size) saves allocating temporaries."""
    if dtype == "I8":
        bits = np.frombuffer(chunk, np.uint8) & np.uint8(_FP4_PAIR_MAGNITUDE)
        return 0, 0, int(bits.size - np.count_nonzero(bits))
    view, mask, inf = FLOAT_BITS[dtype]
    values = np.frombuffer(chunk, view)
    nbytes = values.size * values.itemsize
    if scratch is None or scratch.bits.size < nbytes:
        scratch = _Scratch(nbytes)
    bits = scratch.bits[:nbytes].view(view)
    flags = scratch.flags[:values.size]
    np.bitwise_and(values, view(mask), out=bits)  # |x|: the sign bit dropped
    zero = int(values.size - np.count_nonzero(bits))
    if inf is None:  # e4m3fn: NaN is the largest |x| code
        return int(np.count_nonzero(np.equal(bits, mask, out=flags))), 0, zero
    odd = int(np.count_nonzero(np.greater_equal(bits, inf, out=flags)))  # NaN or Inf: rare
    infs = int(np.count_nonzero(np.equal(bits, inf, out=flags))) if odd else 0
    return odd - infs, infs, zero


def bad_scale_count(chunk: bytes, dtype: str) -> int:
    """Entries of a scale chunk that are not finite and > 0."""
    if dtype == "F32":
        bits = np.frombuffer(chunk, np.uint32)
        return int(np.count_nonzero(bits - np.uint32(1) >= np.uint32(_F32_MAX_BITS)))
    values = np.frombuffer(chunk, DTYPES[dtype].numpy).astype(np.float32)
    return int(values.size - np.count_nonzero(np.isfinite(values) & (values > 0)))


def not_power_of_two_count(chunk: bytes, dtype: str) -> int:
    """Entries of a scale chunk that are finite and > 0 but not exact powers of two
    (frexp's mantissa is exactly 0.5 for 2^k, subnormals included)."""
    values = np.frombuffer(chunk, DTYPES[dtype].numpy).astype(np.float32)
    valid = values[np.isfinite(values) & (values > 0)]
    return int(np.count_nonzero(np.frexp(valid)[0] != np.float32(0.5)))


def scannable(dtype: str, *, is_scale: bool = False) -> bool:
    return is_scale and DTYPES[dtype].is_float or dtype in FLOAT_BITS or dtype == "I8"


def scan_tensor(reader: SafetensorsReader, name: str, *, is_scale: bool = False,
                scratch: _Scratch | None = None, power_of_two: bool = False,
                byte_limit: int | None = None, start: int = 0,
                stop: int | None = None) -> TensorValues:
    """Read one tensor (or its bytes [start, stop), whole elements) once with pread (memory:
    one chunk) and count its odd values; `byte_limit`: E8M0 scale bytes above it count as
    too large.

    Raises:
        FormatError: the file ended early. OSError: the read failed.
    """
    e = reader.entry(name)
    scratch = scratch or _Scratch()
    nan = inf = zero = bad = odd = large = 0
    stop = e.nbytes if stop is None else stop
    numel = e.numel if (start, stop) == (0, e.nbytes) else (stop - start) // itemsize(e.dtype)
    for chunk in reader.iter_into(name, scratch.read, start, stop):
        if is_scale:
            bad += bad_scale_count(chunk, e.dtype)
            odd += not_power_of_two_count(chunk, e.dtype) if power_of_two else 0
            if byte_limit is not None:  # E8M0: one byte each; 255 (NaN) is counted as bad
                codes = np.frombuffer(chunk, np.uint8)
                large += int(np.count_nonzero((codes > byte_limit) & (codes != 255)))
        else:
            n, i, z = value_counts(chunk, e.dtype, scratch)
            nan, inf, zero = nan + n, inf + i, zero + z
    return TensorValues(numel, nan, inf, zero, bad, odd, large)


# Bytes scanned per job: a tensor larger than that is cut into byte ranges, so one big shard
# (or one big tensor) keeps every worker busy; small enough that jobs even out across two
# workers, large enough that a job's start costs nothing next to its reading.
SCAN_PART_BYTES = 64 << 20
# A finding as a small picklable tuple: (code, file, tensor, expected, found, message); the
# codes are `ckpt_tools.inventory.findings.CODES` keys.
Found = tuple[str, str, str | None, object, object, str]
Piece = tuple[str, int, int]  # (tensor, first byte, end byte) of one job's reading


def scan_part(source: Source, file: str, pieces: list[Piece], scale_suffix: str = SCALE_SUFFIX,
              power_of_two_scales: bool = False, scale_byte_limits: dict[str, int] | None = None
              ) -> tuple[list[tuple[str, TensorValues]], Found | None]:
    """The counts of each piece of one shard (`file`, in the directory `source.path`), and
    the error that stopped the reading, if any. Runs in a worker: everything it needs comes
    in the arguments, the header entries in `source` (no header is read here).
    `scale_byte_limits`: E8M0 scale name -> largest byte that keeps its weight finite."""
    out: list[tuple[str, TensorValues]] = []
    scratch = _Scratch()
    path = source.path / file
    with source.reader(path) as reader:
        for name, start, stop in pieces:
            try:
                e = reader.entry(name)
                limit = (scale_byte_limits or {}).get(name) if e.dtype == "F8_E8M0" else None
                v = scan_tensor(reader, name, is_scale=name.endswith(scale_suffix),
                                scratch=scratch, power_of_two=power_of_two_scales,
                                byte_limit=limit, start=start, stop=stop)
            except (FormatError, OSError) as err:
                code = "shard-truncated" if isinstance(err, FormatError) else "read-error"
                return out, (code, file, name, None, None, str(err).replace(str(path), file, 1))
            out.append((name, v))
    return out, None


def findings_of(file: str, name: str, dtype: str, v: TensorValues, is_scale: bool,
                byte_limit: int | None = None) -> list[Found]:
    """What the counts of one whole tensor say."""
    out: list[Found] = []
    where, total = f"{file}: tensor '{name}'", f"{v.numel:,}"
    if v.bad_scales and dtype == "F8_E8M0":  # only NaN is possible: byte 255
        out.append(("e8m0-nan", file, name, "no byte 255", v.bad_scales,
                    f"{where}: {v.bad_scales:,} of {total} E8M0 scales are NaN (byte 255)"))
    elif v.bad_scales:
        out.append(("scale-invalid", file, name, "finite and > 0", v.bad_scales,
                    f"{where}: {v.bad_scales:,} of {total} scales are not finite and > 0"))
    if v.too_large:
        out.append(("e8m0-overflow", file, name, f"bytes <= {byte_limit}", v.too_large,
                    f"{where}: {v.too_large:,} of {total} E8M0 scales exceed "
                    f"2^{byte_limit - 127} (byte {byte_limit}): the dequantised weight would "
                    f"overflow BF16/F32 to Inf"))
    if v.not_power_of_two:
        out.append(("scale-not-power-of-two", file, name, "2^k (scale_fmt ue8m0)",
                    v.not_power_of_two, f"{where}: {v.not_power_of_two:,} of {total} "
                    f"scales are not exact powers of two, but scale_fmt is ue8m0"))
    if v.nan:
        fp8 = dtype == "F8_E4M3"
        out.append(("fp8-nan" if fp8 else "nan-values", file, name, 0, v.nan,
                    f"{where}: {v.nan:,} of {total} values are "
                    + ("FP8 NaN codes (0x7F/0xFF)" if fp8 else "NaN")))
    if v.inf:
        out.append(("inf-values", file, name, 0, v.inf,
                    f"{where}: {v.inf:,} of {total} values are infinite"))
    if v.zero == v.numel and not is_scale:
        out.append(("all-zero", file, name, None, None, f"{where}: all {total} values are zero"))
    return out


def split_pieces(tensors: list[tuple[str, int]], part_bytes: int) -> list[list[Piece]]:
    """Jobs of about `part_bytes` each over consecutive tensors; a tensor that does not fit
    is cut into byte ranges at multiples of 8 bytes (whole elements of every dtype)."""
    step = max(8, part_bytes)
    parts: list[list[Piece]] = []
    current: list[Piece] = []
    room = step
    for name, nbytes in tensors:
        start = 0
        while start < nbytes:
            take = min(nbytes - start, room)
            if take < nbytes - start:  # a cut inside the tensor
                take -= take % 8
            if take:
                current.append((name, start, start + take))
                start, room = start + take, room - take
            if room < 8 or not take:  # this job is full
                parts.append(current)
                current, room = [], step
    return [p for p in [*parts, current] if p]


def scan_shards(source: Source, root: Path, tensors_by_shard: dict[str, list[tuple[str, int]]],
                *,
                scale_suffix: str = SCALE_SUFFIX, progress: Progress | None = None,
                workers: int | None = None, executor: ExecutorName = "local",
                power_of_two_scales: bool = False,
                scale_byte_limits: dict[str, int] | None = None) -> JobRun:
    """The value findings of shards given as (tensor, bytes) lists (files of the directory
    `root`, their headers in `source`), in worker processes when there is enough data; the
    results are every shard's findings, in shard and tensor order.

    Jobs read about `SCAN_PART_BYTES` each, a large tensor in byte ranges (`split_pieces`):
    shards of one checkpoint differ in size by 2x and more, a checkpoint may be one file, and
    with one job per shard or per tensor the last big one runs alone while the other
    workers idle. Counts are sums, so a tensor's ranges add up to its counts. A job holds
    one chunk (and bit-level temporaries of a few times the chunk). `power_of_two_scales`:
    check scales are 2^k (scale_fmt ue8m0); `scale_byte_limits`: E8M0 scale name -> largest
    byte that keeps its weight finite."""
    limits = scale_byte_limits or {}
    memory = WORKER_MEMORY + 4 * SCAN_CHUNK_BYTES
    jobs = []
    for shard, tensors in tensors_by_shard.items():
        header = source.header(root / shard)
        wanted = [(t, n) for t, n in tensors if n and scannable(
            header.entries[t].dtype, is_scale=t.endswith(scale_suffix))]
        for pieces in split_pieces(wanted, SCAN_PART_BYTES):
            names = dict.fromkeys(t for t, _, _ in pieces)
            jobs.append(Job(shard, sum(b - a for _, a, b in pieces),
                            (scan_part, source.for_tensors(root, [(root / shard, names)]), shard,
                             pieces, scale_suffix, power_of_two_scales,
                             {t: limits[t] for t in names if t in limits} or None), memory))
    workers = workers_for(sum(j.nbytes for j in jobs), workers)
    ran = run_jobs(_call, jobs, workers=workers, executor=executor, progress=progress,
                   label="reading tensors")
    counts: dict[tuple[str, str], list[int]] = {}
    errors: dict[str, tuple[str, Found]] = {}  # shard -> (tensor it stopped at, finding)
    for job, (values, error) in zip(jobs, ran.results):
        shard = job.label
        for name, v in values:
            total = counts.setdefault((shard, name), [0] * len(v))
            total[:] = [a + b for a, b in zip(total, v)]
        if error is not None and shard not in errors:
            errors[shard] = (error[2], error)
    results: list[Found] = []
    for shard, tensors in tensors_by_shard.items():
        entries = source.header(root / shard).entries
        stopped = errors.get(shard)
        for name, nbytes in tensors:
            if stopped is not None and stopped[0] == name:
                results.append(stopped[1])
                stopped = None
            v = counts.get((shard, name))
            if v is not None and v[0] == entries[name].numel:  # every range of it counted
                results += findings_of(shard, name, entries[name].dtype, TensorValues(*v),
                                       name.endswith(scale_suffix), limits.get(name))
        if stopped is not None:
            results.append(stopped[1])
    return JobRun(results, ran.nodes)


def _call(fn, *args):
    return fn(*args)
