import pytest

from modeling_pite.temporal import (
    format_event,
    format_frame_span,
    frame_span_to_seconds,
    parse_events,
    parse_frame_span,
    seconds_to_frame_index,
)


def test_seconds_to_frame_index_rounds_and_clamps():
    assert seconds_to_frame_index(0.0, 82.73) == 0
    assert seconds_to_frame_index(19.86, 82.73) == round(19.86 / 82.73 * 100)  # 24
    assert seconds_to_frame_index(82.73, 82.73) == 99  # the end of the video is the last frame, not 100
    assert seconds_to_frame_index(90.0, 82.73) == 99 and seconds_to_frame_index(-1.0, 82.73) == 0
    assert seconds_to_frame_index(5.0, 10.0, num_frames=8) == 4
    with pytest.raises(ValueError, match="duration"):
        seconds_to_frame_index(1.0, 0.0)


def test_frame_span_to_seconds_includes_the_end_frame():
    assert frame_span_to_seconds(5, 37, 50.0) == pytest.approx((2.5, 19.0))
    assert frame_span_to_seconds(0, 99, 82.73) == pytest.approx((0.0, 82.73))
    start, end = frame_span_to_seconds(*[seconds_to_frame_index(t, 60.0) for t in (12.0, 30.0)], 60.0)
    frame = 60.0 / 100
    assert abs(start - 12.0) <= frame / 2 and 0 <= end - 30.0 <= 1.5 * frame  # rounding, plus the included end frame


def test_format_frame_span_and_events():
    assert format_frame_span(5, 37) == "from 05 to 37"
    assert format_event("A dog runs across the yard.", 5, 37) == "A dog runs across the yard, from 05 to 37."
    assert format_event("A dog runs across the yard.", 5, 37, "prefix") == "From 05 to 37, a dog runs across the yard."
    assert format_event("USA wins", 0, 9, "prefix") == "From 00 to 09, USA wins."
    with pytest.raises(ValueError, match="position"):
        format_event("x", 0, 1, "middle")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("From 05 to 37, a blue square appears.", (5, 37)),
        ("The event happens from 12 to 40.", (12, 40)),
        ("We can see it between 03 and 18 and again 50 to 60.", (3, 18)),
        ("from 5 to 9", (5, 9)),
        ("FROM 07   TO 99", (7, 99)),
        ("in 2021 to 2023 it rained; frames 10 to 20", (10, 20)),  # years are not frame indices
        ("It happens at 40 to 30.", (40, 30)),  # written order is kept; the evaluator scores it
        ("I cannot tell.", None),
        ("", None),
    ],
)
def test_parse_frame_span(text, expected):
    assert parse_frame_span(text) == expected


def test_parse_frame_span_reads_what_format_writes():
    for start, end in [(0, 0), (5, 37), (99, 99)]:
        assert parse_frame_span(format_event("A caption.", start, end)) == (start, end)
        assert parse_frame_span(format_event("A caption.", start, end, "prefix")) == (start, end)


def test_parse_events_splits_dense_captions():
    text = "From 00 to 12, a man walks in. From 13 to 40, he picks up a ball. from 41 to 99 he throws it."
    assert parse_events(text) == [
        (0, 12, "a man walks in."),
        (13, 40, "he picks up a ball."),
        (41, 99, "he throws it."),
    ]
    assert parse_events("no spans here") == []
