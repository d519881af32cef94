"""PyTorch PiTe: a video LLM that also regresses where the objects it talks about are, frame by frame.

Layout (as transformers' video VLMs): `PiteModel` = frozen CLIP vision tower (one projected CLS token per
frame) + linear visual adapter + decoder language model; `PiteForConditionalGeneration` adds `lm_head` and
the two coordinate heads that read the same last hidden state. Unlike transformers' convention, `AutoModel`
maps to `PiteForConditionalGeneration`: PiTe's users load it with `AutoModel.from_pretrained` and expect the
heads (`PiteModel` stays the importable base model).

This file is copied next to the weights by `save_pretrained` (trust_remote_code loading), so it imports
nothing but torch, transformers and `.configuration_pite`.
"""

from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoModel, CLIPVisionModelWithProjection
from transformers.cache_utils import Cache
from transformers.generation import GenerationMixin
from transformers.modeling_outputs import (
    BaseModelOutputWithPooling,
    MultimodalBaseModelOutputWithPast,
    MultimodalCausalLMOutputWithPast,
)
from transformers.modeling_utils import PreTrainedModel, slice_logits_to_keep
from transformers.utils import is_flash_attn_2_available
from transformers.utils.deprecation import deprecate_kwarg
from transformers.utils.generic import can_return_tuple

from .configuration_pite import PiteConfig

# Written into `config.json` on save so every Auto class loads the folder with `trust_remote_code=True`.
# `AutoModel` gives the full model with its heads, as the in-process registration does (see `__init__.py`).
AUTO_MAP = {
    "AutoConfig": "configuration_pite.PiteConfig",
    "AutoModel": "modeling_pite.PiteForConditionalGeneration",
    "AutoModelForImageTextToText": "modeling_pite.PiteForConditionalGeneration",
    "AutoModelForMultimodalLM": "modeling_pite.PiteForConditionalGeneration",
}

NO_TARGET = -1.0


class _VideoHiddenStates:
    @property
    def video_hidden_states(self) -> torch.Tensor | None:
        """The adapter outputs that replaced the `<video>` tokens, `[Bv, F, hidden_size]`."""
        return None if self.video_outputs is None else self.video_outputs.pooler_output


@dataclass
class PiteModelOutputWithPast(_VideoHiddenStates, MultimodalBaseModelOutputWithPast):
    r"""`PiteModel`'s output. `video_outputs.pooler_output` holds the adapter outputs `[Bv, F, hidden]` and
    `video_outputs.last_hidden_state` the frame features `[Bv, F, vision_feature_dim]` they came from."""


@dataclass
class PiteCausalLMOutputWithPast(_VideoHiddenStates, MultimodalCausalLMOutputWithPast):
    r"""`PiteForConditionalGeneration`'s output.

    loss (`torch.FloatTensor` of shape `()`, *optional*):
        `lm_loss + coord_loss_weight * (localization_loss + trajectory_loss)`, over the terms whose targets
        were given.
    lm_loss, localization_loss, trajectory_loss (`torch.FloatTensor` of shape `()`, *optional*):
        The terms as they enter `loss` (before `coord_loss_weight`).
    localizations (`torch.FloatTensor` of shape `(batch_size, kept_positions, 2)`):
        (x, y) in [0, 1] regressed from each position's hidden state (for the *next* token).
    trajectories (`torch.FloatTensor` of shape `(batch_size, kept_positions, P, num_frames, 2)`):
        P point trajectories over the video's frames, from each position's hidden state (for the *next* token).
    """

    lm_loss: torch.FloatTensor | None = None
    localization_loss: torch.FloatTensor | None = None
    trajectory_loss: torch.FloatTensor | None = None
    localizations: torch.FloatTensor | None = None
    trajectories: torch.FloatTensor | None = None


def default_attn_implementation() -> str:
    """flash-attention 2 where it can run (CUDA + the `flash_attn` package), else SDPA."""
    return "flash_attention_2" if torch.cuda.is_available() and is_flash_attn_2_available() else "sdpa"


