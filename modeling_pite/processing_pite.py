"""PiteProcessor: tokenizer + video processor + the Vicuna v1 conversation template.

Each `<video>` placeholder in the text becomes F video tokens, one per frame (F = `num_frames`, or 1 for
an image), which the model replaces with the adapted CLIP embeddings. Videos may be given as files,
frames, or as precomputed CLIP features (`video_features`, see `feature_extraction.py`).
"""

from __future__ import annotations

import torch
from transformers.feature_extraction_utils import BatchFeature
from transformers.processing_utils import ProcessorMixin
from transformers.video_processing_utils import VideoProcessorMixin

from .temporal import parse_frame_span
from .video_processing_pite import PiteVideoProcessor

__all__ = ["PiteProcessor"]

VICUNA_SYSTEM_PROMPT = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)

# Vicuna v1 ("sep_style TWO"): "{system} USER: {query} ASSISTANT: {answer}</s>USER: ...". A video block
# renders as "<video>\n". The trained (generation) tokens are everything after the generation prompt
# "ASSISTANT:", its separating space included: a tokenizer may make that space a token of its own (Llama's
# "▁" before a digit), and a model never trained to emit it cannot start such an answer.
CHAT_TEMPLATE = (
    "{%- set ns = namespace(system='" + VICUNA_SYSTEM_PROMPT.replace("'", "\\'") + "') -%}"
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- set content = messages[0]['content'] -%}"
    "{%- set ns.system = content if content is string else content | selectattr('type', 'equalto', 'text')"
    " | map(attribute='text') | join(' ') -%}"
    "{%- set messages = messages[1:] -%}"
    "{%- endif -%}"
    "{{- ns.system + ' ' -}}"
    "{%- for message in messages -%}"
    "{%- if message['content'] is string -%}{%- set text = message['content'] -%}"
    "{%- else -%}{%- set parts = namespace(text='') -%}"
    "{%- for block in message['content'] -%}"
    "{%- if block['type'] == 'video' -%}{%- set parts.text = parts.text + '<video>\\n' -%}"
    "{%- elif block['type'] == 'text' -%}{%- set parts.text = parts.text + block['text'] -%}{%- endif -%}"
    "{%- endfor -%}{%- set text = parts.text -%}{%- endif -%}"
    "{%- if message['role'] == 'user' -%}{{- 'USER: ' + text + ' ' -}}"
    "{%- elif message['role'] == 'assistant' -%}{{- 'ASSISTANT:' -}}"
    "{%- generation -%}{{- ' ' + text + eos_token -}}{%- endgeneration -%}"
    "{%- else -%}{{- raise_exception('Vicuna v1 knows the roles system, user and assistant, got ' + message['role']) -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- 'ASSISTANT:' -}}{%- endif -%}"
)


class _PrecomputedFeatures(list):
    """Marks `[F, D]` feature tensors given instead of videos, so the video processor is skipped."""


