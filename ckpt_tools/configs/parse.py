"""`parse_config` and `read_config_file`: a config.json, in any layout, into its family's model.

`parse_config` recognises the architecture and layout (`config_layouts`), fills absent keys
with the defaults of the loader the file names (`config_defaults` for DeepSeek's loaders, the
family's registry entry for a derived family's own), validates with the model the family
declares (`Family.config_model`; V2/V3/V3.2 in `config_models`), and turns any failure into
one `ConfigError` line. Unknown keys are kept; a key within a small edit distance of a known
one is a "did you mean" warning.

Describe before you judge: routing inconsistencies (top-k larger than the kept groups'
experts, groups not dividing experts, ...) are `ConfigReading.warnings` when parsed with
`lenient=True` (info, diff, validate) and a `ConfigError` naming the field otherwise (every
command that writes or computes from the config).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Union

from pydantic import Field, TypeAdapter, ValidationError

from .defaults import loader_defaults
from .layouts import (
    FOREIGN_QUANT_KEYS,
    INFERENCE_LEAVES_OUT,
    QUANT_SCHEMES,
    REFUSED_MODEL_TYPES,
    SUPPORTED_MODEL_TYPES,
    WRAPPER_KEYS,
    ConfigReading,
    choose_loader,
    from_inference_layout,
    near_miss_warnings,
    recognise,
    tensor_prefix,
    variant_refusal,
)
from .models import (  # noqa: F401  (re-exported: the models' historical home)
    DeepseekConfigBase,
    DeepseekV2Config,
    DeepseekV3Config,
    DeepseekV32Config,
    Fp8QuantizationConfig,
    RopeScaling,
    ScoringFunc,
    TopkMethod,
    yarn_mscale,
)
from ..errors import ConfigError, UnsupportedModelError
from ..families import FAMILIES
from ..formats import FP8_BLOCK  # noqa: F401  (re-exported)
from .v4 import DeepseekV4Config

# Kept for callers of the old names; the tables live in config_layouts.
_REFUSED_MODEL_TYPES = REFUSED_MODEL_TYPES

# model_type -> the model its family declares: parsing builds only the one validator it
# needs (building the union's at import was a quarter of `ckpt info`'s start-up)
_MODELS = {f.name: f.config_model for f in FAMILIES.values() if f.config_model is not None}

# Every config ckpt_tools reads (the table-driven families subclass the base; V4 has a model
# of its own); annotate with this, test with isinstance(x, Config).
Config = DeepseekConfigBase | DeepseekV4Config
# The same, as the discriminated union the published JSON schema describes.
DeepseekConfig = Annotated[Union[tuple(_MODELS.values())], Field(discriminator="model_type")]


def _normalise_transformers_v5(raw: dict[str, Any]) -> dict[str, Any]:
    """Map the keys transformers v5 writes onto the hub spelling (input left untouched)."""
    data = dict(raw)
    if "dtype" in data and "torch_dtype" not in data:
        data["torch_dtype"] = data.pop("dtype")
    params = data.get("rope_parameters")
    if isinstance(params, dict) and "rope_scaling" not in data:
        params = dict(params)
        data.pop("rope_parameters")
        if "rope_theta" in params:
            data.setdefault("rope_theta", params.pop("rope_theta"))
        rope_type = params.pop("rope_type", params.pop("type", "default"))
        data["rope_scaling"] = None if rope_type == "default" else {"type": rope_type, **params}
    elif isinstance(data.get("rope_scaling"), dict) and "rope_type" in data["rope_scaling"]:
        rs = dict(data["rope_scaling"])
        rs.setdefault("type", rs.pop("rope_type"))
        data["rope_scaling"] = rs
    for derived in ("head_dim", "qk_head_dim", "rope_interleave"):
        data.pop(derived, None)
    return data


def _one_line(err: ValidationError, source: str) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"] if p not in SUPPORTED_MODEL_TYPES)
    msg = first["msg"].removeprefix("Value error, ")
    more = f" (+{err.error_count() - 1} more)" if err.error_count() > 1 else ""
    if first["type"] == "missing":
        return f"{source}: field '{loc}': required field is missing{more}"
    if first["type"] == "value_error" and not loc:
        # cross-field rules put the field name first: "n_group: ..."
        field, _, rest = msg.partition(": ")
        return f"{source}: field '{field}': {rest}{more}"
    found = first.get("input")
    found_s = "" if isinstance(found, dict) else f", found {json.dumps(found, default=str)}"
    return f"{source}: field '{loc}': {msg}{found_s}{more}"


def _loader_defaults(family: str, loader: str) -> dict[str, Any]:
    """What `loader` uses for absent keys: a derived family's own (its registry entry), else
    DeepSeek's loaders' table."""
    own = FAMILIES[family]
    return own.loader_defaults() if own.loader == loader else loader_defaults(loader)


def _fill_loader_defaults(data: dict[str, Any], reading: ConfigReading, source: str) -> None:
    """Absent keys get the loader's value; nulls the loader tolerates get what it does with
    them. Records every filled key in `reading.defaulted`."""
    for key, value in _loader_defaults(reading.architecture, reading.loader).items():
        if key not in data:
            data[key] = value
            reading.defaulted[key] = value
    greedy = data.get("topk_method") == "greedy"
    for key in ("n_group", "topk_group"):
        if data.get(key) is None and greedy:
            data[key] = 1  # greedy routing never reads the groups
            reading.defaulted[key] = 1
    if data.get("n_shared_experts", 0) is None:
        data["n_shared_experts"] = 0  # the remote code builds no shared MLP for null
        reading.defaulted["n_shared_experts"] = 0
    for key, why in (("num_experts_per_tok", "routing needs a top-k"),
                     ("n_routed_experts", "null means a dense model; ckpt_tools reads MoE models"),
                     ("n_group", f"topk_method {data.get('topk_method')} needs expert groups"),
                     ("topk_group", f"topk_method {data.get('topk_method')} needs expert groups")):
        if data.get(key, 0) is None:
            dflt = " (the loader's default)" if key in reading.defaulted else ""
            raise ConfigError(f"{source}: field '{key}': null{dflt}, but {why}; "
                              f"set it ({reading.loader})")


def _split_quantization(data: dict[str, Any], reading: ConfigReading) -> None:
    """Name a quantisation scheme other than DeepSeek's block FP8 and describe the model
    without it (its dtypes come from the headers)."""
    qc = data.get("quantization_config")
    if not isinstance(qc, dict):
        for key, who in FOREIGN_QUANT_KEYS.items():  # declared outside quantization_config
            if data.get(key) not in (None, False):
                reading.quantization_scheme = f"{who} {data[key]} (key '{key}')"
        return
    method = qc.get("quant_method")
    if method == "fp8" and qc.get("fmt", "e4m3") == "e4m3" and "weight_block_size" in qc:
        return
    algo = qc.get("quant_algo") or qc.get("format") or qc.get("bits") or qc.get("dtype")
    name = QUANT_SCHEMES.get(method, f"quant_method {json.dumps(method)}")
    if method == "fp8":
        name = "FP8 without DeepSeek's 128x128 weight blocks"
    reading.quantization_scheme = name + (f" ({algo})" if algo and method != "fp8" else "")
    data.pop("quantization_config")


def parse_config(raw: Any, *, source: str = "config",
                 lenient: bool = False) -> Config:
    """Validate a config.json mapping, in any layout `config_layouts` recognises.

    Args:
        raw: the parsed JSON.
        source: named first in every error.
        lenient: keep routing inconsistencies and foreign quantisation schemes as
            `config.reading.warnings` instead of raising (describe before you judge).

    Raises:
        UnsupportedModelError: another architecture, or a DeepSeek one not handled yet.
        ConfigError: anything else, in one line naming the field.
    """
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a JSON object, found {type(raw).__name__}")
    family, why, layout, wrapper_key = recognise(raw, source)
    if FAMILIES[family].config_parser is not None:  # keys of its own, mapped by its parser
        return _parse_own(raw, source, family, why, layout)
    outer = raw
    outside: list[str] = []
    if wrapper_key is not None:
        raw = outer[wrapper_key]
        outside = sorted(k for k, v in outer.items() if k != wrapper_key and isinstance(v, dict)
                         and k.endswith("_config") and k != "quantization_config")
    data = from_inference_layout(raw) if layout == "inference" else _normalise_transformers_v5(raw)
    if wrapper_key is not None and "quantization_config" not in data:
        if "quantization_config" in outer:  # declared by the wrapper for its language model
            data["quantization_config"] = outer["quantization_config"]
    data["model_type"] = family
    reading = ConfigReading(
        architecture=family, recognised_by=why, original_model_type=raw.get("model_type"),
        layout=layout, loader=choose_loader(raw, family, layout,
                                            wrapper=outer if wrapper_key else None),
        wrapper_key=wrapper_key,
        tensor_prefix=tensor_prefix(outer, wrapper_key) if wrapper_key else "",
        outside_plan=outside,
        wrapper_model_type=outer.get("model_type") if wrapper_key else None,
        leaves_out=list(INFERENCE_LEAVES_OUT) if layout == "inference" else [],
        warnings=near_miss_warnings(raw, family, layout),
    )
    _fill_loader_defaults(data, reading, source)
    refusal = variant_refusal(data)
    if refusal is not None:
        where = f"{wrapper_key} of model_type {outer.get('model_type')}: " if wrapper_key else ""
        raise UnsupportedModelError(f"{source}: {where}{refusal}")
    declared = ("quantization_config is" if isinstance(data.get("quantization_config"), dict)
                else "quantised as")
    _split_quantization(data, reading)
    try:
        config = _MODELS[family].model_validate(data)
    except ValidationError as e:
        raise ConfigError(_one_line(e, source)) from e
    config._reading = reading  # the routing rules depend on the loader
    problems = config.routing_problems()
    if not lenient:
        if problems:
            field, _, rest = problems[0].partition(": ")
            raise ConfigError(f"{source}: field '{field}': {rest}")
        if reading.quantization_scheme:
            raise UnsupportedModelError(
                f"{source}: {declared} {reading.quantization_scheme}; this command "
                f"needs DeepSeek's block FP8 (quant_method fp8, 128x128 blocks) or BF16")
    reading.inconsistencies.extend(problems)
    config.__pydantic_fields_set__.difference_update(reading.defaulted)
    config._reading = reading
    return config


def _parse_own(raw: dict[str, Any], source: str, family: str, why: str, layout) -> Config:
    """A family that parses its files its own way (`Family.config_parser`), its errors in
    one line like everyone else's."""
    try:
        config = FAMILIES[family].config_parser(raw)
    except UnsupportedModelError as e:
        raise UnsupportedModelError(f"{source}: {e}") from None
    except ValidationError as e:
        raise ConfigError(_one_line(e, source)) from e
    except ValueError as e:
        raise ConfigError(f"{source}: field '{str(e).partition(': ')[0]}': "
                          f"{str(e).partition(': ')[2]}") from e
    config._reading = ConfigReading(
        architecture=family, recognised_by=why, original_model_type=raw.get("model_type"),
        layout=layout, loader=choose_loader(raw, family, layout),
        warnings=near_miss_warnings(raw, family, layout))
    return config


