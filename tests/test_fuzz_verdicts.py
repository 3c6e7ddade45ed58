"""A seeded fuzz loop over header-level mutations of V4 checkpoints and model-parallel
directories (issue 27, "Done means"): validate's verdict is every writer's verdict (the
policy's refusal for that command, or none), and what a writer writes validates.

Bounded: a few mutations per seed, tiny widths; a failure prints the seed and mutation."""

from __future__ import annotations

import random
import shutil

import numpy as np
import pytest

from ckpt_tools.commands.convert import upcast
from ckpt_tools.errors import CkptError
from ckpt_tools.inventory.policy import refusal
from ckpt_tools.commands.reshard import from_deepseek_mp, to_deepseek_mp
from ckpt_tools.io.safetensors_io import SafetensorsReader, write_safetensors
from ckpt_tools.commands.tiny import make_tiny
from ckpt_tools.commands.validate import validate

SEEDS = range(4)
RETAG = {np.dtype(np.float32): np.int32, np.dtype(np.int32): np.float32}


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    v4 = make_tiny(root / "v4", "v4-flash", fp8=True, shards=2, seed=8).path
    to_deepseek_mp(v4, root / "v4-mp", 2, workers=1)
    v3 = make_tiny(root / "v3", "v3", shards=2, seed=8).path
    to_deepseek_mp(v3, root / "v3-mp", 2, workers=1)
    return {"v4": v4, "v4-mp": root / "v4-mp", "v3-mp": root / "v3-mp"}


def _mutate(root, rng: random.Random) -> str:
    """One header-level change to one tensor file; returns what it did."""
    path = rng.choice(sorted(root.glob("*.safetensors")))
    with SafetensorsReader(path) as r:
        tensors = {n: np.array(r.get(n)) for n in r.names}
    name = rng.choice(sorted(tensors))
    kind = rng.choice(["drop", "extra", "reshape", "retag"])
    t = tensors[name]
    if kind == "drop":
        del tensors[name]
    elif kind == "extra":
        tensors[f"{name}.fuzz"] = np.zeros(3, np.float32)
    elif kind == "reshape" and t.ndim == 2 and t.shape[0] != t.shape[1]:
        tensors[name] = np.ascontiguousarray(t.reshape(t.shape[1], t.shape[0]))
    elif kind == "retag" and t.dtype.itemsize == 2 and t.dtype.kind != "i":
        tensors[name] = t.view(np.float16 if str(t.dtype) == "bfloat16" else np.int16)
    elif t.dtype in RETAG:
        tensors[name] = t.view(RETAG[t.dtype])
        kind = "retag"
    else:
        kind = "reshape-flat"
        tensors[name] = t.reshape(-1)
    write_safetensors(path, tensors)
    return f"{kind} {path.name}:{name}"


def _writers(kind: str):
    if kind == "v4":
        return [("upcast", lambda s, d: upcast(s, d, workers=1)),
                ("reshard", lambda s, d: to_deepseek_mp(s, d, 2, workers=1))]
    return [("reshard", lambda s, d: from_deepseek_mp(s, d, workers=1))]


@pytest.mark.parametrize("kind", ["v4", "v4-mp", "v3-mp"])
@pytest.mark.parametrize("seed", SEEDS)
def test_validate_and_writers_agree(clean, tmp_path, kind, seed):
    rng = random.Random(f"{kind}-{seed}")
    src = shutil.copytree(clean[kind], tmp_path / "src")
    what = _mutate(src, rng)
    findings = validate(src).findings
    for command, write in _writers(kind):
        dst = tmp_path / f"out-{command}"
        expected = refusal(command, findings, str(src))
        try:
            write(src, dst)
            refused = None
        except CkptError as e:
            refused = e
        assert (refused is None) == (expected is None), (
            f"seed {seed}, {what}: validate says {expected}, {command} says {refused}")
        if refused is None:
            errors = [f for f in validate(dst).findings if f.severity == "error"]
            assert not errors, f"seed {seed}, {what}: {command}'s output: {errors[:3]}"
