"""The `video-qa`, `video-temporal-grounding` and `video-dense-captioning` pipelines on a tiny saved PiTe."""

import io
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from transformers import LogitsProcessor, LogitsProcessorList, pipeline

from modeling_pite import (  # importing the package registers the pipelines
    PiteConfig,
    PiteForConditionalGeneration,
    PiteProcessor,
    PiteVideoProcessor,
)
from modeling_pite.pipelines import VideoQuestionAnsweringPipeline, _noun_phrases, _phrase_extractor
from modeling_pite.video_io import VideoDecodeError, sample_frame_indices
from processing.video_writer import write_video

ANSWER = "the red circle moves to the left"
QUESTION = "What is the red circle doing?"


class ForceAnswer(LogitsProcessor):
    """Makes a random model write `token_ids` (then EOS), so answers hold known phrases and spans."""

    def __init__(self, token_ids: list[int], prompt_length: int):
        self.token_ids, self.prompt_length = token_ids, prompt_length

    def __call__(self, input_ids, scores):
        step = input_ids.shape[1] - self.prompt_length
        forced = torch.full_like(scores, float("-inf"))
        forced[:, self.token_ids[min(step, len(self.token_ids) - 1)]] = 0
        return forced


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory, tiny_tokenizer):
    folder = tmp_path_factory.mktemp("pite") / "tiny-pite"
    torch.manual_seed(0)
    config = PiteConfig.from_preset("tiny")
    model = PiteForConditionalGeneration(config)
    model.generation_config.do_sample = False
    video_processor = PiteVideoProcessor(
        num_frames=config.num_frames, size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    )
    model.save_pretrained(folder)
    PiteProcessor(video_processor=video_processor, tokenizer=tiny_tokenizer).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """Three 12-frame clips at 6 fps (2 s) with a square in a different place and colour."""
    folder = tmp_path_factory.mktemp("videos")
    paths = []
    for index in range(3):
        frames = []
        for t in range(12):
            frame = np.full((48, 64, 3), 30 * index, np.uint8)
            frame[10 + index * 10 : 22 + index * 10, 4 * t : 4 * t + 12] = (255, 40 * index, 0)
            frames.append(frame)
        paths.append(write_video(folder / f"clip{index}.mp4", frames, fps=6))
    return [str(path) for path in paths]


@pytest.fixture(scope="module")
def qa(tiny_checkpoint):
    return pipeline("video-qa", model=str(tiny_checkpoint))


