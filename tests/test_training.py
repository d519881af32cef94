"""PiteTrainer and the LoRA stage chain, in process on a tiny random PiTe (fast) and through accelerate (slow)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoModel, AutoModelForImageTextToText, AutoProcessor, TrainerCallback

from modeling_pite import PiteConfig, PiteForConditionalGeneration, PiteProcessor, PiteVideoProcessor
from modeling_pite.stages import StageArguments, merge_adapter, prepare_stage_model, save_stage
from modeling_pite.trainer_pite import PiteTrainer, PiteTrainingArguments
from processing.collators import PiteDataCollator
from processing.stage_data import load_stage_dataset
from processing.video_writer import write_video

REPO = Path(__file__).resolve().parents[1]
NUM_FRAMES = PiteConfig.from_preset("tiny").num_frames
STAGE_FILES = {1: "ln.jsonl", 2: "trajectories.jsonl", 3: "instructions.json"}


def write_stage_data(folder: Path, num_records: int = 2) -> Path:
    """Tiny data of all three stages in their public formats; answers differ in length on purpose."""
    rng = np.random.default_rng(0)
    captions = ["the red circle moves to the left.", "a blue square appears from the right and moves up."]
    answers = ["red", "the shape is a blue square moving up."]
    ln, trajectories, instructions = [], [], []
    for i in range(num_records):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(folder / f"img{i}.png")
        write_video(folder / f"v{i}.mp4", [np.full((32, 32, 3), (60 * i + 9 * j) % 255, np.uint8) for j in range(12)])
        caption = captions[i % 2]
        words = caption.rstrip(".").split()
        ln.append(
            {
                "image_id": f"img{i}",
                "image": f"img{i}.png",
                "caption": caption,
                "timed_caption": [
                    {"utterance": " ".join(words[k : k + 2]), "start_time": k, "end_time": k + 1}
                    for k in range(0, len(words), 2)
                ],
                "traces": [
                    [{"x": float(rng.uniform()), "y": float(rng.uniform()), "t": k + 0.5} for k in range(len(words))]
                ],
            }
        )
        phrase = caption.split(" moves")[0].split(" appears")[0]
        trajectories.append(
            {
                "id": f"v{i}",
                "video": f"v{i}.mp4",
                "duration": 1.2,
                "events": [
                    {
                        "caption": caption,
                        "start": 0.1,
                        "end": 0.9,
                        "phrases": [
                            {
                                "text": phrase,
                                "char_span": [0, len(phrase)],
                                "trajectory": rng.uniform(size=(3, NUM_FRAMES, 2)).round(3).tolist(),
                            }
                        ],
                    }
                ],
            }
        )
        instructions.append(
            {
                "id": f"v{i}",
                "video": f"v{i}.mp4",
                "conversations": [
                    {"from": "human", "value": "<video>\nWhat color is the shape?"},
                    {"from": "gpt", "value": answers[i % 2]},
                ],
            }
        )
    (folder / STAGE_FILES[1]).write_text("".join(json.dumps(r) + "\n" for r in ln))
    (folder / STAGE_FILES[2]).write_text("".join(json.dumps(r) + "\n" for r in trajectories))
    (folder / STAGE_FILES[3]).write_text(json.dumps(instructions))
    return folder


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """One torch thread: several times faster than two on a busy 2-core machine; restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_stage_data(tmp_path_factory.mktemp("stages"))


@pytest.fixture(scope="module")
def processor(tiny_tokenizer):
    video_processor = PiteVideoProcessor(
        num_frames=NUM_FRAMES, size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    )
    return PiteProcessor(video_processor=video_processor, tokenizer=tiny_tokenizer)


def stage_data(data_dir, stage):
    kwargs = {2: {"num_frames": NUM_FRAMES}}.get(stage, {})
    return load_stage_dataset(stage, [data_dir / STAGE_FILES[stage]], **kwargs)


def tiny_model(seed=0, **overrides):
    torch.manual_seed(seed)
    return PiteForConditionalGeneration(PiteConfig.from_preset("tiny", **overrides))


