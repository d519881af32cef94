"""PiteDataCollator: labels on assistant tokens only, coordinates on grounded tokens, skipped videos."""

import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from modeling_pite.processing_pite import PiteProcessor
from modeling_pite.video_processing_pite import PiteVideoProcessor
from processing.collators import PiteDataCollator, add_length_column
from processing.localized_narratives import load_localized_narratives
from processing.trajectory_data import load_trajectory_data
from processing.video_writer import write_video

NUM_FRAMES = 4


@pytest.fixture(scope="module")
def processor(tiny_tokenizer):
    video_processor = PiteVideoProcessor(
        num_frames=NUM_FRAMES, size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    )
    return PiteProcessor(video_processor=video_processor, tokenizer=tiny_tokenizer)


def write_trajectory_file(folder, videos, num_frames=NUM_FRAMES):
    rng = np.random.default_rng(0)
    records = []
    for i, video in enumerate(videos):
        records.append(
            {
                "id": f"v{i}",
                "video": video,
                "duration": 4.0,
                "events": [
                    {
                        "caption": "The red circle moves to the left.",
                        "start": 0.4,
                        "end": 1.6,
                        "phrases": [
                            {
                                "text": "red circle",
                                "char_span": [4, 14],
                                "trajectory": rng.uniform(size=(3, num_frames, 2)).tolist(),
                            }
                        ],
                    },
                    {
                        "caption": "A blue square appears.",
                        "start": 2.0,
                        "end": 4.0,
                        "phrases": [
                            {
                                "text": "blue square",
                                "char_span": [2, 13],
                                "trajectory": rng.uniform(size=(3, num_frames, 2)).tolist(),
                            }
                        ],
                    },
                ],
            }
        )
    path = folder / "trajectories.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture(scope="module")
def trajectory_data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("traj")
    for name, shade in (("a.mp4", 40), ("b.mp4", 200)):
        write_video(folder / name, [np.full((32, 48, 3), shade + i, np.uint8) for i in range(12)])
    return load_trajectory_data(
        write_trajectory_file(folder, ["a.mp4", "b.mp4", "missing.mp4"]), num_frames=NUM_FRAMES
    )


def tokens(processor, ids):
    return processor.tokenizer.decode(ids).replace(" ", "")


def test_labels_cover_exactly_the_assistant_answer(processor, trajectory_data):
    batch = PiteDataCollator(processor, coordinate_targets="trajectory")([trajectory_data[0], trajectory_data[1]])
    for i in range(2):
        labels = batch["labels"][i]
        answer = trajectory_data[i]["conversations"][1]["value"]
        assert tokens(processor, labels[labels != -100]) == (answer + "</s>").replace(" ", "")
        # the masked tokens form one contiguous run at the end of the real tokens
        positions = (labels != -100).nonzero().flatten()
        assert positions.tolist() == list(range(positions[0], batch["attention_mask"][i].sum()))


@pytest.mark.parametrize("answer", ["2", "yes"])
def test_labels_are_everything_generation_must_produce(processor, trajectory_data, answer):
    """Training labels start right after the generation prompt: an answer that starts with a digit tokenizes
    as '▁' + '2' (digits stand alone, as in Llama), and that lone '▁' must be trained, or generation, which
    starts after 'ASSISTANT:', never learns to begin the answer."""
    question = "How many objects are there?"
    record = {**trajectory_data[0], "trajectories": []}
    record["conversations"] = [{"from": "human", "value": f"<video>\n{question}"}, {"from": "gpt", "value": answer}]
    batch = PiteDataCollator(processor)([record])
    ids, labels = batch["input_ids"][0], batch["labels"][0]
    first = int((labels != -100).nonzero()[0])
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}],
        add_generation_prompt=True,
    )
    prompt_ids = processor(text=[prompt], videos=[record["video"]])["input_ids"][0]
    assert ids[:first].tolist() == prompt_ids.tolist()
    assert (labels[first:] == ids[first:]).all()
    assert processor.tokenizer.decode(ids[first:]).lstrip() == f"{answer}</s>"
    if answer == "2":
        assert processor.tokenizer.convert_ids_to_tokens(int(ids[first])) == "▁"


def test_length_column_is_the_collated_token_count(processor, trajectory_data):
    """What `train_sampling_strategy="group_by_length"` sorts by: the tokens the collator gives each record."""
    records = trajectory_data.select([0, 1])
    with_lengths = add_length_column(records, processor)
    collator = PiteDataCollator(processor, coordinate_targets="trajectory")
    for record in with_lengths:
        assert record["length"] == collator([record])["input_ids"].shape[1]


