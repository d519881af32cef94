"""The trajectory annotation pipeline (PiTe-143k style): captions + videos -> stage-2 trajectory records.

caption -> noun phrases (`phrases`) -> mask on the event's first frame (`grounding`) -> point tracks
(`tracking`) -> k-means++ keypoint trajectories at the N sampled frames (`keypoints`), orchestrated with
resumable sharded parquet output by `pipeline`, fed by `manifest` and checked visually with `preview`.
"""

from .manifest import read_manifest
from .pipeline import AnnotationConfig, Annotator, run_annotation

__all__ = ["AnnotationConfig", "Annotator", "read_manifest", "run_annotation"]