def count_coordinate_items(targets: torch.Tensor, masked: bool) -> torch.Tensor:
    """How many coordinate values of token-aligned `targets` `[B, L, ...]` the L1 averages over.

    Sum this over every micro-batch (and process) of an optimizer step and pass it as
    `num_localization_items_in_batch` / `num_trajectory_items_in_batch` for an exact mean under gradient
    accumulation, as `num_items_in_batch` does for cross-entropy.
    """
    shifted = targets[:, 1:]
    return (shifted != NO_TARGET).sum() if masked else torch.tensor(shifted.numel(), device=targets.device)


class PitePreTrainedModel(PreTrainedModel):
    """Shared flags and hooks: attention backend chosen per machine, `auto_map` for trust_remote_code."""

    config: PiteConfig
    base_model_prefix = "model"
    input_modalities = ("video", "text")
    supports_gradient_checkpointing = True
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_compile_fullgraph = False  # data-dependent placeholder checks

    def _check_and_adjust_attn_implementation(
        self, attn_implementation: str | None, is_init_check: bool = False, allow_all_kernels: bool = False
    ) -> str:
        # Unset (the user asked for nothing) -> the fastest backend this machine can run; an explicit choice wins.
        if attn_implementation is None:
            attn_implementation = default_attn_implementation()
        return super()._check_and_adjust_attn_implementation(attn_implementation, is_init_check, allow_all_kernels)

    def save_pretrained(self, save_directory, *args, **kwargs):
        """As `PreTrainedModel.save_pretrained`; a registered model also maps every Auto class in `auto_map`."""
        if self.is_remote_code():
            self.config.auto_map = {**(getattr(self.config, "auto_map", None) or {}), **AUTO_MAP}
        return super().save_pretrained(save_directory, *args, **kwargs)