class GradientGrabber(TrainerCallback):
    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        self.gradients = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def make_trainer(tmp_path, processor, dataset, stage, callbacks=(), model=None, lora_r=4, **training):
    stage_args = StageArguments(stage=stage, lora_r=lora_r, lora_alpha=2 * lora_r, lora_dropout=0.0)
    model = prepare_stage_model(model if model is not None else tiny_model(), stage_args)
    defaults = {"max_steps": 1, "logging_steps": 1, "report_to": [], "use_cpu": True, "save_strategy": "no"}
    args = PiteTrainingArguments(output_dir=str(tmp_path / "out"), **{**defaults, **training})
    collator = PiteDataCollator(processor, coordinate_targets=stage_args.coordinate_targets)
    return PiteTrainer(
        model=model, args=args, train_dataset=dataset, data_collator=collator, callbacks=list(callbacks)
    )


def training_logs(trainer):
    return [entry for entry in trainer.state.log_history if "loss" in entry]


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_gradient_accumulation_matches_the_full_batch(tmp_path, processor, data_dir, stage):
    dataset = stage_data(data_dir, stage)
    results = []
    for batch_size, accumulation in ((2, 1), (1, 2)):
        grabber = GradientGrabber()
        trainer = make_trainer(
            tmp_path / f"{batch_size}x{accumulation}", processor, dataset, stage, [grabber],
            per_device_train_batch_size=batch_size, gradient_accumulation_steps=accumulation,
        )  # fmt: skip
        trainer.train()
        results.append((training_logs(trainer)[0], grabber.gradients))
    (full_log, full_grads), (accumulated_log, accumulated_grads) = results
    components = {1: {"lm_loss", "localization_loss"}, 2: {"lm_loss", "trajectory_loss"}, 3: {"lm_loss"}}[stage]
    assert components <= set(full_log) and not ({"localization_loss", "trajectory_loss"} - components) & set(full_log)
    for name in ["loss", *components]:
        assert accumulated_log[name] == pytest.approx(full_log[name], abs=1e-5), name
    assert full_log["loss"] == pytest.approx(sum(full_log[name] for name in components), abs=1e-5)
    assert full_grads.keys() == accumulated_grads.keys() and len(full_grads) > 0
    for name, gradient in full_grads.items():
        torch.testing.assert_close(accumulated_grads[name], gradient, atol=1e-5, rtol=0, msg=name)


@pytest.mark.slow
@pytest.mark.parametrize("stage", [1, 2, 3])
def test_overfitting_one_batch_drives_every_loss_down(tmp_path, processor, data_dir, stage):
    dataset = stage_data(data_dir, stage)
    # With the default init (0.02) a random tiny LM's logits stay near +-1 behind its frozen final norm and
    # lm_head, so no LoRA can lower CE by 80%; a pretrained LM has no such bound. A wider init lifts it.
    model = tiny_model(text_config={"initializer_range": 0.2})
    trainer = make_trainer(
        tmp_path, processor, dataset, stage, model=model, lora_r=8, per_device_train_batch_size=2, max_steps=50,
        learning_rate=1e-2, lr_scheduler_type="constant", warmup_steps=0, max_grad_norm=0.0,
    )  # fmt: skip
    trainer.train()
    logs = training_logs(trainer)
    names = [name for name in ("lm_loss", "localization_loss", "trajectory_loss") if name in logs[0]]
    for name in ["loss", *names]:
        assert logs[-1][name] <= 0.2 * logs[0][name], (name, logs[0][name], logs[-1][name])


