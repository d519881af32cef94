"""PiteVideoProcessor: videos (files, frame arrays, PIL images) -> CLIP-normalised `pixel_values_videos`.

PiTe feeds CLIP ViT-L/14 one frame at a time, so each sampled frame gets exactly the CLIP image
preprocessing (shortest edge 224 bicubic, center crop 224, rescale, OpenAI mean/std). The operations come
from transformers' PIL backend, the same code `CLIPImageProcessorPil` runs, so no torchvision is needed.
Files are decoded with our PyAV sampler (`video_io.sample_video`), never whole.
"""

from __future__ import annotations

import os

import numpy as np
from huggingface_hub.dataclasses import validate_typed_dict
from transformers.feature_extraction_utils import BatchFeature
from transformers.image_processing_backends import PilBackend
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, PILImageResampling
from transformers.processing_utils import Unpack, VideosKwargs
from transformers.video_processing_utils import VideoProcessorMixin
from transformers.video_utils import make_batched_videos

from .video_io import VideoMetadata, sample_frame_indices, sample_video

__all__ = ["PiteVideoProcessor"]


class PiteVideoProcessor(VideoProcessorMixin, PilBackend):
    r"""CLIP preprocessing of `num_frames` uniformly sampled frames per video.

    Inputs: a path, a `[F, H, W, 3]` array or tensor, a list of frames, a PIL image or `[H, W, 3]` array
    (an image is a one-frame video, PiTe's stage 1), or a list of those. Files and frame arrays are sampled
    to `num_frames` frames with PiTe's `round(linspace(0, T - 1, N))` (short videos repeat frames) when
    `do_sample_frames` is set; a single image stays one frame.

    Output: `pixel_values_videos` of shape `[num_videos, F, 3, crop_height, crop_width]`.
    """

    resample = PILImageResampling.BICUBIC
    image_mean = OPENAI_CLIP_MEAN
    image_std = OPENAI_CLIP_STD
    size = {"shortest_edge": 224}
    default_to_square = False
    crop_size = {"height": 224, "width": 224}
    do_resize = True
    do_center_crop = True
    do_rescale = True
    do_normalize = True
    do_convert_rgb = True
    do_sample_frames = True
    num_frames = 100
    model_input_names = ["pixel_values_videos"]

    def __init__(self, **kwargs: Unpack[VideosKwargs]):
        super().__init__(**kwargs)

    @staticmethod
    def make_video_list(videos) -> list:
        """Videos as a flat list (paths as `str`), in the order their placeholders appear in the text."""
        if isinstance(videos, os.PathLike):
            videos = os.fspath(videos)
        elif isinstance(videos, (list, tuple)):
            videos = [os.fspath(v) if isinstance(v, os.PathLike) else v for v in videos]
        return make_batched_videos(videos)

    def load_video(self, video, num_frames: int | None) -> tuple[np.ndarray, VideoMetadata | None]:
        """One video as `[F, H, W, 3]` frames: decode a file, or sample an array's frames (images stay one frame)."""
        if isinstance(video, str):
            return sample_video(video, num_frames or self.num_frames)
        frames = np.asarray(video.numpy() if hasattr(video, "numpy") else video)
        if num_frames and len(frames) > 1:
            frames = frames[sample_frame_indices(len(frames), num_frames)]
        return frames, None

    def preprocess(self, videos, **kwargs: Unpack[VideosKwargs]) -> BatchFeature:
        validate_typed_dict(self.valid_kwargs, kwargs)
        unknown = set(kwargs) - set(self.valid_kwargs.__annotations__)
        if unknown:
            raise TypeError(f"{type(self).__name__} got unexpected keyword arguments {sorted(unknown)}")
        for name in self.valid_kwargs.__annotations__:
            kwargs.setdefault(name, getattr(self, name, None))

        num_frames = kwargs.pop("num_frames") if kwargs.pop("do_sample_frames") else None
        do_convert_rgb, input_data_format = kwargs.pop("do_convert_rgb"), kwargs.pop("input_data_format")
        return_metadata, return_tensors = kwargs.pop("return_metadata"), kwargs.pop("return_tensors")
        for unused in ("video_metadata", "fps", "device", "data_format"):
            kwargs.pop(unused)
        kwargs = self._standardize_kwargs(**kwargs)
        self._validate_preprocess_kwargs(**kwargs)

        pixel_values, metadata = [], []
        for video in self.make_video_list(videos):
            frames, video_metadata = self.load_video(video, num_frames)
            frames = [
                self.process_image(f, do_convert_rgb=do_convert_rgb, input_data_format=input_data_format)
                for f in frames
            ]
            processed = self._preprocess(images=frames, return_tensors=None, **kwargs)["pixel_values"]
            pixel_values.append(np.stack(processed))
            metadata.append(video_metadata)

        if return_tensors and len({v.shape for v in pixel_values}) > 1:
            shapes = sorted({tuple(v.shape) for v in pixel_values})
            raise ValueError(
                f"Videos in one batch must share frame count and size to form a tensor, got shapes {shapes}; "
                "pass images and videos in separate batches, or return_tensors=None."
            )
        data = {"pixel_values_videos": np.stack(pixel_values) if return_tensors else pixel_values}
        if return_metadata:
            data["video_metadata"] = metadata
        return BatchFeature(data, tensor_type=return_tensors, skip_tensor_conversion=["video_metadata"])
