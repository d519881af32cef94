"""Loaders of the three stages' data: conversion to training records and clear validation errors."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from processing.data_format import DataFormatError
from processing.instruction_data import load_instruction_data
from processing.localized_narratives import load_localized_narratives
from processing.stage_data import load_stage_dataset
from processing.trajectory_data import load_trajectory_data


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def ln_record(**overrides):
    record = {
        "dataset_id": "mscoco_val2017",
        "image_id": "397133",
        "annotator_id": 93,
        "caption": "In this image we can see a man, he is holding a Knife.",
        "timed_caption": [
            {"utterance": "In this image", "start_time": 0.0, "end_time": 1.0},
            {"utterance": "we can see a man", "start_time": 1.0, "end_time": 2.0},
            {"utterance": "he is holding", "start_time": 2.2, "end_time": 2.9},
            {"utterance": "a knife", "start_time": 3.0, "end_time": 4.0},
        ],
        "traces": [
            [{"x": 0.1, "y": 0.2, "t": 0.5}, {"x": 0.3, "y": 0.4, "t": 1.5}, {"x": 0.5, "y": 0.6, "t": 1.7}],
            [{"x": 0.9, "y": 1.05, "t": 3.5}],
        ],
        "voice_recording": "coco_val/coco_val_397133_93.ogg",
    }
    record.update(overrides)
    return record


def traj_record(trajectory, **overrides):
    record = {
        "id": "v1",
        "video": "videos/v1.mp4",
        "duration": 10.0,
        "events": [
            {
                "caption": "The red circle moves left.",
                "start": 2.0,
                "end": 6.0,
                "phrases": [{"text": "red circle", "char_span": [4, 14], "trajectory": trajectory}],
            },
            {
                "caption": "A blue square appears",
                "start": 0.0,
                "end": 1.0,
                "phrases": [{"text": "A blue square", "char_span": [0, 13], "trajectory": trajectory}],
            },
        ],
    }
    record.update(overrides)
    return record


def test_localized_narratives_word_points_are_trace_means(tmp_path):
    path = write_jsonl(tmp_path / "ln.jsonl", [ln_record()])
    record = load_localized_narratives(path, image_template="{image_id:0>12}.jpg")[0]
    assert record["video"] == str(tmp_path / "000000397133.jpg")
    assert record["media"] == "image"
    assert record["conversations"][0]["value"].startswith("<video>\n")
    caption = record["conversations"][1]["value"]
    words = {caption[slice(*p["char_span"])].lower(): p["point"] for p in record["points"]}
    assert words["image"] == pytest.approx([0.1, 0.2])
    assert words["man"] == pytest.approx([0.4, 0.5])  # mean of the two points inside [1, 2] s
    assert words["holding"] == [-1.0, -1.0]  # no trace point while "he is holding" was spoken
    assert words["knife"] == pytest.approx([0.9, 1.0])  # y clipped to the image
    assert all(p["turn"] == 1 for p in record["points"])


def test_localized_narratives_errors_name_record_and_field(tmp_path):
    bad = ln_record(image_id="42")
    bad["timed_caption"][1]["start_time"] = "soon"
    path = write_jsonl(tmp_path / "ln.jsonl", [ln_record(), bad])
    with pytest.raises(
        DataFormatError, match=r"ln\.jsonl: record 1 \(image_id='42'\): field 'timed_caption\[1\]\.start_time'"
    ):
        load_localized_narratives(path)
    (tmp_path / "broken.jsonl").write_text(json.dumps(ln_record()) + "\n{not json\n")
    with pytest.raises(DataFormatError, match=r"broken\.jsonl: record 1: line 2 is not valid JSON"):
        load_localized_narratives(tmp_path / "broken.jsonl")


@pytest.mark.parametrize("event_format", ["prefix", "suffix"])
def test_trajectory_records_place_phrases_in_the_dense_caption(tmp_path, event_format):
    trajectory = np.random.default_rng(0).uniform(size=(3, 100, 2)).round(4)
    trajectory[1, 50:] = -1
    path = write_jsonl(tmp_path / "traj.jsonl", [traj_record(trajectory.tolist())])
    record = load_trajectory_data(path, event_format=event_format)[0]
    answer = record["conversations"][1]["value"]
    if event_format == "prefix":
        assert answer == "From 00 to 10, a blue square appears. From 20 to 60, the red circle moves left."
    else:
        assert answer == "A blue square appears, from 00 to 10. The red circle moves left, from 20 to 60."
    phrases = [answer[slice(*t["char_span"])] for t in record["trajectories"]]
    assert [p.lower() for p in phrases] == ["a blue square", "red circle"]
    np.testing.assert_allclose(record["trajectories"][0]["trajectory"], trajectory, atol=1e-6)
    assert record["video"] == str(tmp_path / "videos" / "v1.mp4")


def test_trajectory_of_wrong_shape_names_the_record(tmp_path):
    good = traj_record(np.full((3, 100, 2), 0.5).tolist())
    bad = traj_record(np.full((3, 50, 2), 0.5).tolist(), id="v_bad")
    path = write_jsonl(tmp_path / "traj.jsonl", [good, bad])
    with pytest.raises(DataFormatError) as error:
        load_trajectory_data(path)
    message = str(error.value)
    assert "record 1 (id='v_bad')" in message
    assert "events[0].phrases[0].trajectory" in message
    assert "[3, 100, 2]" in message and "[3, 50, 2]" in message
    ragged = traj_record([[[0.5, 0.5]] * 100, [[0.5, 0.5]] * 99, [[0.5, 0.5]] * 100], id="v_ragged")
    with pytest.raises(DataFormatError, match="v_ragged.*ragged"):
        load_trajectory_data(write_jsonl(tmp_path / "ragged.jsonl", [ragged]))
    outside = np.full((3, 100, 2), 0.5)
    outside[0, 3] = [1.5, 0.2]
    with pytest.raises(DataFormatError, match=r"trajectory\[0\]\[3\].*\[0, 1\] or -1"):
        load_trajectory_data(write_jsonl(tmp_path / "outside.jsonl", [traj_record(outside.tolist())]))


def test_trajectory_phrase_text_must_match_its_span(tmp_path):
    record = traj_record(np.full((3, 100, 2), 0.5).tolist())
    record["events"][0]["phrases"][0]["char_span"] = [0, 10]
    with pytest.raises(DataFormatError, match=r"phrases\[0\]\.text.*'red circle' does not match"):
        load_trajectory_data(write_jsonl(tmp_path / "t.jsonl", [record]))


def test_trajectory_data_reads_parquet_and_checks_the_model_shape(tmp_path):
    trajectory = np.full((2, 8, 2), 0.25).tolist()
    table = pa.Table.from_pylist([traj_record(trajectory)])
    pq.write_table(table, tmp_path / "shard-00000.parquet")
    record = load_trajectory_data(tmp_path / "shard-00000.parquet", num_points=2, num_frames=8)[0]
    assert np.asarray(record["trajectories"][1]["trajectory"]).shape == (2, 8, 2)
    with pytest.raises(DataFormatError, match=r"\[3, 100, 2\]"):
        load_trajectory_data(tmp_path / "shard-00000.parquet")


def test_instruction_data_formats(tmp_path):
    records = [
        {
            "id": "a",
            "video": "a.mp4",
            "conversations": [
                {"from": "human", "value": "<video>\nWhat is it?"},
                {"from": "gpt", "value": "A circle."},
                {"from": "human", "value": "Which colour?"},
                {"from": "gpt", "value": "Red."},
            ],
        },
        {"video_id": "b", "q": "Where does it go?", "a": "Left."},
        {
            "id": "v_c",
            "meta": {"duration": 20.0, "token": {"<s0>": 2.0, "<e0>": 10.0}},
            "conversations": [
                {"from": "human", "value": "<image>\nWhen does it move?"},
                {"from": "gpt", "value": "From <s0> to <e0>."},
            ],
        },
    ]
    (tmp_path / "b.webm").write_bytes(b"")
    (tmp_path / "inst.json").write_text(json.dumps(records))
    data = load_instruction_data(tmp_path / "inst.json")
    assert len(data) == 3
    assert data[0]["conversations"][3] == {"from": "gpt", "value": "Red."}
    assert data[1]["video"] == str(tmp_path / "b.webm")  # found under its extension
    assert data[1]["conversations"][0]["value"] == "<video>\nWhere does it go?"
    assert data[2]["conversations"][1]["value"] == "From 10 to 50."
    assert data[2]["conversations"][0]["value"].startswith("<video>\n")
    assert data[2]["video"] == str(tmp_path / "v_c.mp4")


def test_instruction_data_errors(tmp_path):
    wrong_order = {"id": "x", "video": "x.mp4", "conversations": [{"from": "gpt", "value": "hi"}]}
    (tmp_path / "a.json").write_text(json.dumps([wrong_order]))
    with pytest.raises(DataFormatError, match=r"record 0 \(id='x'\): field 'conversations\[0\]\.from'"):
        load_instruction_data(tmp_path / "a.json")
    missing_time = {
        "id": "y",
        "meta": {"duration": 5.0, "token": {"<s0>": 1.0}},
        "conversations": [{"from": "human", "value": "When?"}, {"from": "gpt", "value": "<s0> to <e0>"}],
    }
    (tmp_path / "b.json").write_text(json.dumps([missing_time]))
    with pytest.raises(DataFormatError, match=r"<e0> has no time"):
        load_instruction_data(tmp_path / "b.json")
    with pytest.raises(DataFormatError, match="file not found"):
        load_instruction_data(tmp_path / "nope.json")


def test_load_stage_dataset_concatenates_files_and_uses_the_media_folder(tmp_path):
    first = write_jsonl(tmp_path / "one.jsonl", [ln_record()])
    second = write_jsonl(tmp_path / "two.jsonl", [ln_record(image_id="7", image="imgs/seven.png")])
    data = load_stage_dataset(1, [first, second], media_folder=tmp_path / "media")
    assert [r["video"] for r in data] == [
        str(tmp_path / "media" / "397133.jpg"),
        str(tmp_path / "media" / "imgs" / "seven.png"),
    ]
    with pytest.raises(ValueError, match="stage must be 1, 2 or 3"):
        load_stage_dataset(4, [first])