def test_stage2_trajectory_head_starts_as_the_repeated_localization_head():
    model = tiny_model()
    torch.nn.init.normal_(model.localization_head.weight)
    torch.nn.init.normal_(model.localization_head.bias)
    localization = model.localization_head.weight.detach().clone(), model.localization_head.bias.detach().clone()
    peft_model = prepare_stage_model(model, StageArguments(stage=2, lora_r=4, lora_alpha=8))
    head = peft_model.base_model.model.trajectory_head.modules_to_save["default"]
    repeats = model.config.num_trajectory_points * model.config.num_frames
    torch.testing.assert_close(head.weight, localization[0].repeat(repeats, 1), atol=0, rtol=0)
    torch.testing.assert_close(head.bias, localization[1].repeat(repeats), atol=0, rtol=0)
    hidden = torch.randn(5, model.config.text_config.hidden_size)
    predicted = head(hidden).view(5, model.config.num_trajectory_points, model.config.num_frames, 2)
    torch.testing.assert_close(predicted, model.localization_head(hidden)[:, None, None].expand_as(predicted))
    # the ablation switch leaves the trajectory head as it was
    untouched = tiny_model()
    before = untouched.trajectory_head.weight.detach().clone()
    prepare_stage_model(untouched, StageArguments(stage=2, init_trajectory_head=False))
    torch.testing.assert_close(untouched.trajectory_head.weight, before, atol=0, rtol=0)


def test_lora_wraps_only_the_language_model_and_trains_the_stage_modules():
    peft_model = prepare_stage_model(tiny_model(), StageArguments(stage=1, lora_r=4, lora_alpha=8))
    lora_modules = {name for name, _ in peft_model.named_modules() if name.endswith("lora_A")}
    assert lora_modules and all(".language_model." in name for name in lora_modules)
    assert {name.split(".")[-2] for name in lora_modules} == {f"{p}_proj" for p in "qkvo"} | {
        "gate_proj",
        "up_proj",
        "down_proj",
    }
    trainable = {name for name, p in peft_model.named_parameters() if p.requires_grad}
    assert any("visual_adapter" in name for name in trainable) and any(
        "localization_head" in name for name in trainable
    )
    assert not any("vision_tower" in name or "trajectory_head" in name or "lm_head" in name for name in trainable)