def test_trajectory_targets_sit_on_the_phrase_tokens(processor, trajectory_data):
    batch = PiteDataCollator(processor, coordinate_targets="trajectory")([trajectory_data[0], trajectory_data[1]])
    targets = batch["trajectory_targets"]
    assert targets.shape == (*batch["input_ids"].shape, 3, NUM_FRAMES, 2)
    assert batch["pixel_values_videos"].shape == (2, NUM_FRAMES, 3, 32, 32)
    assert ((batch["input_ids"] == processor.video_token_id).sum(1) == NUM_FRAMES).all()
    ids = batch["input_ids"][0]
    grounded = (targets[0] != -1).flatten(1).any(1)
    assert tokens(processor, ids[grounded]) == "redcirclebluesquare"
    # each phrase's tokens carry that phrase's trajectory, every token the same one
    record = trajectory_data[0]
    for item in record["trajectories"]:
        phrase = record["conversations"][1]["value"][slice(*item["char_span"])]
        expected = torch.tensor(item["trajectory"])
        matching = (targets[0] == expected).flatten(1).all(1)
        assert tokens(processor, ids[matching]).lower() == phrase.replace(" ", "").lower()
    assert (targets[0][~grounded] == -1).all()
    assert (batch["labels"][0][grounded] != -100).all()  # grounded tokens are answer tokens


def test_missing_video_is_skipped_with_a_warning_and_counted(processor, trajectory_data, caplog):
    collator = PiteDataCollator(processor, coordinate_targets="trajectory")
    with caplog.at_level(logging.WARNING, logger="processing.collators"):
        batch = collator([trajectory_data[0], trajectory_data[2], trajectory_data[1]])
    assert batch["input_ids"].shape[0] == 2
    assert int(batch["num_skipped_videos"]) == 1 and collator.num_skipped == 1
    assert "missing.mp4" in caplog.text and "file not found" in caplog.text
    # a batch whose every video is missing repeats the last good record instead of failing the step
    batch = collator([trajectory_data[2]])
    assert batch["input_ids"].shape[0] == 1 and collator.num_skipped == 2


def test_cached_features_replace_pixels(processor, trajectory_data):
    store = {"a": torch.randn(NUM_FRAMES, 24)}  # ids as `pite extract-features` writes them: path without suffix
    collator = PiteDataCollator(processor, coordinate_targets="trajectory", feature_store=store)
    batch = collator([trajectory_data[0], trajectory_data[1]])  # the second has no cached features
    assert "pixel_values_videos" not in batch
    torch.testing.assert_close(batch["video_features"][0], store["a"])
    assert batch["video_features"].shape[0] == 1 and int(batch["num_skipped_videos"]) == 1


def test_stage1_images_are_one_frame_videos_with_word_points(processor, tmp_path):
    Image.fromarray(np.full((40, 60, 3), 128, np.uint8)).save(tmp_path / "397133.jpg")
    record = {
        "image_id": "397133",
        "caption": "A red circle on the left.",
        "timed_caption": [
            {"utterance": "a red circle", "start_time": 0.0, "end_time": 1.0},
            {"utterance": "on the left", "start_time": 1.0, "end_time": 2.0},
        ],
        "traces": [[{"x": 0.2, "y": 0.3, "t": 0.5}, {"x": 0.8, "y": 0.9, "t": 1.5}]],
    }
    (tmp_path / "ln.jsonl").write_text(json.dumps(record) + "\n")
    data = load_localized_narratives(tmp_path / "ln.jsonl")
    batch = PiteDataCollator(processor, coordinate_targets="localization")([data[0]])
    assert batch["pixel_values_videos"].shape == (1, 1, 3, 32, 32)
    assert int((batch["input_ids"] == processor.video_token_id).sum()) == 1
    targets, ids = batch["localization_targets"][0], batch["input_ids"][0]
    near_start = (targets == torch.tensor([0.2, 0.3])).all(-1)
    near_left = (targets == torch.tensor([0.8, 0.9])).all(-1)
    assert tokens(processor, ids[near_start]).lower() == "aredcircle"
    assert tokens(processor, ids[near_left]) == "ontheleft"
    assert (targets[~(near_start | near_left)] == -1).all()


def test_max_length_truncates_but_never_cuts_video_tokens(processor, trajectory_data):
    full = PiteDataCollator(processor, coordinate_targets="trajectory")([trajectory_data[0]])
    length = full["input_ids"].shape[1]
    short = PiteDataCollator(processor, coordinate_targets="trajectory", max_length=length - 5)([trajectory_data[0]])
    assert short["input_ids"].shape[1] == length - 5
    torch.testing.assert_close(short["trajectory_targets"][0], full["trajectory_targets"][0, : length - 5])
    collator = PiteDataCollator(processor, coordinate_targets="trajectory", max_length=10)
    with pytest.raises(RuntimeError, match="could be loaded"):
        collator([trajectory_data[0]])
    assert collator.num_skipped == 1