def _force(pipe, text: str, question: str = QUESTION) -> LogitsProcessorList:
    """A logits processor writing `text`; the prompt length comes from the pipeline's own preprocessing."""
    tokenizer = pipe.processor.tokenizer
    ids = tokenizer(text, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
    item = {"video": np.zeros((2, 32, 32, 3), np.uint8), "question": question}
    prompt = VideoQuestionAnsweringPipeline.preprocess(pipe, item)
    return LogitsProcessorList([ForceAnswer(ids, prompt["input_ids"].shape[1])])


@pytest.mark.slow
def test_fresh_process_answer_trajectories_and_batch(tiny_checkpoint, videos, tmp_path):
    """`pipeline("video-qa")` in a new interpreter: trajectories per phrase; a batch of 3 = 3 single calls."""
    script = textwrap.dedent(
        f"""
        import json, sys
        import numpy as np
        import modeling_pite
        from transformers import pipeline
        sys.path.insert(0, {str(__file__.rsplit("/", 1)[0])!r})
        from test_pipelines import _force

        qa = pipeline("video-qa", model={str(tiny_checkpoint)!r})
        videos = {videos!r}
        kwargs = dict(question={QUESTION!r}, return_trajectories=True, logits_processor=_force(qa, {ANSWER!r}))
        singles = [qa(video, **kwargs) for video in videos]
        batch = qa(videos, batch_size=3, **kwargs)
        free = qa(videos[0], question={QUESTION!r}, max_new_tokens=5)
        def plain(out):
            return {{**out, "trajectories": [{{**t, "trajectory": t["trajectory"].tolist()}} for t in out["trajectories"]]}}
        json.dump({{"singles": [plain(o) for o in singles], "batch": [plain(o) for o in batch], "free": free}},
                  open(sys.argv[1], "w"))
        """
    )
    result_path = tmp_path / "result.json"
    subprocess.run([sys.executable, "-c", script, str(result_path)], check=True, timeout=300)
    result = json.loads(result_path.read_text())
    assert isinstance(result["free"]["answer"], str)
    config = PiteConfig.from_pretrained(tiny_checkpoint)
    shape = (config.num_trajectory_points, config.num_frames, 2)
    for single, batched in zip(result["singles"], result["batch"], strict=True):
        assert single["answer"] == batched["answer"] == ANSWER
        phrases = [t["phrase"] for t in single["trajectories"]]
        assert "the red circle" in phrases
        for mine, theirs in zip(single["trajectories"], batched["trajectories"], strict=True):
            assert np.asarray(mine["trajectory"]).shape == shape
            assert len(mine["timestamps"]) == config.num_frames and mine["timestamps"][-1] <= 2.0
            assert ANSWER[slice(*mine["char_span"])] == mine["phrase"]
            np.testing.assert_allclose(mine["trajectory"], theirs["trajectory"], atol=1e-5)
    first, second = (np.asarray(r["trajectories"][0]["trajectory"]) for r in result["singles"][:2])
    assert not np.allclose(first, second, atol=1e-6)  # each video's own trajectory, no mix-up in the batch


def test_batch_of_three_equals_three_single_calls(qa, videos):
    kwargs = dict(question=QUESTION, max_new_tokens=6, return_trajectories=True)  # the model's own (greedy) answers
    singles = [qa(video, **kwargs) for video in videos]
    batch = qa(videos, batch_size=3, **kwargs)
    assert [o["answer"] for o in batch] == [o["answer"] for o in singles]
    assert [o["video"] for o in batch] == videos
    for single, batched in zip(singles, batch, strict=True):
        assert [t["phrase"] for t in single["trajectories"]] == [t["phrase"] for t in batched["trajectories"]]
        for mine, theirs in zip(single["trajectories"], batched["trajectories"], strict=True):
            np.testing.assert_allclose(mine["trajectory"], theirs["trajectory"], atol=1e-5)


def test_phrase_trajectory_is_the_head_read_at_its_tokens(qa, videos):
    out = qa(videos[0], question=QUESTION, return_trajectories=True, logits_processor=_force(qa, ANSWER))
    phrase = next(t for t in out["trajectories"] if t["phrase"] == "the red circle")
    # recompute independently: prompt + answer through the model, positions shifted by one
    inputs = qa.preprocess({"video": videos[0], "question": QUESTION})
    tokenizer = qa.processor.tokenizer
    answer_ids = tokenizer(ANSWER, add_special_tokens=False).input_ids
    phrase_ids = tokenizer("the red circle", add_special_tokens=False).input_ids
    assert answer_ids[: len(phrase_ids)] == phrase_ids
    input_ids = torch.cat([inputs["input_ids"], torch.tensor([answer_ids])], dim=1)
    with torch.no_grad():
        trajectories = qa.model(input_ids=input_ids, pixel_values_videos=inputs["pixel_values_videos"]).trajectories
    start = inputs["input_ids"].shape[1] - 1
    expected = trajectories[0, start : start + len(phrase_ids)].mean(dim=0).numpy()
    np.testing.assert_allclose(phrase["trajectory"], expected, atol=1e-5)
    np.testing.assert_allclose(phrase["timestamps"], sample_frame_indices(12, 8) / 6, atol=1e-3)  # 12 frames, 6 fps


def test_inputs_file_object_array_chat_and_dict(qa, videos):
    force = _force(qa, ANSWER)
    with open(videos[1], "rb") as handle:
        from_file = qa(handle, question=QUESTION, logits_processor=force)
    assert from_file["answer"] == ANSWER and from_file["video"] == videos[1]
    frames = np.zeros((30, 40, 40, 3), np.uint8)
    from_array = qa(frames, question=QUESTION, fps=10, return_trajectories=True, logits_processor=force)
    assert from_array["video"] is None and from_array["trajectories"][0]["timestamps"][-1] == pytest.approx(2.9)
    chat = [{"role": "user", "content": QUESTION}]
    assert qa(videos[0], question=chat, logits_processor=force)["answer"] == ANSWER
    from_dicts = qa([{"video": videos[0], "question": QUESTION}, {"video": videos[2]}], question=QUESTION,
                    logits_processor=force)  # fmt: skip
    assert [o["video"] for o in from_dicts] == [videos[0], videos[2]]


def test_chat_gets_the_video_in_its_first_user_turn(qa, videos):
    prompt = qa.processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": QUESTION}]}],
        tokenize=False,
        add_generation_prompt=True,
    )
    inputs = qa.preprocess({"video": videos[0], "messages": [{"role": "user", "content": QUESTION}]})
    expected = qa.processor(text=[prompt], videos=[np.zeros((8, 32, 32, 3), np.uint8)], return_tensors="pt")
    assert inputs["input_ids"].tolist() == expected["input_ids"].tolist()
    assert (inputs["input_ids"] == qa.model.config.video_token_id).sum() == qa.model.config.num_frames


