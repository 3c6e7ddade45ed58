"""How a config file was read (`ConfigReading`): the record every config model carries.

Apart from `config_layouts`, which decides it, so that the config models (V2/V3 in
`config`, V4 in `v4.config`) can carry it without importing the recognisers.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# a registered family's name (`families.FAMILIES`): the registry, not this module, lists them
Family = str
LayoutName = Literal["hub", "transformers-5", "inference"]


class ConfigReading(BaseModel):
    """How a config file was read: what it is, why, and what was filled in."""

    model_config = ConfigDict(extra="forbid", defer_build=True)
    architecture: Family = Field(description="The architecture whose tensor plan applies (a "
                                             "registered family's name)")
    recognised_by: str = Field(description="Why, e.g. 'architectures: DeepseekV3ForCausalLM; "
                                           "model_type kimi_k2'")
    original_model_type: str | None = Field(description="model_type as written in the file")
    layout: LayoutName
    loader: str = Field(description="Whose defaults fill absent keys: one of DeepSeek's loaders "
                                    "(config_defaults) or a derived family's own")
    wrapper_key: str | None = Field(None, description="text_config / language_config, if wrapped")
    wrapper_model_type: str | None = Field(None, description="model_type of the wrapper, if any")
    tensor_prefix: str = Field("", description="Prefix of the language-model tensor names")
    outside_plan: list[str] = Field(
        default_factory=list, description="Wrapper parts (other towers) the plan does not cover")
    defaulted: dict[str, Any] = Field(
        default_factory=dict, description="Absent (or null) keys filled with the loader's value")
    quantization_scheme: str | None = Field(None, description="quant_method other than block FP8")
    leaves_out: list[str] = Field(default_factory=list,
                                  description="What this layout cannot express")
    warnings: list[str] = Field(default_factory=list,
                                description="Unknown keys close to known ones ('did you mean')")
    inconsistencies: list[str] = Field(
        default_factory=list,
        description="Routing/conversion problems, 'field: what'; validate reports them as "
                    "errors and writers refuse the config")
