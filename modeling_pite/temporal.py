"""Time in text: PiTe writes event boundaries as two-digit indices of the N sampled frames.

A video is seen as N (=100) uniformly sampled frames, so "from 05 to 37" means the 6th to the 38th
sampled frame. These helpers convert seconds to indices and back, write spans into captions and read
them out of model answers (the grounding evaluation uses `parse_frame_span`, the VTimeLLM protocol).
"""

from __future__ import annotations

import re
from typing import Literal

__all__ = [
    "format_event",
    "format_frame_span",
    "frame_span_to_seconds",
    "parse_events",
    "parse_frame_span",
    "seconds_to_frame_index",
]

# A 1-2 digit number not glued to other digits, "to" or "and", another such number.
_SPAN = re.compile(r"(?<!\d)(\d{1,2})(?!\d)\s*(?:to|and)\s*(\d{1,2})(?!\d)", re.IGNORECASE)
_PREFIX_EVENT = re.compile(r"\bfrom\s+(\d{1,2})\s+to\s+(\d{1,2})\s*,?\s*", re.IGNORECASE)


def seconds_to_frame_index(seconds: float, duration: float, num_frames: int = 100) -> int:
    """`min(round(t / duration * N), N - 1)`, clamped at 0: the sampled frame a time falls on."""
    if duration <= 0:
        raise ValueError(f"duration must be positive, got {duration}")
    return max(0, min(round(seconds / duration * num_frames), num_frames - 1))


def frame_span_to_seconds(start_idx: int, end_idx: int, duration: float, num_frames: int = 100) -> tuple[float, float]:
    """Frame indices back to seconds: `(s * dur / N, (e + 1) * dur / N)`, the end frame included."""
    return start_idx * duration / num_frames, (end_idx + 1) * duration / num_frames


def format_frame_span(start_idx: int, end_idx: int) -> str:
    """`format_frame_span(5, 37) == "from 05 to 37"`."""
    return f"from {start_idx:02d} to {end_idx:02d}"


def format_event(caption: str, start_idx: int, end_idx: int, position: Literal["suffix", "prefix"] = "suffix") -> str:
    """Attach a span to a caption: "A dog runs, from 05 to 37." or "From 05 to 37, a dog runs."."""
    caption = caption.strip()
    span = format_frame_span(start_idx, end_idx)
    if position == "suffix":
        return f"{caption.rstrip('.')}, {span}."
    if position == "prefix":
        # lower-case the first word unless it looks like a name or an acronym ("USA", "I")
        first_word = caption.split(maxsplit=1)[0] if caption else ""
        if first_word not in ("", "I") and (len(first_word) == 1 or not first_word.isupper()):
            caption = caption[0].lower() + caption[1:]
        if caption and not caption.endswith((".", "!", "?")):
            caption += "."
        return f"{span[0].upper()}{span[1:]}, {caption}"
    raise ValueError(f"position must be 'suffix' or 'prefix', got {position!r}")


def parse_frame_span(text: str) -> tuple[int, int] | None:
    """The first "NN to NN" / "NN and NN" in `text` as `(start, end)` in written order, else None.

    Tolerant of case, spacing and one-digit numbers ("From 5 to 37"); numbers with three or more
    digits are not frame indices and are skipped.
    """
    match = _SPAN.search(text)
    return (int(match.group(1)), int(match.group(2))) if match else None


def parse_events(text: str) -> list[tuple[int, int, str]]:
    """Dense-captioning answers ("From 00 to 12, a man ... From 13 to 40, he ...") as (start, end, caption)."""
    matches = list(_PREFIX_EVENT.finditer(text))
    events = []
    for match, following in zip(matches, [*matches[1:], None]):
        caption = text[match.end() : following.start() if following else len(text)].strip()
        if caption:
            events.append((int(match.group(1)), int(match.group(2)), caption))
    return events