class PiteProcessor(ProcessorMixin):
    r"""Turns text with `<video>` placeholders plus videos into PiTe's model inputs.

    Args:
        video_processor ([`PiteVideoProcessor`]): frames -> `pixel_values_videos`.
        tokenizer: a Llama/Vicuna tokenizer that knows `video_token` as a special token.
        chat_template (`str`, *optional*): defaults to Vicuna v1 with PiTe's system prompt.
        video_token (`str`, *optional*): the placeholder, `"<video>"` unless the tokenizer names another.
    """

    text_kwargs = {"return_tensors": "pt"}
    videos_kwargs = {"return_tensors": "pt"}

    def __init__(self, video_processor=None, tokenizer=None, chat_template=None, video_token="<video>", **kwargs):
        self.video_token = getattr(tokenizer, "video_token", None) or video_token
        self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
        if self.video_token_id is None or self.video_token_id == tokenizer.unk_token_id:
            raise ValueError(
                f"The tokenizer does not know the video token {self.video_token!r}: add it as a special token."
            )
        super().__init__(video_processor, tokenizer, chat_template=chat_template or CHAT_TEMPLATE, **kwargs)

    def check_argument_for_proper_class(self, argument_name, argument):
        # transformers resolves the video processor's base class through mappings that need torchvision
        if argument_name == "video_processor":
            if not isinstance(argument, VideoProcessorMixin):
                raise TypeError(f"video_processor must be a VideoProcessorMixin, got {type(argument).__name__}")
            return VideoProcessorMixin
        return super().check_argument_for_proper_class(argument_name, argument)

    @classmethod
    def _get_arguments_from_pretrained(cls, pretrained_model_name_or_path, processor_dict=None, **kwargs):
        # AutoVideoProcessor.from_pretrained needs torchvision; our video processor loads itself
        subfolder = kwargs.pop("subfolder", "")
        video_processor = PiteVideoProcessor.from_pretrained(
            pretrained_model_name_or_path, subfolder=subfolder, **kwargs
        )
        tokenizer = cls._load_tokenizer_from_pretrained(
            "tokenizer", pretrained_model_name_or_path, subfolder=subfolder, **kwargs
        )
        return [video_processor, tokenizer]

    def __call__(self, text=None, videos=None, video_features=None, **kwargs) -> BatchFeature:
        """Tokenize `text`, expanding each `<video>` to one token per frame of the matching video.

        `videos` go through the video processor (-> `pixel_values_videos`); `video_features`
        (`[Bv, F, D]` tensor or list of `[F, D]`) are passed through as `video_features` instead.
        """
        if video_features is not None:
            if videos is not None:
                raise ValueError("Pass either `videos` or `video_features`, not both.")
            if isinstance(video_features, torch.Tensor) and video_features.ndim == 2:
                video_features = [video_features]  # one video
            videos = _PrecomputedFeatures(torch.as_tensor(f) for f in video_features)
        return super().__call__(text=text, videos=videos, **kwargs)

    def validate_inputs(self, images=None, text=None, videos=None, audio=None, **kwargs):
        if images is not None or audio is not None:
            raise ValueError("PiteProcessor takes text and videos only; pass an image as a one-frame video.")
        if text is None and videos is None:
            raise ValueError("PiteProcessor needs `text`, `videos` or both.")
        if text is None:
            return
        if not isinstance(text, list) or not all(isinstance(t, str) for t in text):
            raise ValueError("`text` must be a string or a list of strings.")
        num_placeholders = sum(t.count(self.video_token) for t in text)
        num_videos = 0 if videos is None else len(self._video_list(videos))
        if num_placeholders != num_videos:
            raise ValueError(
                f"The text holds {num_placeholders} {self.video_token} placeholder(s) but {num_videos} video(s) were "
                f"given: each video needs exactly one {self.video_token} in the text."
            )

    def _video_list(self, videos) -> list:
        return videos if isinstance(videos, _PrecomputedFeatures) else self.video_processor.make_video_list(videos)

    def _process_videos(self, videos, **kwargs):
        if isinstance(videos, _PrecomputedFeatures):
            features = {"video_features": _stack_or_list(list(videos))}
            return features, [self.video_token * len(f) for f in videos]
        return super()._process_videos(self.video_processor.make_video_list(videos), **kwargs)

    def replace_video_token(self, video_inputs: dict, video_idx: int, **kwargs) -> str:
        return self.video_token * len(video_inputs["pixel_values_videos"][video_idx])

    def post_process_video_text_to_text(self, generated_ids, skip_special_tokens: bool = True, **kwargs) -> list[str]:
        """Decode generated ids (new tokens only) to stripped answers."""
        texts = self.tokenizer.batch_decode(generated_ids, skip_special_tokens=skip_special_tokens, **kwargs)
        return [t.strip() for t in texts]

    @staticmethod
    def post_process_grounding(answers: list[str]) -> list[tuple[int, int] | None]:
        """The first "NN to NN" frame span of each answer (None when there is none), VTimeLLM's parse."""
        return [parse_frame_span(answer) for answer in answers]

    @property
    def model_input_names(self) -> list[str]:
        return [*self.tokenizer.model_input_names, "pixel_values_videos", "video_features"]


def _stack_or_list(features: list[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
    return torch.stack(features) if len({f.shape for f in features}) == 1 else features
