"""What the synthetic world says about itself: events with captions and noun phrases, QA, narratives.

Everything is derived from a `VideoSpec` (and, where a choice is made, a seeded generator), so the
text and its ground truth are reproducible from `world.json`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

import numpy as np

from .sampling import DIRECTIONS
from .world import COLORS, SHAPES, VideoSpec, pixels_to_normalized

__all__ = [
    "Event",
    "Phrase",
    "QAItem",
    "localized_narrative",
    "reference_time",
    "video_events",
    "video_qa",
]

_MOVE_WORDS = {"left": "moves to the left", "right": "moves to the right", "up": "moves up", "down": "moves down"}
_ENTER_WORDS = {"left": "from the right", "right": "from the left", "up": "from the bottom", "down": "from the top"}
_EXIT_WORDS = {"left": "to the left", "right": "to the right", "up": "through the top", "down": "through the bottom"}
# An occlusion event needs the lower object to lose this share of its visible area for this long.
_OCCLUSION_SHARE = 0.3
_OCCLUSION_MIN_SECONDS = 0.5


@dataclass
class Phrase:
    """A noun phrase of a caption that names an object: `caption[begin:end] == text`."""

    text: str
    char_span: tuple[int, int]
    object_index: int


@dataclass
class Event:
    """A captioned time span, seconds. `kind` is enter / move / still / exit / occlude."""

    caption: str
    start: float
    end: float
    kind: str
    phrases: list[Phrase] = field(default_factory=list)
    direction: str | None = None


@dataclass
class QAItem:
    question: str
    answer: str
    type: str


def _indefinite(name: str) -> str:
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def _sentence(parts: list[tuple[str, int | None]]) -> tuple[str, list[Phrase]]:
    """Join `(text, object_index or None)` parts into a capitalised sentence with its phrases."""
    text, phrases = "", []
    for part, object_index in parts:
        if object_index is not None:
            phrases.append(Phrase(part, (len(text), len(text) + len(part)), object_index))
        text += part
    text = text[0].upper() + text[1:] + "."
    phrases = [Phrase(text[p.char_span[0] : p.char_span[1]], p.char_span, p.object_index) for p in phrases]
    return text, phrases


def _in_frame(spec: VideoSpec, size: int, centre: np.ndarray) -> bool:
    half = size / 2
    return bool(-half < centre[0] < spec.width + half and -half < centre[1] < spec.height + half)


def _direction(delta: np.ndarray) -> str | None:
    if np.abs(delta).max() < 1e-6:
        return None
    axis = int(np.argmax(np.abs(delta)))
    step = [0, 0]
    step[axis] = int(np.sign(delta[axis]))
    return next(name for name, unit in DIRECTIONS.items() if list(unit) == step)


def _path_events(spec: VideoSpec, index: int) -> list[Event]:
    """One event per path segment of object `index`: enter / move / still / exit, with appear/disappear."""
    obj = spec.objects[index]
    keyframes = np.asarray(obj.keyframes)
    events = []
    last = len(keyframes) - 2
    for k in range(last + 1):
        (t0, *p0), (t1, *p1) = keyframes[k], keyframes[k + 1]
        p0, p1 = np.array(p0), np.array(p1)
        direction = _direction(p1 - p0)
        noun = _indefinite(obj.name) if k == 0 else f"the {obj.name}"
        if k == 0 and direction and not _in_frame(spec, obj.size, p0):
            kind, verb = "enter", f" enters {_ENTER_WORDS[direction]}"
        elif k == last and direction and not _in_frame(spec, obj.size, p1):
            kind, verb = "exit", f" leaves {_EXIT_WORDS[direction]}"
        elif direction is None:
            kind, verb = "still", " stays still"
        else:
            kind, verb = "move", f" {_MOVE_WORDS[direction]}"
        appears = k == 0 and t0 > 0 and kind != "enter"
        disappears = k == last and t1 < spec.duration - 1e-6 and kind != "exit"
        if appears and disappears:
            verb = f" appears,{verb} and disappears"
        elif appears:
            verb = f" appears and{verb}"
        elif disappears:
            verb = " disappears" if kind == "still" else f"{verb} and disappears"
        caption, phrases = _sentence([(noun, index), (verb, None)])
        events.append(Event(caption, float(t0), float(t1), kind, phrases, direction))
    return events


def _occlusion_events(spec: VideoSpec) -> list[Event]:
    """ "The blue square passes in front of the red circle." for the longest strong overlap of each pair."""
    times, events = spec.frame_times, []
    for lower, below in enumerate(spec.objects):
        alone = replace(spec, objects=[below]).visible_area(0, times)
        for upper in range(lower + 1, len(spec.objects)):
            paired = replace(spec, objects=[below, spec.objects[upper]]).visible_area(0, times)
            best = _longest_run(alone - paired >= _OCCLUSION_SHARE * below.mask.sum())
            if best is None or (best[1] - best[0]) / spec.fps < _OCCLUSION_MIN_SECONDS:
                continue
            caption, phrases = _sentence(
                [
                    (f"the {spec.objects[upper].name}", upper),
                    (" passes in front of ", None),
                    (f"the {below.name}", lower),
                ]
            )
            events.append(Event(caption, best[0] / spec.fps, best[1] / spec.fps, "occlude", phrases))
    return events


def _longest_run(flags: np.ndarray) -> tuple[int, int] | None:
    """`(start, stop)` of the longest run of True (stop exclusive), None when there is none."""
    best, start = None, None
    for k, flag in enumerate([*flags.tolist(), False]):
        if flag and start is None:
            start = k
        elif not flag and start is not None:
            if best is None or k - start > best[1] - best[0]:
                best = (start, k)
            start = None
    return best


def video_events(spec: VideoSpec, occlusions: bool = True) -> list[Event]:
    """All events of a video in time order: each object's path segments, then occlusions."""
    events = [event for index in range(len(spec.objects)) for event in _path_events(spec, index)]
    if occlusions:
        events += _occlusion_events(spec)
    return sorted(events, key=lambda event: (event.start, event.end, event.caption))


