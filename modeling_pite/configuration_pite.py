"""PiTe model configuration.

This file is copied next to the weights by `save_pretrained` (trust_remote_code loading), so it imports
nothing but transformers.
"""

import copy
from typing import Any, ClassVar

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig
from transformers.configuration_utils import PreTrainedConfig, SubConfigSpec

# CLIP ViT-L/14 at 224 px, the tower every published PiTe uses: one projected CLS token (768-d) per frame.
CLIP_VIT_L_14 = {
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "projection_dim": 768,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "patch_size": 14,
    "image_size": 224,
}

# Vicuna v1.5 (Llama 2 architecture). The vocabulary gets one extra entry, the `<video>` placeholder (id 32000).
_VICUNA_COMMON = {
    "vocab_size": 32001,
    "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-5,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 0,
    "tie_word_embeddings": False,
}
VICUNA_7B = {**_VICUNA_COMMON, "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
             "num_attention_heads": 32, "num_key_value_heads": 32}  # fmt: skip
VICUNA_13B = {**_VICUNA_COMMON, "hidden_size": 5120, "intermediate_size": 13824, "num_hidden_layers": 40,
              "num_attention_heads": 40, "num_key_value_heads": 40}  # fmt: skip

PRESETS: dict[str, dict[str, Any]] = {
    "pite-7b": {"vision_config": CLIP_VIT_L_14, "text_config": VICUNA_7B, "video_token_id": 32000},
    "pite-13b": {"vision_config": CLIP_VIT_L_14, "text_config": VICUNA_13B, "video_token_id": 32000},
    # Tests and the demo: matches `processing.tokenizer.build_tokenizer(..., vocab_size=256)` (`<video>` = 3).
    "tiny": {
        "vision_config": {
            "hidden_size": 32,
            "intermediate_size": 64,
            "projection_dim": 24,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "patch_size": 16,
            "image_size": 32,
        },  # fmt: skip
        "text_config": {
            "vocab_size": 256,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 512,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "pad_token_id": 0,
        },  # fmt: skip
        "vision_feature_dim": 24,
        "num_frames": 8,
        "video_token_id": 3,
    },
}


@strict
class PiteConfig(PreTrainedConfig):
    r"""Configuration of a PiTe model: CLIP vision tower + linear adapter + decoder LM + localization and trajectory heads.

    Args:
        vision_config (`dict` or `PreTrainedConfig`, *optional*):
            The CLIP vision tower (`clip_vision_model`); defaults to ViT-L/14 at 224 px.
        text_config (`dict` or `PreTrainedConfig`, *optional*):
            The language model; any decoder `AutoModel.from_config` builds. Defaults to Vicuna-7B's Llama shape.
        vision_feature_dim (`int`, defaults to 768):
            Size of one frame's feature, the tower's projected CLS embedding (`image_embeds`), i.e.
            `vision_config.projection_dim`. Precomputed `video_features` must have this last dimension.
        num_frames (`int`, defaults to 100):
            Frames per video, each one visual token; trajectories have one point per frame.
        num_trajectory_points (`int`, defaults to 3):
            Keypoints per noun phrase (P); the trajectory head predicts P x num_frames x (x, y).
        video_token_id (`int`, defaults to 32000):
            Placeholder token that the frame features replace.
        coord_loss_weight (`float`, defaults to 1.0):
            lambda, the weight of the localization / trajectory L1 next to cross-entropy (not published).
        coord_loss_masked (`bool`, defaults to `True`):
            Average the coordinate L1 over real targets only (`-1` = no target is ignored). `False`
            reproduces the original release, which averages over every position, `-1` targets and padding
            included, and so trains the heads to predict -1 for text that names no object.
        freeze_vision_tower (`bool`, defaults to `True`):
            PiTe never trains CLIP; its parameters get `requires_grad=False` at construction.
        tie_word_embeddings (`bool`, defaults to `False`):
            Vicuna has separate input and output embeddings.
    """

    model_type = "pite"
    sub_configs_defaults: ClassVar[dict[str, SubConfigSpec]] = {
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="llama", init_kwargs=dict(VICUNA_7B)),
        "vision_config": SubConfigSpec(
            config_class=AutoConfig, model_type="clip_vision_model", init_kwargs=dict(CLIP_VIT_L_14)
        ),
    }

    vision_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    vision_feature_dim: int = 768
    num_frames: int = 100
    num_trajectory_points: int = 3
    video_token_id: int = 32000
    coord_loss_weight: float = 1.0
    coord_loss_masked: bool = True
    freeze_vision_tower: bool = True
    tie_word_embeddings: bool = False

    def validate_architecture(self) -> None:
        """The adapter reads `image_embeds`, so the feature size must be the tower's projection size."""
        super().validate_architecture()
        projection_dim = getattr(self.vision_config, "projection_dim", None)
        if projection_dim is not None and projection_dim != self.vision_feature_dim:
            raise ValueError(
                f"vision_feature_dim ({self.vision_feature_dim}) must equal vision_config.projection_dim "
                f"({projection_dim}): the adapter reads the tower's projected CLS embedding"
            )
        vocab_size = getattr(self.text_config, "vocab_size", None)
        if vocab_size is not None and not 0 <= self.video_token_id < vocab_size:
            raise ValueError(
                f"video_token_id ({self.video_token_id}) must be a token of the vocabulary (size {vocab_size})"
            )
        for name in ("num_frames", "num_trajectory_points"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "PiteConfig":
        """A published shape (`"pite-7b"`, `"pite-13b"`) or the test-sized `"tiny"`, with `overrides` on top.

        `vision_config` / `text_config` overrides given as dicts update the preset's sub-config fields.
        """
        if name not in PRESETS:
            raise ValueError(f"unknown PiTe preset {name!r}; expected one of {sorted(PRESETS)}")
        kwargs = copy.deepcopy(PRESETS[name])
        for key in ("vision_config", "text_config"):
            if isinstance(overrides.get(key), dict):
                kwargs[key].update(overrides.pop(key))
        kwargs.update(overrides)
        return cls(**kwargs)


__all__ = ["PiteConfig"]