def read_config_file(path: str | Path, *,
                     lenient: bool = False) -> Config:
    """Parse a config.json file, local or remote (ConfigError naming the file when unreadable
    or invalid); `lenient` as in `parse_config`."""
    if isinstance(path, str):  # a public entry: a spec a user typed (a Path is resolved)
        # here: the readers and remote clients are not imported for a preset, which reads no file
        from ..io.source import locate

        path = locate(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from e
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: invalid JSON at line {e.lineno} column {e.colno}: "
                          f"{e.msg}") from e
    hf_quant = path.with_name(HF_QUANT_CONFIG_FILE)
    if isinstance(raw, dict) and "quantization_config" not in raw and hf_quant.is_file():
        raw = dict(raw, quantization_config=_modelopt_quantization(hf_quant))
    return parse_config(raw, source=str(path), lenient=lenient)


HF_QUANT_CONFIG_FILE = "hf_quant_config.json"  # NVIDIA ModelOpt exports (NVFP4, FP8 per-tensor)


def _modelopt_quantization(path: Path) -> dict[str, Any]:
    """The quantisation a ModelOpt export declares beside config.json, as a quantization_config."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path}: cannot read: {e}") from e
    quant = data.get("quantization") if isinstance(data, dict) else None
    return {"quant_method": "modelopt", **(quant if isinstance(quant, dict) else {})}


def config_json_schema() -> dict[str, Any]:
    return TypeAdapter(DeepseekConfig).json_schema()
