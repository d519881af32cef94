"""PiteVideoProcessor numerics and inputs; PiteProcessor expansion, chat template, save/load."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoProcessor
from transformers.models.auto.video_processing_auto import AutoVideoProcessor
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from modeling_pite import PiteProcessor, PiteVideoProcessor
from modeling_pite.processing_pite import VICUNA_SYSTEM_PROMPT
from modeling_pite.video_io import sample_video
from processing.video_writer import write_video

TINY = {"num_frames": 4, "size": {"shortest_edge": 32}, "crop_size": {"height": 32, "width": 32}}


@pytest.fixture(scope="module")
def video_path(tmp_path_factory):
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(12)]
    return write_video(tmp_path_factory.mktemp("proc") / "clip.mp4", frames, fps=6)


@pytest.fixture
def processor(tiny_tokenizer):
    return PiteProcessor(PiteVideoProcessor(**TINY), tiny_tokenizer)


def random_image(height=40, width=70, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def test_video_processor_matches_clip_image_processor_exactly():
    """Same resize (bicubic, shortest edge), crop, rescale and OpenAI mean/std as CLIP: max |diff| must be 0."""
    image = random_image(300, 400)
    ours = PiteVideoProcessor()(image, return_tensors="pt")["pixel_values_videos"]
    clip = CLIPImageProcessorPil()(image, return_tensors="pt")["pixel_values"]
    assert ours.shape == (1, 1, 3, 224, 224)
    torch.testing.assert_close(ours[0], clip, rtol=0, atol=1e-6)
    frames = np.stack([np.asarray(random_image(seed=s)) for s in range(3)])
    ours = PiteVideoProcessor(**TINY)(frames, num_frames=3, return_tensors="pt")["pixel_values_videos"][0]
    clip = CLIPImageProcessorPil(**{k: v for k, v in TINY.items() if k != "num_frames"})(
        list(frames), return_tensors="pt"
    )
    torch.testing.assert_close(ours, clip["pixel_values"], rtol=0, atol=1e-6)


def test_video_processor_on_a_file_uses_the_sampler(video_path):
    video_processor = PiteVideoProcessor(**TINY)
    out = video_processor(str(video_path), return_tensors="pt", return_metadata=True)
    frames, metadata = sample_video(video_path, 4)
    expected = video_processor(frames, return_tensors="pt")["pixel_values_videos"]
    assert out["pixel_values_videos"].shape == (1, 4, 3, 32, 32)
    torch.testing.assert_close(out["pixel_values_videos"], expected, rtol=0, atol=0)
    assert out["video_metadata"][0].frame_indices == metadata.frame_indices == [0, 4, 7, 11]


def test_video_processor_input_forms(video_path):
    video_processor = PiteVideoProcessor(**TINY)
    array = np.random.default_rng(1).integers(0, 256, (9, 40, 56, 3), dtype=np.uint8)
    image = random_image()

    def shape(videos, **kwargs):
        return tuple(video_processor(videos, return_tensors="pt", **kwargs)["pixel_values_videos"].shape)

    assert shape(array) == (1, 4, 3, 32, 32)  # frames sampled to num_frames
    assert shape(torch.from_numpy(array), num_frames=9) == (1, 9, 3, 32, 32)
    assert shape(image) == (1, 1, 3, 32, 32)  # an image is a one-frame video
    assert shape(np.asarray(image)) == (1, 1, 3, 32, 32)
    assert shape([image, image, image]) == (1, 4, 3, 32, 32)  # a list of frames is one video
    assert shape([[image], [image]]) == (2, 1, 3, 32, 32)  # a list of one-frame videos
    assert shape([video_path, str(video_path)]) == (2, 4, 3, 32, 32)
    assert shape([array, array], do_sample_frames=False) == (2, 9, 3, 32, 32)
    # sampled frames are the ones at PiTe's indices
    sampled = video_processor(array, return_tensors="pt")["pixel_values_videos"][0]
    direct = video_processor(array[[0, 3, 5, 8]], do_sample_frames=False, return_tensors="pt")["pixel_values_videos"][
        0
    ]
    torch.testing.assert_close(sampled, direct, rtol=0, atol=0)
    with pytest.raises(ValueError, match="share frame count"):
        video_processor([array, [image]], return_tensors="pt")
    assert [v.shape[0] for v in video_processor([array, [image]])["pixel_values_videos"]] == [4, 1]


def test_video_processor_saves_and_loads(tmp_path):
    video_processor = PiteVideoProcessor(**TINY)
    video_processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "video_preprocessor_config.json").read_text())
    assert saved["video_processor_type"] == "PiteVideoProcessor" and saved["num_frames"] == 4
    loaded = AutoVideoProcessor.from_pretrained(tmp_path)
    assert type(loaded) is PiteVideoProcessor and loaded.to_dict() == video_processor.to_dict()


def test_each_video_placeholder_becomes_one_token_per_frame(processor, tiny_tokenizer, video_path):
    out = processor(
        text=["USER: <video>\nWhat color? ASSISTANT:", "<video> <video> left"], videos=[video_path] * 3, padding=True
    )
    video_tokens = (out["input_ids"] == processor.video_token_id).sum(-1)
    assert video_tokens.tolist() == [4, 8]
    assert out["pixel_values_videos"].shape == (3, 4, 3, 32, 32)
    image_out = processor(text="<video> left", videos=random_image())
    assert (image_out["input_ids"] == processor.video_token_id).sum() == 1
    # the text around the placeholder is tokenized as without it
    plain = tiny_tokenizer("USER: \nWhat color? ASSISTANT:")["input_ids"]
    first = out["input_ids"][0][out["attention_mask"][0].bool()]
    assert [t for t in first.tolist() if t != processor.video_token_id] == plain


def test_precomputed_features_are_passed_through(processor):
    features = torch.randn(2, 5, 24)
    out = processor(text=["<video> a", "b <video>"], video_features=features, padding=True)
    assert torch.equal(out["video_features"], features) and "pixel_values_videos" not in out
    assert (out["input_ids"] == processor.video_token_id).sum(-1).tolist() == [5, 5]
    single = processor(text="<video> a", video_features=features[0])
    assert single["video_features"].shape == (1, 5, 24)


@pytest.mark.parametrize(
    ("text", "num_videos", "message"),
    [
        ("<video> <video> two placeholders", 1, "holds 2 <video> placeholder"),
        ("no placeholder", 1, "holds 0 <video> placeholder"),
        ("<video> one placeholder", 0, "but 0 video"),
    ],
)
def test_placeholder_count_must_match_videos(processor, video_path, text, num_videos, message):
    with pytest.raises(ValueError, match=message):
        processor(text=text, videos=[video_path] * num_videos if num_videos else None)
    with pytest.raises(ValueError, match=message):
        processor(text=text, video_features=torch.zeros(num_videos, 2, 24) if num_videos else None)


def test_videos_and_features_together_are_refused(processor, video_path):
    with pytest.raises(ValueError, match="not both"):
        processor(text="<video>", videos=video_path, video_features=torch.zeros(1, 2, 24))


def conversation(video):
    return [
        {
            "role": "user",
            "content": [{"type": "video", **video}, {"type": "text", "text": "What color is the shape?"}],
        },
        {"role": "assistant", "content": [{"type": "text", "text": "The shape is red."}]},
        {"role": "user", "content": [{"type": "text", "text": "During which frames can we see it?"}]},
        {"role": "assistant", "content": "From 05 to 37."},
    ]


def test_chat_template_is_vicuna_v1(processor, video_path):
    messages = conversation({"path": str(video_path)})
    assert processor.apply_chat_template(messages) == (
        f"{VICUNA_SYSTEM_PROMPT} USER: <video>\nWhat color is the shape? ASSISTANT: The shape is red.</s>"
        "USER: During which frames can we see it? ASSISTANT: From 05 to 37.</s>"
    )
    prompt = processor.apply_chat_template(messages[:1], add_generation_prompt=True)
    assert prompt.endswith(" USER: <video>\nWhat color is the shape? ASSISTANT:")
    custom = [{"role": "system", "content": "Be brief."}, *messages[:1]]
    assert processor.apply_chat_template(custom).startswith("Be brief. USER: <video>\n")


@pytest.mark.parametrize("video_block", ["path", "array"])
def test_apply_chat_template_gives_model_inputs_and_assistant_mask(processor, tiny_tokenizer, video_path, video_block):
    video = {"path": str(video_path)} if video_block == "path" else {"video": sample_video(video_path, 6)[0]}
    out = processor.apply_chat_template(
        conversation(video), tokenize=True, return_dict=True, return_assistant_tokens_mask=True, return_tensors="pt"
    )
    assert out["pixel_values_videos"].shape == (1, 4, 3, 32, 32)
    assert (out["input_ids"] == processor.video_token_id).sum() == 4
    assert out["input_ids"][0, 0] == tiny_tokenizer.bos_token_id
    mask = out["assistant_masks"][0].bool()
    answers = tiny_tokenizer.decode(out["input_ids"][0][mask])
    assert answers.replace(" ", "") == "Theshapeisred.</s>From05to37.</s>"


def test_processor_round_trips_through_auto_processor(processor, tmp_path, video_path):
    processor.save_pretrained(tmp_path)
    assert {"processor_config.json", "chat_template.jinja", "tokenizer.json"} <= {p.name for p in tmp_path.iterdir()}
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert type(loaded) is PiteProcessor and type(loaded.video_processor) is PiteVideoProcessor
    assert loaded.chat_template == processor.chat_template and loaded.video_token_id == processor.video_token_id
    kwargs = {"tokenize": True, "return_dict": True, "return_assistant_tokens_mask": True, "return_tensors": "pt"}
    before = processor.apply_chat_template(conversation({"path": str(video_path)}), **kwargs)
    after = loaded.apply_chat_template(conversation({"path": str(video_path)}), **kwargs)
    assert before.keys() == after.keys()
    for key in before:
        assert torch.equal(before[key], after[key]), key


def test_post_processing(processor, tiny_tokenizer):
    answers = ["the red circle moves to the left, from 12 to 40.", "no idea"]
    ids = tiny_tokenizer(answers, padding=True, return_tensors="pt")["input_ids"]
    decoded = processor.post_process_video_text_to_text(ids)
    assert [d.replace(" ", "") for d in decoded] == [a.replace(" ", "") for a in answers]
    assert processor.post_process_grounding(decoded) == [(12, 40), None]


def test_processor_output_runs_through_the_tiny_model(tiny_tokenizer, video_path):
    from modeling_pite import PiteConfig, PiteForConditionalGeneration

    config = PiteConfig.from_preset("tiny")
    video_processor = PiteVideoProcessor(
        num_frames=config.num_frames, size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    )
    processor = PiteProcessor(video_processor, tiny_tokenizer)
    assert processor.video_token_id == config.video_token_id
    inputs = processor.apply_chat_template(
        conversation({"path": str(video_path)}),
        tokenize=True,
        return_dict=True,
        return_assistant_tokens_mask=True,
        return_tensors="pt",
    )
    labels = inputs["input_ids"].masked_fill(inputs.pop("assistant_masks") == 0, -100)
    torch.manual_seed(0)
    output = PiteForConditionalGeneration(config)(**inputs, labels=labels)
    assert output.logits.shape[:2] == inputs["input_ids"].shape and torch.isfinite(output.loss)
