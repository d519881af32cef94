"""Grounding: a noun phrase -> the object's mask on the first frame of its event.

A grounder is called as `grounder(frame, phrase, spec=None, source_size=None) -> bool mask [H, W]` on
the frame the tracker starts from; an empty mask means "not found". Backends (chosen by name):

- "given" (`GivenMaskGrounder`): the manifest carries the mask with the phrase, as `{"png": path}`,
  `{"rle": {"size": [h, w], "counts": ...}}` (COCO RLE, list or compressed string), `{"polygon":
  [[x, y], ...] | [[[x, y], ...], ...]}` or `{"box": [x0, y0, x1, y1]}`; coordinates in pixels of the
  source video (`"normalized": true` for [0, 1]). Masks are rescaled to the working frame size.
- "color_shape" (`ColorShapeGrounder`): a colour + shape lexicon for the synthetic world: "the red
  circle" -> pixels of that hue (HSV thresholds), split into connected blobs, the blob whose outline
  best matches the shape. It looks only at the pixels, never at the generator's ground truth.
- "transformers" (`DetectorSegmenterGrounder`): open-vocabulary boxes from a local Grounding DINO or
  OWLv2 checkpoint, refined into a mask by a local SAM checkpoint. Weights are loaded from local
  paths (or a hub id the user has cached); nothing is downloaded by the tests.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
from PIL import Image

__all__ = [
    "GROUNDERS",
    "ColorShapeGrounder",
    "DetectorSegmenterGrounder",
    "GivenMaskGrounder",
    "Grounder",
    "build_grounder",
    "decode_rle",
    "mask_from_spec",
]


class Grounder(Protocol):
    def __call__(
        self,
        frame: np.ndarray,
        phrase: str,
        spec: Mapping[str, Any] | None = None,
        source_size: tuple[int, int] | None = None,
    ) -> np.ndarray: ...


def decode_rle(rle: Mapping[str, Any]) -> np.ndarray:
    """COCO run-length encoding (column-major; `counts` a list or the compressed string) -> bool `[h, w]`."""
    height, width = (int(v) for v in rle["size"])
    counts = rle["counts"]
    if isinstance(counts, (str, bytes)):
        counts = _uncompress_counts(counts.decode() if isinstance(counts, bytes) else counts)
    runs = np.asarray(counts, dtype=np.int64)
    if runs.sum() != height * width:
        raise ValueError(f"RLE counts sum to {int(runs.sum())} but size {height}x{width} has {height * width} pixels")
    values = np.arange(len(runs)) % 2 == 1  # runs alternate background, foreground, starting with background
    return np.repeat(values, runs).reshape(width, height).T


def _uncompress_counts(text: str) -> list[int]:
    """The LEB128-like string of pycocotools' `rleToString`: 5 bits per char, deltas from the run two back."""
    counts: list[int] = []
    position = 0
    while position < len(text):
        value, shift, more = 0, 0, True
        while more:
            chunk = ord(text[position]) - 48
            value |= (chunk & 0x1F) << (5 * shift)
            more = bool(chunk & 0x20)
            position += 1
            shift += 1
            if not more and chunk & 0x10:
                value |= -1 << (5 * shift)
        if len(counts) > 2:
            value += counts[-2]
        counts.append(value)
    return counts