def test_stage_output_loads_and_equals_base_plus_adapter(tmp_path, processor, data_dir):
    base_dir = tmp_path / "base"
    base = tiny_model()
    base.save_pretrained(base_dir)
    trainer = make_trainer(
        tmp_path, processor, stage_data(data_dir, 1), 1, model=AutoModelForImageTextToText.from_pretrained(base_dir),
        per_device_train_batch_size=2, max_steps=2, learning_rate=1e-2,
    )  # fmt: skip
    trainer.train()
    save_stage(trainer, tmp_path / "stage1", processor)

    merged = AutoModelForImageTextToText.from_pretrained(tmp_path / "stage1")
    rebuilt = merge_adapter(AutoModelForImageTextToText.from_pretrained(base_dir), tmp_path / "stage1" / "adapter")
    batch = PiteDataCollator(processor, "localization")([stage_data(data_dir, 1)[0]])
    batch.pop("num_skipped_videos")
    with torch.no_grad():
        expected, got, untrained = merged(**batch), rebuilt(**batch), base(**batch)
    torch.testing.assert_close(got.logits, expected.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.localizations, expected.localizations, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(untrained.localizations, expected.localizations)  # training changed the model
    trainables = load_file(tmp_path / "stage1" / "non_lora_trainables.safetensors")
    assert {"model.visual_adapter.weight", "localization_head.weight", "localization_head.bias"} <= set(trainables)
    torch.testing.assert_close(trainables["localization_head.weight"], merged.localization_head.weight)
    assert AutoProcessor.from_pretrained(tmp_path / "stage1").video_token_id == processor.video_token_id


def test_missing_video_during_training_is_skipped_and_counted(tmp_path, processor, data_dir, caplog):
    records = json.loads((data_dir / STAGE_FILES[3]).read_text())
    records.append({**records[0], "id": "gone", "video": "gone.mp4"})
    (tmp_path / "with_missing.json").write_text(json.dumps(records))
    dataset = load_stage_dataset(3, [tmp_path / "with_missing.json"], media_folder=data_dir)
    trainer = make_trainer(tmp_path, processor, dataset, 3, per_device_train_batch_size=3, max_steps=2)
    trainer.train()
    logs = training_logs(trainer)
    assert [entry["skipped_videos"] for entry in logs] == [1, 2]  # cumulative count, one per epoch
    assert "gone.mp4" in caplog.text


# through `accelerate launch`, as users and the demo run it


def launch(args, num_processes=1, cwd=None):
    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", str(REPO / "examples" / "configs" / ("accelerate_cpu.yaml" if num_processes == 1 else "accelerate_cpu_multi.yaml")),
        "--num_processes", str(num_processes),
        str(REPO / "examples" / "train_stage.py"),
        "--lora_r", "4", "--lora_alpha", "8", "--lora_dropout", "0", "--logging_steps", "1",
        "--per_device_train_batch_size", "1", "--gradient_accumulation_steps", "1",
        "--save_strategy", "no", "--dataloader_num_workers", "0", "--report_to", "none",
        *map(str, args),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


def first_step_log(output_dir):
    state = json.loads((Path(output_dir) / "trainer_state.json").read_text())
    return next(entry for entry in state["log_history"] if "loss" in entry)


@pytest.mark.slow
def test_three_stages_chain_through_accelerate_launch(tmp_path, data_dir):
    out = tmp_path / "out"
    launch([
        "--stage", 1, "--init_preset", "tiny", "--data_files", data_dir / STAGE_FILES[1],
        "--tokenizer_corpus_files", data_dir / STAGE_FILES[2], data_dir / STAGE_FILES[3],
        "--output_dir", out / "stage1", "--max_steps", 2,
    ])  # fmt: skip
    launch([
        "--stage", 2, "--model_name_or_path", out / "stage1", "--data_files", data_dir / STAGE_FILES[2],
        "--output_dir", out / "stage2", "--max_steps", 2,
    ])  # fmt: skip
    launch([
        "--stage", 3, "--model_name_or_path", out / "stage2", "--data_files", data_dir / STAGE_FILES[3],
        "--output_dir", out / "final", "--max_steps", 2,
    ])  # fmt: skip
    assert {"trajectory_loss", "lm_loss"} <= set(first_step_log(out / "stage2"))
    assert "localization_loss" in first_step_log(out / "stage1") and "lm_loss" in first_step_log(out / "final")

    assert AutoModel.from_pretrained(out / "final") is not None
    model = AutoModelForImageTextToText.from_pretrained(out / "final").eval()
    processor = AutoProcessor.from_pretrained(out / "final")
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What color is the shape?"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(text=[text], videos=[str(data_dir / "v0.mp4")])
    generated = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    assert generated.shape[1] > inputs["input_ids"].shape[1]
    # each stage trained its own head: the stage-2 merge changed the trajectory head, stage 3 kept it
    stage1, stage2 = (load_file(out / name / "model.safetensors") for name in ("stage1", "stage2"))
    final = load_file(out / "final" / "model.safetensors")
    assert not torch.equal(stage1["trajectory_head.weight"], stage2["trajectory_head.weight"])
    assert torch.equal(stage2["trajectory_head.weight"], final["trajectory_head.weight"])
    # the adapter trains in stages 1-2 and stays frozen in stage 3 (VTimeLLM's recipe, the release's files)
    adapter = "model.visual_adapter.weight"
    assert not torch.equal(stage1[adapter], stage2[adapter]) and torch.equal(stage2[adapter], final[adapter])
    assert load_file(out / "final" / "non_lora_trainables.safetensors") == {}

    # stage 3 with trajectory records mixed in keeps the trajectory loss on and trains the head
    launch([
        "--stage", 3, "--model_name_or_path", out / "stage2", "--data_files", data_dir / STAGE_FILES[3],
        "--trajectory_data_files", data_dir / STAGE_FILES[2], "--output_dir", out / "rehearsal", "--max_steps", 2,
    ])  # fmt: skip
    assert {"trajectory_loss", "lm_loss"} <= set(first_step_log(out / "rehearsal"))
    rehearsal = load_file(out / "rehearsal" / "model.safetensors")
    assert not torch.equal(stage2["trajectory_head.weight"], rehearsal["trajectory_head.weight"])
    assert torch.equal(stage2[adapter], rehearsal[adapter])
    assert set(load_file(out / "rehearsal" / "non_lora_trainables.safetensors")) == {
        "trajectory_head.weight",
        "trajectory_head.bias",
    }


def test_stage3_trajectory_data_keeps_the_trajectory_loss_and_head():
    plain = StageArguments(stage=3)
    assert plain.coordinate_targets is None and plain.modules_to_save == []
    mixed = StageArguments(stage=3, trajectory_data_files=["traj.parquet"])
    assert mixed.coordinate_targets == "trajectory" and mixed.modules_to_save == ["trajectory_head"]
    with pytest.raises(ValueError, match="stage 2 takes its data as data_files"):
        StageArguments(stage=2, trajectory_data_files=["traj.parquet"])


@pytest.mark.slow
def test_two_processes_give_the_same_first_step_loss_as_one(tmp_path, data_dir):
    model_dir = tmp_path / "stage1"
    launch([
        "--stage", 1, "--init_preset", "tiny", "--data_files", data_dir / STAGE_FILES[1],
        "--tokenizer_corpus_files", data_dir / STAGE_FILES[2], "--output_dir", model_dir, "--max_steps", 1,
    ])  # fmt: skip
    common = [
        "--stage",
        2,
        "--model_name_or_path",
        model_dir,
        "--data_files",
        data_dir / STAGE_FILES[2],
        "--max_steps",
        1,
    ]
    single = launch([*common, "--output_dir", tmp_path / "one", "--per_device_train_batch_size", 2])
    double = launch([*common, "--output_dir", tmp_path / "two"], num_processes=2)  # 2 x 1: the same global batch
    assert "; 1 process(es)" in single.stderr + single.stdout and "; 2 process(es)" in double.stderr + double.stdout
    one, two = first_step_log(tmp_path / "one"), first_step_log(tmp_path / "two")
    for name in ("loss", "lm_loss", "trajectory_loss"):
        assert two[name] == pytest.approx(one[name], abs=1e-5), name


def test_resume_from_checkpoint_continues_the_same_run(tmp_path, processor, data_dir):
    dataset = stage_data(data_dir, 2)

    def trained(folder, max_steps, resume=None):
        trainer = make_trainer(
            folder, processor, dataset, 2, per_device_train_batch_size=1, max_steps=max_steps,
            learning_rate=1e-2, lr_scheduler_type="constant", save_strategy="steps", save_steps=1, warmup_steps=0,
        )  # fmt: skip
        trainer.train(resume_from_checkpoint=resume)
        return trainer

    straight = trained(tmp_path / "straight", 3)
    trained(tmp_path / "interrupted", 2)
    resumed = trained(tmp_path / "interrupted", 3, resume=True)
    assert resumed.state.global_step == 3 and training_logs(resumed)[-1]["step"] == 3
    expected = {n: p for n, p in straight.model.named_parameters() if p.requires_grad}
    for name, parameter in resumed.model.named_parameters():
        if parameter.requires_grad:
            torch.testing.assert_close(parameter, expected[name], atol=1e-6, rtol=1e-5, msg=name)


def test_activation_checkpointing_gives_the_same_gradients(tmp_path, processor, data_dir):
    dataset = stage_data(data_dir, 2)
    gradients = []
    for checkpointing in (False, True):
        grabber = GradientGrabber()
        trainer = make_trainer(
            tmp_path / str(checkpointing), processor, dataset, 2, [grabber],
            per_device_train_batch_size=2, gradient_checkpointing=checkpointing,
        )  # fmt: skip
        trainer.train()
        gradients.append(grabber.gradients)
    assert gradients[0].keys() == gradients[1].keys() and any("lora_B" in name for name in gradients[0])
    for name, gradient in gradients[0].items():
        torch.testing.assert_close(gradients[1][name], gradient, atol=1e-6, rtol=1e-5, msg=name)
