import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard
from transformers import AutoModel, AutoModelForImageTextToText, AutoProcessor

from modeling_pite import PiteConfig, PiteForConditionalGeneration, PiteProcessor, PiteVideoProcessor, hub
from modeling_pite.hub import (
    BENCHMARKS,
    REPORTED_RESULTS,
    TRAINING_STAGES,
    create_model_card,
    push_to_hub,
    save_for_hub,
)


def test_card_names_every_stage_and_metric_and_parses_back(tmp_path):
    card = create_model_card("pite-7b", repo_id="someone/pite-7b")
    text = str(card)
    for stage in TRAINING_STAGES:
        assert stage.name in text
    for benchmark_key, metrics in REPORTED_RESULTS["pite-7b"].items():
        assert BENCHMARKS[benchmark_key].dataset_name in text
        for metric in metrics:
            assert f"| {metric} |" in text
    assert 'pipeline("video-qa", model="someone/pite-7b", trust_remote_code=True)' in text
    card.save(tmp_path / "README.md")
    data = ModelCard.load(tmp_path / "README.md").data
    parsed = {(r.dataset_type, r.dataset_config, r.metric_name): r.metric_value for r in data.eval_results}
    expected = {
        (BENCHMARKS[b].dataset_type, BENCHMARKS[b].dataset_config, metric): value
        for b, metrics in REPORTED_RESULTS["pite-7b"].items()
        for metric, value in metrics.items()
    }
    assert parsed == expected
    assert data.pipeline_tag == "video-text-to-text" and "lmsys/vicuna-7b-v1.5" in data.base_model


def test_card_with_own_results_and_without_results():
    card = create_model_card("my-pite", results={"activitynet_grounding": {"mIoU": 12.5}}, results_source="my run")
    assert [(r.metric_name, r.metric_value) for r in card.data.eval_results] == [("mIoU", 12.5)]
    assert "No evaluation results" in str(create_model_card("untrained-pite"))
    with pytest.raises(ValueError, match="unknown metric 'BLEU'"):
        create_model_card("x", results={"activitynet_dense_captioning": {"BLEU": 1.0}})
    with pytest.raises(ValueError, match="unknown benchmark"):
        create_model_card("x", results={"kinetics": {"accuracy": 1.0}})


@pytest.fixture(scope="module")
def tiny_model_and_processor(tiny_tokenizer):
    torch.manual_seed(0)
    config = PiteConfig.from_preset("tiny")
    video_processor = PiteVideoProcessor(
        num_frames=config.num_frames, size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    )
    return PiteForConditionalGeneration(config).eval(), PiteProcessor(video_processor, tiny_tokenizer)


def test_push_folder_is_complete_and_loads_back(tmp_path, tiny_model_and_processor):
    model, processor = tiny_model_and_processor
    card = create_model_card("tiny-pite", results={"msvd_qa": {"accuracy": 1.5}}, results_source="unit test")
    folder = save_for_hub(model, processor, tmp_path / "tiny-pite", card)
    names = {path.name for path in folder.iterdir()}
    expected = {"config.json", "model.safetensors", "generation_config.json", "processor_config.json",
                "chat_template.jinja", "tokenizer.json", "tokenizer_config.json", "README.md"}  # fmt: skip
    assert expected <= names

    loaded = AutoModelForImageTextToText.from_pretrained(folder).eval()
    assert isinstance(loaded, PiteForConditionalGeneration)
    assert isinstance(AutoModel.from_pretrained(folder), PiteForConditionalGeneration)  # AutoModel: full model
    loaded_processor = AutoProcessor.from_pretrained(folder)
    assert isinstance(loaded_processor, PiteProcessor) and loaded_processor.chat_template == processor.chat_template
    inputs = loaded_processor(
        text=["USER: <video>\nWhat color is the shape? ASSISTANT:"],
        videos=[np.zeros((8, 32, 32, 3), np.uint8)],
        return_tensors="pt",
    )
    with torch.no_grad():
        expected_output, output = model(**inputs), loaded(**inputs)
    torch.testing.assert_close(output.logits, expected_output.logits)
    torch.testing.assert_close(output.trajectories, expected_output.trajectories)  # the heads were saved too
    data = ModelCard.load(folder / "README.md").data
    assert [(r.dataset_name, r.metric_name, r.metric_value) for r in data.eval_results] == [
        ("MSVD-QA", "accuracy", 1.5)
    ]


def test_push_to_hub_is_one_upload_with_the_users_token(tmp_path, tiny_model_and_processor, monkeypatch):
    calls = []

    class RecordingApi:
        def __init__(self, token=None):
            calls.append(("init", token))

        def create_repo(self, repo_id, private=False, exist_ok=False):
            calls.append(("create_repo", repo_id, private, exist_ok))

        def upload_folder(self, *, repo_id, folder_path, commit_message):
            uploaded = {path.name for path in Path(folder_path).iterdir()}
            calls.append(("upload_folder", repo_id, uploaded))
            return "commit-info"

    monkeypatch.setattr(hub, "HfApi", RecordingApi)
    model, processor = tiny_model_and_processor
    assert push_to_hub(model, processor, "someone/tiny-pite", token="hf_secret", private=True) == "commit-info"
    assert calls[0] == ("init", "hf_secret")
    assert calls[1] == ("create_repo", "someone/tiny-pite", True, True)
    assert [call[0] for call in calls].count("upload_folder") == 1
    assert {"README.md", "config.json", "model.safetensors", "processor_config.json"} <= calls[2][2]


@pytest.mark.slow
def test_pushed_folder_runs_the_pipeline_without_the_package(tmp_path, tiny_model_and_processor):
    """`trust_remote_code` users: the folder's own code (model, processor, pipelines) in a fresh interpreter."""
    model, processor = tiny_model_and_processor
    folder = save_for_hub(model, processor, tmp_path / "tiny-pite")
    assert not hasattr(model.config, "custom_pipelines") and "_auto_class" not in vars(processor)  # untouched
    assert {"pipelines.py", "processing_pite.py", "modeling_pite.py", "video_io.py"} <= {
        p.name for p in folder.iterdir()
    }
    frames = np.zeros((10, 32, 32, 3), np.uint8)
    np.save(tmp_path / "frames.npy", frames)
    script = f"""
import sys
import numpy as np
sys.modules["modeling_pite"] = sys.modules["processing"] = None  # as if `pite` were not installed
from transformers import pipeline
qa = pipeline("video-qa", model={str(folder)!r}, trust_remote_code=True)
out = qa(np.load({str(tmp_path / "frames.npy")!r}), question="What color is the shape?", max_new_tokens=4)
print(type(qa).__module__.startswith("transformers_modules"), isinstance(out["answer"], str))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-2:] == ["True", "True"]