def mask_from_spec(
    spec: Mapping[str, Any], frame_size: tuple[int, int], source_size: tuple[int, int] | None = None
) -> np.ndarray:
    """Rasterise one mask spec (see the module doc) at `frame_size` `(height, width)`."""
    height, width = frame_size
    source_h, source_w = source_size or frame_size
    if "png" in spec:
        path = Path(spec["png"])
        if not path.is_file():
            raise ValueError(f"mask file {path} not found")
        image = np.asarray(Image.open(path).convert("L"))
        return cv2.resize(image, (width, height), interpolation=cv2.INTER_NEAREST) > 0
    if "rle" in spec:
        rle = decode_rle(spec["rle"]).astype(np.uint8)
        return cv2.resize(rle, (width, height), interpolation=cv2.INTER_NEAREST) > 0
    unit = np.array([source_w, source_h], dtype=np.float64)
    scale = np.array([width, height], dtype=np.float64) / (1.0 if spec.get("normalized") else unit)
    mask = np.zeros((height, width), dtype=np.uint8)
    if "box" in spec:
        x0, y0, x1, y1 = (np.asarray(spec["box"], dtype=np.float64).reshape(2, 2) * scale).reshape(-1)
        mask[max(0, round(y0)) : round(y1), max(0, round(x0)) : round(x1)] = 1
        return mask > 0
    if "polygon" in spec:
        polygons = spec["polygon"]
        if polygons and np.ndim(polygons[0]) == 1:  # one polygon given as [[x, y], ...]
            polygons = [polygons]
        for polygon in polygons:
            points = np.round(np.asarray(polygon, dtype=np.float64).reshape(-1, 2) * scale).astype(np.int32)
            cv2.fillPoly(mask, [points], 1)
        return mask > 0
    raise ValueError(f"unknown mask spec with keys {sorted(spec)}; use one of png, rle, polygon, box")


class GivenMaskGrounder:
    """Masks that come with the data (the manifest's `"mask"` next to a phrase)."""

    def __call__(self, frame, phrase, spec=None, source_size=None) -> np.ndarray:
        if spec is None:
            raise ValueError(f"phrase {phrase!r} has no 'mask' in the manifest (the 'given' grounder needs one)")
        return mask_from_spec(spec, frame.shape[:2], source_size)


# Hue ranges in OpenCV's 0-179 scale; achromatic colours are matched on saturation/value instead.
_HUES = {
    "red": [(0, 10), (170, 179)],
    "orange": [(11, 22)],
    "yellow": [(23, 34)],
    "green": [(35, 85)],
    "cyan": [(86, 100)],
    "blue": [(101, 130)],
    "purple": [(131, 150)],
    "magenta": [(151, 169)],
    "pink": [(151, 169)],
}
_ACHROMATIC = {"white", "black", "gray", "grey"}
_SHAPES = {"circle", "disk", "disc", "ball", "square", "rectangle", "box", "triangle", "star", "ellipse", "oval"}


