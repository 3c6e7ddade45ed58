"""Shared fixtures: tiny checkpoints built in tmp directories, and a CLI runner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from ckpt_tools.cli import cli
from ckpt_tools.io.index import INDEX_FILE, ShardIndex, read_index, write_index
from ckpt_tools.io.safetensors_io import read_header
from ckpt_tools.commands.tiny import make_tiny

# Why a test that compares with torch/transformers skipped, in words a newcomer can act on.
NEEDS_REFERENCE = ("needs the reference extra (torch, transformers): "
                   "pip install -e '.[test,reference]'")


@pytest.fixture
def make_ckpt(tmp_path):
    """make_ckpt(preset="v3", fp8=False, shards=2, seed=0, name=None, **kw) -> Path"""

    def factory(preset: str = "v3", *, fp8: bool = False, shards: int = 2, seed: int = 0,
                name: str | None = None, **kw) -> Path:
        dst = tmp_path / (name or f"{preset}-{'fp8' if fp8 else 'bf16'}-{shards}-{seed}")
        make_tiny(dst, preset, fp8=fp8, shards=shards, seed=seed, **kw)
        return dst

    return factory


@pytest.fixture
def run_cli():
    """run_cli(*args) -> click Result with separate stdout/stderr."""

    def run(*args: str, input: str | None = None):
        return CliRunner().invoke(cli, [str(a) for a in args], input=input, catch_exceptions=True)

    return run


def reindex(ck: Path) -> None:
    """The index as the shards now are (so that one defect stays the only one)."""
    shards = read_index(ck / INDEX_FILE).shards
    weight_map, total = {}, 0
    for shard in shards:
        for name, e in read_header(ck / shard).entries.items():
            weight_map[name] = shard
            total += e.nbytes
    write_index(ck / INDEX_FILE, ShardIndex(weight_map, total))


def read_json(path: Path):
    return json.loads(Path(path).read_text())


def flip_sign_on_disk(ckpt_dir: Path, name: str) -> None:
    """Corrupt one BF16 tensor in place: flip the sign bit of every element."""
    import numpy as np

    from ckpt_tools.inventory.checkpoint import Checkpoint

    with Checkpoint(ckpt_dir) as ck:
        shard, entry = ck.locate(name)
        path, offset = ck.shard_path(shard), ck.header(shard).data_offset + entry.start
    with open(path, "r+b") as f:
        f.seek(offset)
        data = np.frombuffer(f.read(entry.nbytes), np.uint16) ^ np.uint16(0x8000)
        f.seek(offset)
        f.write(data.tobytes())


def counts_script():
    """tests/data/make_derived_param_counts.py as a module (it counts a preset's parameters
    the way transformers builds it, on the meta device)."""
    import importlib.util

    path = Path(__file__).parent / "data" / "make_derived_param_counts.py"
    spec = importlib.util.spec_from_file_location("make_counts", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def shrink_vision_tower(config):
    """A transformers wrapper config (Mistral Large 4's) with a one-layer vision tower: a
    tiny checkpoint keeps only the language model, and the default Pixtral tower would be
    1.6B random parameters. The language model's logits do not depend on it."""
    if getattr(config, "vision_config", None) is not None:
        config.vision_config = type(config.vision_config)(
            hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
            head_dim=8, patch_size=14, image_size=28)
    return config

def transformers_model_with_experts_filled(cls, path: Path):
    """transformers' float32 model of the tiny checkpoint `path` whose routed experts are
    stored one tensor per expert while `cls` fuses them into `gate_up_proj` / `down_proj`
    with more slots than stored (LongCat-Flash's zero experts: transformers 5.24 allocates
    gate_up rows for them, so from_pretrained's size check refuses the release's tensors).
    The stored experts fill their slots; the others stay as built (never computed)."""
    import numpy as np
    import torch

    from ckpt_tools.inventory.checkpoint import Checkpoint

    model = cls(cls.config_class.from_pretrained(path)).float().eval()
    state = model.state_dict()
    with Checkpoint(path) as ck:
        stored = {n: torch.from_numpy(np.asarray(ck.read_float32(n))) for n in ck.index.weight_map
                  if n in state or ".mlp.experts." in n}
    for key in [k for k in state if k.endswith("mlp.experts.gate_up_proj")]:
        p = key.removesuffix("gate_up_proj")
        gate_up, down = state[key].clone(), state[p + "down_proj"].clone()
        for e in range(down.shape[0]):
            gate_up[e] = torch.cat([stored.pop(f"{p}{e}.gate_proj.weight"),
                                    stored.pop(f"{p}{e}.up_proj.weight")])
            down[e] = stored.pop(f"{p}{e}.down_proj.weight")
        stored[key], stored[p + "down_proj"] = gate_up, down
    missing, unexpected = model.load_state_dict(stored, strict=False)
    assert unexpected == [] and all("rotary" in m for m in missing), (missing, unexpected)
    return model