def reference_time(spec: VideoSpec, event: Event, phrase: Phrase, min_share: float = 0.25) -> float:
    """The frame a phrase's object is grounded on: the event's first frame where at least `min_share`
    of the object is visible, else the event frame where most of it is, else the event start."""
    obj = spec.objects[phrase.object_index]
    times = spec.frame_times[(spec.frame_times >= event.start - 1e-6) & (spec.frame_times < event.end - 1e-6)]
    if not len(times):
        return event.start
    areas = spec.visible_area(phrase.object_index, times)
    enough = np.nonzero(areas >= min_share * obj.mask.sum())[0]
    if len(enough):
        return float(times[enough[0]])
    return float(times[int(np.argmax(areas))]) if areas.max() > 0 else event.start


def video_qa(spec: VideoSpec, rng: np.random.Generator, events: list[Event] | None = None) -> list[QAItem]:
    """Short-answer questions about colour, shape, first direction, count and existence."""
    events = video_events(spec) if events is None else events
    objects = spec.objects
    items = [QAItem("How many objects appear in the video?", str(len(objects)), "count")]
    shapes = [obj.shape for obj in objects]
    colors = [obj.color for obj in objects]
    for index, obj in enumerate(objects):
        if shapes.count(obj.shape) == 1:
            items.append(QAItem(f"What color is the {obj.shape}?", obj.color, "color"))
        if colors.count(obj.color) == 1:
            items.append(QAItem(f"What shape is the {obj.color} object?", obj.shape, "shape"))
        moves = [e.direction for e in events if e.kind != "occlude" and e.phrases[0].object_index == index]
        moves = [d for d in moves if d]
        if moves:
            items.append(QAItem(f"In which direction does the {obj.name} move first?", moves[0], "direction"))
    present = rng.choice(objects)
    absent = [(c, s) for c in COLORS for s in SHAPES if f"{c} {s}" not in {obj.name for obj in objects}]
    color, shape = absent[int(rng.integers(len(absent)))]
    items.append(QAItem(f"Is there a {present.name} in the video?", "yes", "existence"))
    items.append(QAItem(f"Is there a {color} {shape} in the video?", "no", "existence"))
    return items


