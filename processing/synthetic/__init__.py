"""A deterministic synthetic video world: textured shapes that appear, move, occlude and disappear.

Used by the demo and the tests as data with exact ground truth: point tracks and visibility
(`VideoSpec.point_track`, `VideoSpec.object_mask`), keypoint trajectories, event captions with noun
phrases, QA, Localized-Narratives-style image records and standard-format test splits.
`generate_world` writes all of it; `load_world` reads a written world back. See docs/synthetic_world.md.
"""

from .captions import Event, Phrase, QAItem, localized_narrative, reference_time, video_events, video_qa
from .generate import WorldManifest, generate_world, load_world, stage2_record
from .sampling import DIRECTIONS, frame_count, sample_image_spec, sample_video_spec
from .vision_pretraining import TowerPretrainingReport, pretrain_vision_tower, render_scenes
from .world import COLORS, SHAPES, ObjectSpec, VideoSpec, normalized_to_pixels, pixels_to_normalized

__all__ = [
    "COLORS",
    "DIRECTIONS",
    "SHAPES",
    "TowerPretrainingReport",
    "Event",
    "ObjectSpec",
    "Phrase",
    "QAItem",
    "VideoSpec",
    "WorldManifest",
    "frame_count",
    "generate_world",
    "load_world",
    "localized_narrative",
    "normalized_to_pixels",
    "pixels_to_normalized",
    "pretrain_vision_tower",
    "reference_time",
    "render_scenes",
    "sample_image_spec",
    "sample_video_spec",
    "stage2_record",
    "video_events",
    "video_qa",
]