class ColorShapeGrounder:
    """Colour + shape lexicon segmentation, for scenes of flat or lightly textured coloured shapes.

    The colour word picks pixels by hue (saturation and value above `min_saturation`/`min_value`);
    morphology closes the texture's holes; blobs of touching shapes are also split at their distance-
    transform seeds (`split_touching`); among the blobs and parts the shape word picks the one whose
    outline fits best (circularity for round shapes, extent and solidity for the others).
    Without a shape word the largest blob is returned; without a colour word, nothing.
    """

    def __init__(
        self,
        min_saturation: int = 80,
        min_value: int = 60,
        min_area: int = 30,
        close_kernel: int = 5,
        split_ratio: float = 0.5,
    ):
        self.min_saturation, self.min_value, self.min_area = min_saturation, min_value, min_area
        self.split_ratio = split_ratio
        self.kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (close_kernel, close_kernel))

    def colour_mask(self, frame: np.ndarray, colour: str) -> np.ndarray:
        hsv = cv2.cvtColor(frame, cv2.COLOR_RGB2HSV)
        hue, saturation, value = hsv[..., 0], hsv[..., 1], hsv[..., 2]
        if colour in _ACHROMATIC:
            grey = saturation < self.min_saturation
            if colour == "white":
                return grey & (value >= 200)
            if colour == "black":
                return value < self.min_value
            return grey & (value >= self.min_value) & (value < 200)
        chroma = (saturation >= self.min_saturation) & (value >= self.min_value)
        in_range = np.zeros_like(chroma)
        for low, high in _HUES[colour]:
            in_range |= (hue >= low) & (hue <= high)
        return chroma & in_range

    @staticmethod
    def shape_score(contour: np.ndarray, shape: str) -> float:
        """How well a blob outline fits `shape`, higher is better (in [0, 1])."""
        area = cv2.contourArea(contour)
        perimeter = cv2.arcLength(contour, True)
        if area <= 0 or perimeter <= 0:
            return 0.0
        circularity = 4 * np.pi * area / perimeter**2
        x, y, w, h = cv2.boundingRect(contour)
        extent = area / (w * h)
        hull_area = cv2.contourArea(cv2.convexHull(contour))
        solidity = area / hull_area if hull_area > 0 else 0.0
        if shape in {"circle", "disk", "disc", "ball", "ellipse", "oval"}:
            return float(circularity)
        if shape in {"square", "rectangle", "box"}:
            return float(extent * solidity)
        if shape == "triangle":
            return float(solidity * (1.0 - min(1.0, 2 * abs(extent - 0.5))))  # a triangle fills half its box
        if shape == "star":
            return float(1.0 - solidity)
        return 0.0

    def __call__(self, frame, phrase, spec=None, source_size=None) -> np.ndarray:
        words = re.findall(r"[a-z]+", phrase.lower())
        colour = next((w for w in words if w in _HUES or w in _ACHROMATIC), None)
        shape = next(
            (w.rstrip("s") if w.rstrip("s") in _SHAPES else w for w in words if w.rstrip("s") in _SHAPES), None
        )
        empty = np.zeros(frame.shape[:2], dtype=bool)
        if colour is None:
            return empty
        mask = cv2.morphologyEx(self.colour_mask(frame, colour).astype(np.uint8), cv2.MORPH_CLOSE, self.kernel)
        count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        blobs = [labels == i for i in range(1, count) if stats[i, cv2.CC_STAT_AREA] >= self.min_area]
        if not blobs:
            return empty
        if shape is None:
            return max(blobs, key=lambda blob: int(blob.sum()))
        candidates = [part for blob in blobs for part in [blob, *self.split_touching(blob)]]
        return max(candidates, key=lambda blob: self.shape_score(_outline(blob), shape))

    def split_touching(self, blob: np.ndarray) -> list[np.ndarray]:
        """Touching same-colour shapes as separate parts: seeds at local maxima of the distance to the
        blob's border (within `split_ratio` x the largest distance), every pixel given to its nearest
        seed. One seed: []."""
        distance = cv2.distanceTransform(blob.astype(np.uint8), cv2.DIST_L2, 5)
        radius = max(1, round(self.split_ratio * distance.max()))
        neighbourhood = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
        peaks = distance >= cv2.dilate(distance, neighbourhood) - 0.5  # local maxima of the inscribed radius
        seeds = (peaks & (distance >= 0.35 * distance.max())).astype(np.uint8)
        count, _ = cv2.connectedComponents(seeds)
        if count <= 2:
            return []
        _, nearest = cv2.distanceTransformWithLabels(1 - seeds, cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_CCOMP)
        parts = [blob & (nearest == label) for label in np.unique(nearest[seeds > 0])]
        return [part for part in parts if part.sum() >= self.min_area]