def test_grounding_returns_seconds(tiny_checkpoint, videos):
    grounding = pipeline("video-temporal-grounding", model=str(tiny_checkpoint))
    question = "During which frames can we see a red circle moves?"
    out = grounding(
        videos[0], query="A red circle moves.", logits_processor=_force(grounding, "from 02 to 05", question)
    )
    assert out["frame_span"] == (2, 5)
    duration = 2.0  # 12 frames at 6 fps; 8 sampled frames
    assert out["start"] == pytest.approx(2 * duration / 8, abs=0.01)
    assert out["end"] == pytest.approx(6 * duration / 8, abs=0.01)
    unparsed = grounding(videos[0], query="A red circle moves.", logits_processor=_force(grounding, "no", question))
    assert unparsed["start"] is None and unparsed["frame_span"] is None
    with pytest.raises(ValueError, match="query is empty"):
        grounding(videos[0], query=" ")
    with pytest.raises(ValueError, match="pass `fps=`"):
        grounding(np.zeros((4, 32, 32, 3), np.uint8), query="a circle")


def test_dense_captioning_returns_events_in_seconds(tiny_checkpoint, videos):
    from modeling_pite.evaluation.dense_captioning import DENSE_CAPTIONING_PROMPT

    captioning = pipeline("video-dense-captioning", model=str(tiny_checkpoint))
    text = "From 00 to 03, a red circle moves. From 04 to 07, a blue square appears."
    out = captioning(videos[1], logits_processor=_force(captioning, text, DENSE_CAPTIONING_PROMPT))
    assert [event["caption"] for event in out["events"]] == ["a red circle moves.", "a blue square appears."]
    seconds = [second for event in out["events"] for second in (event["start"], event["end"])]
    assert seconds == pytest.approx([0.0, 1.0, 1.0, 2.0], abs=0.01)  # 8 sampled frames over 2 s


def test_bad_input_raises_a_clear_error(qa, videos, tmp_path):
    with pytest.raises(VideoDecodeError, match="missing.mp4: file not found"):
        qa(str(tmp_path / "missing.mp4"), question=QUESTION)
    with pytest.raises(VideoDecodeError, match="upload.mp4: .*not a readable video"):
        buffer = io.BytesIO(b"not a video")
        buffer.name = "upload.mp4"
        qa(buffer, question=QUESTION)
    with pytest.raises(ValueError, match="question is empty"):
        qa(videos[0], question="   ")
    with pytest.raises(ValueError, match="question is empty"):
        qa(videos[0])
    with pytest.raises(ValueError, match=r"uint8 \[T, H, W, 3\]"):
        qa(np.zeros((4, 32, 32), np.uint8), question=QUESTION)
    with pytest.raises(TypeError, match="a video must be a path"):
        qa(12, question=QUESTION)
    with pytest.raises(ValueError, match="needs a 'video' key"):
        qa({"clip": videos[0]}, question=QUESTION)


def test_registered_on_import(tiny_checkpoint):
    from transformers.pipelines import PIPELINE_REGISTRY

    assert PIPELINE_REGISTRY.check_task("video-qa")[1]["impl"] is VideoQuestionAnsweringPipeline
    assert {"video-temporal-grounding", "video-dense-captioning"} <= set(PIPELINE_REGISTRY.get_supported_tasks())


def test_noun_phrases_with_and_without_the_annotation_chunker():
    answer = "The red circle is near a blue box."
    with_chunker = [phrase for _, _, phrase in _noun_phrases(_phrase_extractor(), answer)]
    fallback = _noun_phrases(None, answer)  # remote-code installs without the `processing` package
    assert with_chunker == [phrase for _, _, phrase in fallback] == ["The red circle", "a blue box"]
    assert all(answer[begin:end] == phrase for begin, end, phrase in fallback)