def _location(spec: VideoSpec, centre: np.ndarray) -> str:
    """ "on the left" / "at the top right" / "in the middle" from a centre in pixels."""
    x, y = centre[0] / spec.width, centre[1] / spec.height
    vertical = "top" if y < 1 / 3 else "bottom" if y > 2 / 3 else ""
    horizontal = "left" if x < 1 / 3 else "right" if x > 2 / 3 else ""
    if vertical and horizontal:
        return f"at the {vertical} {horizontal}"
    if vertical:
        return f"at the {vertical}"
    return f"on the {horizontal}" if horizontal else "in the middle"


def _anchor(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """A pixel of `mask` near its centroid, and the jitter radius (1 or 0) that keeps `anchor ± r` inside."""
    ys, xs = np.nonzero(mask)
    pixels = np.stack([xs, ys], axis=1)
    anchor = pixels[np.argmin(((pixels - pixels.mean(axis=0)) ** 2).sum(axis=1))]
    x, y = anchor
    h, w = mask.shape
    inside = (
        0 < x < w - 1 and 0 < y < h - 1 and mask[y, x - 1] and mask[y, x + 1] and mask[y - 1, x] and mask[y + 1, x]
    )
    return anchor, int(inside)


_WORD = re.compile(r"[\w']+")
_INTROS = ("In this image we can see", "In this picture there is", "This image shows", "Here we can see")


def localized_narrative(
    spec: VideoSpec,
    rng: np.random.Generator,
    image_path: str,
    word_seconds: float = 0.3,
    gap_seconds: float = 0.1,
    trace_hz: float = 20.0,
) -> tuple[dict, list[Phrase]]:
    """A Localized-Narratives record for a still scene, plus the phrases that refer to objects.

    Each word is one utterance. While the words of an object's referring expression ("a red circle on
    the left") are spoken the mouse rests on that object: the trace points in those utterances are an
    anchor pixel on the object's visible part and symmetric ±1 px jitter around it, so their mean is
    exactly the anchor. Between words and over other words the mouse glides between anchors.
    """
    parts: list[tuple[str, int | None]] = [(str(rng.choice(_INTROS)) + " ", None)]
    for index, obj in enumerate(spec.objects):
        if index:
            parts.append((" and " if index == len(spec.objects) - 1 else ", ", None))
        location = _location(spec, obj.center(0.0))
        parts.append((f"{_indefinite(obj.name)} {location}", index))
    caption, phrases = _sentence(parts)

    words = [(m.group(0), m.start(), m.end()) for m in _WORD.finditer(caption)]
    anchors = {p.object_index: _anchor(spec.object_mask(p.object_index, 0.0)) for p in phrases}
    timed_caption, traces = [], []
    previous = None
    for k, (word, begin, end) in enumerate(words):
        start = 0.5 + k * (word_seconds + gap_seconds)
        stop = start + word_seconds
        timed_caption.append({"utterance": word, "start_time": round(start, 3), "end_time": round(stop, 3)})
        owner = next((p.object_index for p in phrases if p.char_span[0] <= begin and end <= p.char_span[1]), None)
        if owner is None:
            point, radius = rng.uniform([0, 0], [spec.width - 1, spec.height - 1]), 0
        else:
            point, radius = anchors[owner]
        point = np.asarray(point, dtype=np.float64)
        if previous is not None:  # glide over the gap before this word, strictly between utterances
            gap_times = np.arange(start - gap_seconds, start, 1 / trace_hz)[1:]
            for j, t in enumerate(gap_times, start=1):
                traces.append((previous + (point - previous) * j / (len(gap_times) + 1), t))
        jitter = np.array([[0, 0], [radius, 0], [-radius, 0], [0, radius], [0, -radius]], dtype=np.float64)
        for j, t in enumerate(np.linspace(start, stop, 2 * len(jitter))):
            traces.append((point + jitter[j % len(jitter)], t))
        previous = point
    trace = [
        {"x": round(float(x), 5), "y": round(float(y), 5), "t": round(float(t), 3)}
        for (x, y), t in ((pixels_to_normalized(p, spec.width, spec.height), t) for p, t in traces)
    ]
    record = {
        "dataset_id": "synthetic",
        "image_id": spec.video_id,
        "annotator_id": 0,
        "caption": caption,
        "timed_caption": timed_caption,
        "traces": [trace],
        "voice_recording": f"synthetic/{spec.video_id}.ogg",
        "image": image_path,
    }
    return record, phrases