def _outline(blob: np.ndarray) -> np.ndarray:
    contours, _ = cv2.findContours(blob.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    return max(contours, key=cv2.contourArea)


class DetectorSegmenterGrounder:
    """Open-vocabulary detection (Grounding DINO or OWLv2) + box-prompted SAM, from local checkpoints.

    Loads `detector` with `AutoModelForZeroShotObjectDetection`/`AutoProcessor` and `segmenter` with
    `SamModel`/`SamProcessor`. Without torchvision transformers falls back to the PIL image processors
    (`*ImageProcessorPil`), which is what runs here. The best-scoring box above `box_threshold` prompts
    SAM; the mask with the highest predicted IoU is kept. Without a segmenter the box is the mask.
    """

    def __init__(
        self,
        detector: str | Path,
        segmenter: str | Path | None = None,
        box_threshold: float = 0.3,
        text_threshold: float = 0.25,
        device: str = "cpu",
    ):
        import torch
        from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

        self.torch, self.device = torch, device
        self.box_threshold, self.text_threshold = box_threshold, text_threshold
        self.detector_processor = AutoProcessor.from_pretrained(detector)
        self.detector = AutoModelForZeroShotObjectDetection.from_pretrained(detector).to(device).eval()
        self.segmenter = self.segmenter_processor = None
        if segmenter is not None:
            from transformers import SamModel, SamProcessor

            self.segmenter_processor = SamProcessor.from_pretrained(segmenter)
            self.segmenter = SamModel.from_pretrained(segmenter).to(device).eval()

    def detect(self, frame: np.ndarray, phrase: str) -> tuple[np.ndarray, float] | None:
        """The best box `[x0, y0, x1, y1]` (pixels) for `phrase` and its score, or None below threshold."""
        image = Image.fromarray(frame)
        height, width = frame.shape[:2]
        is_grounding_dino = self.detector.config.model_type == "grounding-dino"
        # Grounding DINO reads one lower-cased, period-terminated prompt; OWLv2 a list of queries per image.
        text = phrase.lower().strip().rstrip(".") + "." if is_grounding_dino else [[phrase]]
        inputs = self.detector_processor(images=image, text=text, return_tensors="pt").to(self.device)
        with self.torch.no_grad():
            outputs = self.detector(**inputs)
        if is_grounding_dino:
            results = self.detector_processor.post_process_grounded_object_detection(
                outputs,
                inputs.input_ids,
                threshold=self.box_threshold,
                text_threshold=self.text_threshold,
                target_sizes=[(height, width)],
            )[0]
        else:
            side = max(height, width)  # OWLv2 pads the image to a square at the bottom/right: boxes live there
            results = self.detector_processor.post_process_grounded_object_detection(
                outputs, threshold=self.box_threshold, target_sizes=[(side, side)]
            )[0]
        if not len(results["scores"]):
            return None
        best = int(results["scores"].argmax())
        box = results["boxes"][best].float().cpu().numpy()
        box = np.clip(box, 0, [width, height, width, height])
        return box, float(results["scores"][best])

    def __call__(self, frame, phrase, spec=None, source_size=None) -> np.ndarray:
        height, width = frame.shape[:2]
        detection = self.detect(frame, phrase)
        if detection is None:
            return np.zeros((height, width), dtype=bool)
        box, _ = detection
        if self.segmenter is None:
            return mask_from_spec({"box": box.tolist()}, (height, width))
        image = Image.fromarray(frame)
        inputs = self.segmenter_processor(images=image, input_boxes=[[box.tolist()]], return_tensors="pt")
        with self.torch.no_grad():
            outputs = self.segmenter(
                pixel_values=inputs["pixel_values"].to(self.device),
                input_boxes=inputs["input_boxes"].to(self.device),
                multimask_output=True,
            )
        masks = self.segmenter_processor.image_processor.post_process_masks(
            outputs.pred_masks.cpu(), inputs["original_sizes"], inputs["reshaped_input_sizes"]
        )[0]  # [boxes, masks, H, W]
        best = int(outputs.iou_scores[0, 0].argmax())
        return masks[0, best].numpy().astype(bool)


GROUNDERS: dict[str, Callable[..., Grounder]] = {
    "given": GivenMaskGrounder,
    "color_shape": ColorShapeGrounder,
    "transformers": DetectorSegmenterGrounder,
}


def build_grounder(name: str, **kwargs: Any) -> Grounder:
    if name not in GROUNDERS:
        raise ValueError(f"unknown grounding backend {name!r}; available: {sorted(GROUNDERS)}")
    return GROUNDERS[name](**kwargs)