class PiteModel(PitePreTrainedModel):
    """Vision tower + visual adapter + language model, without any head."""

    def __init__(self, config: PiteConfig):
        super().__init__(config)
        # sub-models left without an attention backend get the one chosen for the whole model
        for sub_config in (config.vision_config, config.text_config):
            if sub_config._attn_implementation is None:
                sub_config._attn_implementation = config._attn_implementation
        self.vision_tower = CLIPVisionModelWithProjection._from_config(config.vision_config)
        self.visual_adapter = nn.Linear(config.vision_feature_dim, config.text_config.hidden_size)
        self.language_model = AutoModel.from_config(config.text_config)
        if config.freeze_vision_tower:
            self.vision_tower.requires_grad_(False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def _check_shape(self, name: str, shape: torch.Size, feature_shape: tuple[int, ...], any_frames: bool = False):
        frames = "num_frames" if any_frames else f"{self.config.num_frames} (or 1 for an image)"
        expected = f"[num_videos, {frames}, {', '.join(map(str, feature_shape))}]"
        frames_ok = any_frames or (len(shape) > 1 and shape[1] in (self.config.num_frames, 1))
        if len(shape) != 2 + len(feature_shape) or tuple(shape[2:]) != feature_shape or not frames_ok:
            raise ValueError(f"{name}: expected shape {expected}, got {list(shape)}")

    def _pixel_shape(self) -> tuple[int, int, int]:
        vision = self.config.vision_config
        size = vision.image_size
        return (vision.num_channels, *(size if isinstance(size, (list, tuple)) else (size, size)))

    def get_frame_features(self, pixel_values_videos: torch.FloatTensor) -> torch.FloatTensor:
        """CLIP `image_embeds` of every frame, `[Bv, F, 3, H, W]` -> `[Bv, F, vision_feature_dim]`, any F.

        These are what feature caches store and what `video_features` takes (a cache may encode a video in
        chunks of frames). The tower runs without autograd while it is frozen.
        """
        self._check_shape("pixel_values_videos", pixel_values_videos.shape, self._pixel_shape(), any_frames=True)
        num_videos, num_frames = pixel_values_videos.shape[:2]
        pixel_values = pixel_values_videos.flatten(0, 1).to(self.vision_tower.dtype)
        trainable = any(param.requires_grad for param in self.vision_tower.parameters())
        with torch.set_grad_enabled(torch.is_grad_enabled() and trainable):
            image_embeds = self.vision_tower(pixel_values=pixel_values).image_embeds
        return image_embeds.view(num_videos, num_frames, -1)

    @can_return_tuple
    def get_video_features(self, pixel_values_videos: torch.FloatTensor, **kwargs) -> BaseModelOutputWithPooling:
        """Frames `[Bv, F, 3, H, W]` -> LLM-ready video tokens (see `adapt_video_features`)."""
        self._check_shape("pixel_values_videos", pixel_values_videos.shape, self._pixel_shape())
        return self.adapt_video_features(self.get_frame_features(pixel_values_videos))

    def adapt_video_features(self, video_features: torch.FloatTensor) -> BaseModelOutputWithPooling:
        """Frame features `[Bv, F, vision_feature_dim]` -> `last_hidden_state` = those features and
        `pooler_output` = the adapter's outputs `[Bv, F, hidden_size]` (what replaces the `<video>` tokens)."""
        self._check_shape("video_features", video_features.shape, (self.config.vision_feature_dim,))
        adapted = self.visual_adapter(video_features.to(self.visual_adapter.weight.dtype))
        return BaseModelOutputWithPooling(last_hidden_state=video_features, pooler_output=adapted)

    def get_placeholder_mask(self, input_ids: torch.LongTensor | None, inputs_embeds: torch.Tensor) -> torch.Tensor:
        """`[B, L]` True where the `<video>` placeholder sits."""
        if input_ids is not None:
            return input_ids == self.config.video_token_id
        video_embedding = self.get_input_embeddings()(
            torch.tensor(self.config.video_token_id, dtype=torch.long, device=inputs_embeds.device)
        )
        return (inputs_embeds == video_embedding).all(-1)

    @can_return_tuple
    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values_videos: torch.FloatTensor | None = None,
        video_features: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        use_cache: bool | None = None,
        mm_encoder_outputs: dict[str, BaseModelOutputWithPooling] | None = None,
        **kwargs,
    ) -> PiteModelOutputWithPast:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)

        mm_encoder_outputs = dict(mm_encoder_outputs or {})
        given = [name for name, value in (("pixel_values_videos", pixel_values_videos), ("video_features", video_features),
                 ("mm_encoder_outputs['video']", mm_encoder_outputs.get("video"))) if value is not None]  # fmt: skip
        if len(given) > 1:
            raise ValueError(f"pass one video input, got {' and '.join(given)}")
        if pixel_values_videos is not None:
            mm_encoder_outputs["video"] = self.get_video_features(pixel_values_videos)
        elif video_features is not None:
            mm_encoder_outputs["video"] = self.adapt_video_features(video_features)

        # the placeholders are counted (a host sync) only where there is a video to place or a missing one to report
        video_outputs = mm_encoder_outputs.get("video")
        if video_outputs is not None:
            video_mask = self.get_placeholder_mask(input_ids, inputs_embeds)
            tokens = video_outputs.pooler_output
            expected, got = tokens.shape[0] * tokens.shape[1], int(video_mask.sum())
            if got != expected:
                raise ValueError(
                    f"input_ids: expected {expected} <video> tokens (id {self.config.video_token_id}) for "
                    f"{tokens.shape[0]} video(s) x {tokens.shape[1]} frame(s), got {got}"
                )
            mask = video_mask.unsqueeze(-1).expand_as(inputs_embeds)
            inputs_embeds = inputs_embeds.masked_scatter(mask, tokens.to(inputs_embeds.device, inputs_embeds.dtype))
        elif (cache is None or cache.get_seq_length() == 0) and (
            got := int(self.get_placeholder_mask(input_ids, inputs_embeds).sum())
        ):
            raise ValueError(
                f"input_ids: got {got} <video> tokens but neither pixel_values_videos nor video_features to fill them"
            )

        outputs = self.language_model(
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        return PiteModelOutputWithPast(
            last_hidden_state=outputs.last_hidden_state,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            video_outputs=video_outputs,
        )


class PiteForConditionalGeneration(PitePreTrainedModel, GenerationMixin):
    """PiTe with its three heads on the last hidden state: `lm_head`, localization (x, y) and trajectories."""

    _tied_weights_keys = {"lm_head.weight": "model.language_model.embed_tokens.weight"}

    def __init__(self, config: PiteConfig):
        super().__init__(config)
        hidden_size = config.text_config.hidden_size
        self.model = PiteModel(config)
        self.lm_head = nn.Linear(hidden_size, config.text_config.vocab_size, bias=False)
        self.localization_head = nn.Linear(hidden_size, 2)
        self.trajectory_head = nn.Linear(hidden_size, config.num_trajectory_points * config.num_frames * 2)
        self.post_init()
        # the placeholder is input only; generating it would ask for a video that is not there
        self.generation_config.suppress_tokens = [config.video_token_id]

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def get_frame_features(self, pixel_values_videos: torch.FloatTensor) -> torch.FloatTensor:
        return self.model.get_frame_features(pixel_values_videos)

    def get_video_features(self, pixel_values_videos: torch.FloatTensor, **kwargs) -> BaseModelOutputWithPooling:
        return self.model.get_video_features(pixel_values_videos, **kwargs)

    @torch.no_grad()
    def init_trajectory_head_from_localization(self) -> None:
        """PiTe's stage-2 initialisation: every (point, frame) output starts as the stage-1 (x, y) regressor."""
        repeats = self.config.num_trajectory_points * self.config.num_frames
        self.trajectory_head.weight.copy_(self.localization_head.weight.repeat(repeats, 1))
        self.trajectory_head.bias.copy_(self.localization_head.bias.repeat(repeats))

    def _trajectories(self, hidden_states: torch.Tensor) -> torch.Tensor:
        points, frames = self.config.num_trajectory_points, self.config.num_frames
        return self.trajectory_head(hidden_states).unflatten(-1, (points, frames, 2))

    def coordinate_loss(
        self,
        head,
        hidden_states: torch.Tensor,
        targets: torch.Tensor,
        labels: torch.Tensor | None = None,
        num_items: torch.Tensor | int | None = None,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor:
        """Next-token-shifted L1 of `head(hidden_states)` against token-aligned `targets` `[B, L, ...]`.

        Hidden state i-1 regresses token i's coordinates. Masked (`config.coord_loss_masked`): mean of
        |pred - target| over the coordinate values that are not -1, and the head only runs at positions
        holding one. Unmasked (the original release): mean over every value of every position, -1 included.

        Gradient accumulation: with `num_items` (the `count_coordinate_items` total of the whole optimizer
        step) the micro-batch returns `sum / num_items`, so the micro-batches add up to the exact mean. With
        only Trainer's `num_items_in_batch` (label tokens of the step) the micro-batch mean is weighted by its
        share of label tokens, `mean * local_label_tokens / num_items_in_batch`, matching how cross-entropy
        is scaled; the weights add up to 1 over the step.
        """
        shift_targets = targets[:, 1:].to(device=hidden_states.device, dtype=torch.float32)
        if self.config.coord_loss_masked:
            valid = shift_targets != NO_TARGET
            batch_index, position = valid.flatten(2).any(-1).nonzero(as_tuple=True)
            # index_select on the flat hidden states: its backward scatters into a single [B*L, H] buffer, where
            # boolean indexing of the shifted view would allocate two
            rows = batch_index * hidden_states.shape[1] + position
            row_targets = shift_targets[batch_index, position]
            predictions = head(hidden_states.flatten(0, 1).index_select(0, rows)).float().view_as(row_targets)
            total = ((predictions - row_targets).abs() * valid[batch_index, position]).sum()
            count = valid.sum()
        else:
            predictions = head(hidden_states[:, :-1]).float().view_as(shift_targets)
            total = (predictions - shift_targets).abs().sum()
            count = shift_targets.numel()
        if num_items is not None:
            return total / num_items
        mean = total / torch.as_tensor(count, device=total.device).clamp(min=1)
        if num_items_in_batch is not None and labels is not None:
            local_label_tokens = (labels[:, 1:] != -100).sum().to(mean.device)
            mean = mean * local_label_tokens / num_items_in_batch
        return mean

    @can_return_tuple
    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values_videos: torch.FloatTensor | None = None,
        video_features: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        localization_targets: torch.FloatTensor | None = None,
        trajectory_targets: torch.FloatTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        mm_encoder_outputs: dict[str, BaseModelOutputWithPooling] | None = None,
        num_localization_items_in_batch: torch.Tensor | int | None = None,
        num_trajectory_items_in_batch: torch.Tensor | int | None = None,
        **kwargs,
    ) -> PiteCausalLMOutputWithPast:
        r"""
        pixel_values_videos (`torch.FloatTensor` of shape `(num_videos, F, 3, H, W)`, *optional*):
            Frames; F is `config.num_frames`, or 1 for an image (stage 1).
        video_features (`torch.FloatTensor` of shape `(num_videos, F, vision_feature_dim)`, *optional*):
            Precomputed CLIP `image_embeds` per frame (before the adapter); the tower does not run.
        labels (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
            Token ids for cross-entropy, -100 ignored; shifted inside.
        localization_targets (`torch.FloatTensor` of shape `(batch_size, sequence_length, 2)`, *optional*):
            (x, y) of token i at position i, -1 = no target; enables the stage-1 term.
        trajectory_targets (`torch.FloatTensor` of shape `(batch_size, sequence_length, P, num_frames, 2)`, *optional*):
            Trajectories of token i at position i, -1 = no target; enables the stage-2 term.
        num_localization_items_in_batch / num_trajectory_items_in_batch (*optional*):
            `count_coordinate_items` summed over the optimizer step, for exact gradient accumulation.

        The `<video>` token must appear `num_videos * F` times in `input_ids`, filled in order.
        """
        outputs = self.model(
            input_ids=input_ids,
            pixel_values_videos=pixel_values_videos,
            video_features=video_features,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            mm_encoder_outputs=mm_encoder_outputs,
            **kwargs,
        )
        hidden_states = outputs.last_hidden_state
        kept = slice_logits_to_keep(hidden_states, logits_to_keep)
        logits = self.lm_head(kept)
        # Both coordinate outputs cover every kept position, in training too: at L=2048 and hidden 4096 the
        # trajectory head is ~0.01% of a 7B step's FLOPs and 5 MB (benchmarks/bench_generate.py), no switch needed.
        localizations = self.localization_head(kept)
        trajectories = self._trajectories(kept)

        num_items_in_batch = kwargs.get("num_items_in_batch")
        lm_loss = localization_loss = trajectory_loss = None
        if labels is not None:
            lm_loss = self.loss_function(
                logits=logits, labels=labels, vocab_size=self.config.text_config.vocab_size, **kwargs
            )
        if localization_targets is not None:
            localization_loss = self.coordinate_loss(
                self.localization_head, hidden_states, localization_targets, labels,
                num_localization_items_in_batch, num_items_in_batch,
            )  # fmt: skip
        if trajectory_targets is not None:
            trajectory_loss = self.coordinate_loss(
                self.trajectory_head, hidden_states, trajectory_targets, labels,
                num_trajectory_items_in_batch, num_items_in_batch,
            )  # fmt: skip
        weight = self.config.coord_loss_weight
        scaled = [term * scale for term, scale in ((lm_loss, 1.0), (localization_loss, weight), (trajectory_loss, weight))
                  if term is not None]  # fmt: skip
        loss = torch.stack(scaled).sum() if scaled else None

        return PiteCausalLMOutputWithPast(
            loss=loss,
            lm_loss=lm_loss,
            localization_loss=localization_loss,
            trajectory_loss=trajectory_loss,
            logits=logits,
            localizations=localizations,
            trajectories=trajectories,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            video_outputs=outputs.video_outputs,
        )

    def prepare_inputs_for_generation(self, *args, is_first_iteration: bool | None = False, **kwargs):
        """Precomputed `video_features` feed the prefill only, like pixel values: the cache holds them after."""
        model_inputs = super().prepare_inputs_for_generation(*args, is_first_iteration=is_first_iteration, **kwargs)
        if not is_first_iteration and model_inputs.get("use_cache", True):
            model_inputs.pop("video_features", None)
        return model_inputs


__all__ = ["PitePreTrainedModel", "PiteModel", "PiteForConditionalGeneration"]
