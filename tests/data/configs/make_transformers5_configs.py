"""Writes transformers5/*.json: configs as transformers 5 `save_pretrained` writes them.

Run from this directory with the reference extra installed (transformers 5.24.0 produced the
committed files): `python make_transformers5_configs.py`. Each output is transformers' own
serialisation of a config built either from its class defaults or from one of the public
files beside this script (see SOURCES.md); nothing in them is written by hand.
"""

import json
import tempfile
from pathlib import Path

import transformers

HERE = Path(__file__).parent
OUT = HERE / "transformers5"
# keys that name the remote code or the model class; transformers' own classes set them
DROP = ("auto_map", "architectures", "model_type")


def save(cls, name: str, **kwargs) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cls(**kwargs).save_pretrained(tmp)
        (OUT / f"{name}.json").write_text((Path(tmp) / "config.json").read_text())


def from_file(name: str) -> dict:
    raw = json.loads((HERE / name).read_text())
    return {k: v for k, v in raw.items() if k not in DROP}


if __name__ == "__main__":
    OUT.mkdir(exist_ok=True)
    save(transformers.DeepseekV3Config, "deepseek_v3-defaults")
    save(transformers.DeepseekV2Config, "deepseek_v2-defaults-topk6", num_experts_per_tok=6)
    save(transformers.DeepseekV32Config, "deepseek_v32-defaults")
    save(transformers.DeepseekV3Config, "deepseek-r1-resaved", **from_file("deepseek-r1.json"))
    save(transformers.DeepseekV3Config, "deepseek-r1-0528-resaved",
         **from_file("deepseek-r1-0528.json"))
    save(transformers.DeepseekV2Config, "ktransformers-deepseek-v2-lite-resaved",
         **from_file("ktransformers-deepseek-v2-lite.json"))
    save(transformers.DeepseekV3Config, "kimi-k2-renamed-resaved",
         **from_file("create-bot-v1-kimi-k2-renamed.json"))
    (HERE / "refused").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:  # top-k left null: no loader can route
        transformers.DeepseekV2Config().save_pretrained(tmp)
        (HERE / "refused" / "transformers5-deepseek_v2-defaults.json").write_text(
            (Path(tmp) / "config.json").read_text())
    print(sorted(p.name for p in OUT.iterdir()))
