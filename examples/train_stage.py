"""Train one PiTe stage: `accelerate launch examples/train_stage.py --stage N [--config stageN.yaml] [--key value ...]`.

Settings come from `examples/configs/stage{N}.yaml` (or `--config`), and any command-line flag overrides the
YAML. The flags are those of `ModelArguments`, `DataArguments` below, `modeling_pite.stages.StageArguments`
and `PiteTrainingArguments` (every `transformers.TrainingArguments` flag: `--report_to`, `--resume_from_checkpoint`,
...). The output folder receives the merged model + processor (the next stage's `--model_name_or_path`),
`adapter/` and `non_lora_trainables.safetensors`; see docs/training.md.

Examples (one process; add accelerate flags or `--config_file examples/configs/accelerate_*.yaml`, e.g.
`accelerate_cpu_multi.yaml` for 2 gloo processes on a machine without a GPU):

    accelerate launch examples/train_stage.py --stage 1 --model_name_or_path pite-7b-init --data_files ln.jsonl \
        --media_folder coco/val2017 --image_template "{image_id:0>12}.jpg" --output_dir out/stage1
    accelerate launch examples/train_stage.py --stage 2 --model_name_or_path out/stage1 --data_files traj.parquet \
        --media_folder videos --feature_dir features --output_dir out/stage2
    accelerate launch examples/train_stage.py --stage 3 --model_name_or_path out/stage2 --data_files valley.json \
        --media_folder videos --output_dir out/stage3

A tiny random model for CPU runs and tests: `--init_preset tiny` (tokenizer trained locally on the data).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from datasets import concatenate_datasets
from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor, HfArgumentParser, set_seed

import modeling_pite  # noqa: F401  (registers the PiTe classes with the Auto factories)
from modeling_pite import PiteConfig, PiteForConditionalGeneration, PiteProcessor, PiteVideoProcessor
from modeling_pite.feature_extraction import VideoFeatureStore
from modeling_pite.processing_pite import VICUNA_SYSTEM_PROMPT
from modeling_pite.stages import StageArguments, prepare_stage_model, save_stage
from modeling_pite.trainer_pite import PiteTrainer, PiteTrainingArguments
from processing.collators import PiteDataCollator, add_length_column
from processing.data_format import read_records
from processing.stage_data import load_stage_dataset
from processing.tokenizer import build_tokenizer

logger = logging.getLogger("train_stage")
CONFIG_DIR = Path(__file__).parent / "configs"


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "PiTe checkpoint: the initial model, or the previous stage's output folder."}
    )
    init_preset: str | None = field(
        default=None,
        metadata={
            "help": "Instead of a checkpoint: a random PiTe from this preset ('tiny') and a tokenizer trained on the data."
        },
    )
    config_overrides: str | None = field(
        default=None, metadata={"help": "JSON of PiteConfig fields to change, e.g. '{\"coord_loss_weight\": 2.0}'."}
    )
    tokenizer_corpus_files: list[str] | None = field(
        default=None,
        metadata={"help": "With --init_preset: more data files (any stage) whose text trains the tokenizer."},
    )
    dtype: str = field(
        default="auto", metadata={"help": "Weights dtype when loading a checkpoint ('auto', 'bfloat16', 'float32')."}
    )
    attn_implementation: str | None = field(
        default=None, metadata={"help": "Unset: flash_attention_2 on a GPU with flash-attn installed, else sdpa."}
    )


@dataclass
class DataArguments:
    data_files: list[str] = field(metadata={"help": "The stage's data files (.json, .jsonl, .parquet)."})
    media_folder: str | None = field(
        default=None,
        metadata={"help": "Folder relative video/image paths start from (default: each data file's folder)."},
    )
    feature_dir: str | None = field(
        default=None,
        metadata={
            "help": "Cached CLIP features (`pite extract-features --videos <media_folder>`) instead of decoding."
        },
    )
    max_length: int | None = field(default=None, metadata={"help": "Truncate longer token sequences."})
    image_template: str = field(default="{image_id}.jpg", metadata={"help": "Stage 1: image file name from image_id."})
    event_format: str = field(
        default="prefix", metadata={"help": "Stage 2: 'prefix' (From s to e, ...) or 'suffix' (..., from s to e)."}
    )
    num_time_bins: int = field(default=100, metadata={"help": "Frame indices used for times in text (PiTe: 100)."})


def parse_arguments(argv: list[str]) -> tuple[ModelArguments, DataArguments, StageArguments, PiteTrainingArguments]:
    """YAML config (per stage) as defaults, command-line flags on top."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--stage", type=int)
    pre.add_argument("--config")
    known, rest = pre.parse_known_args(argv)
    parser = HfArgumentParser((ModelArguments, DataArguments, StageArguments, PiteTrainingArguments))
    config_file = known.config or (CONFIG_DIR / f"stage{known.stage}.yaml" if known.stage else None)
    if config_file is not None:
        defaults = yaml.safe_load(Path(config_file).read_text()) or {}
        unknown = set(defaults) - {action.dest for action in parser._actions}
        if unknown:
            raise ValueError(f"{config_file}: unknown settings {sorted(unknown)}")
        parser.set_defaults(**defaults)
        for action in parser._actions:  # a value from the YAML satisfies a required flag
            if action.dest in defaults:
                action.required = False
    stage_flags = ["--stage", str(known.stage)] if known.stage is not None else []
    return parser.parse_args_into_dataclasses(args=stage_flags + rest)


def corpus_texts(dataset, extra_files: list[str] | None) -> list[str]:
    """Text a local tokenizer is trained on: the chat template's words, the dialogues, any extra data files."""
    texts = [VICUNA_SYSTEM_PROMPT + " USER: ASSISTANT:"]
    texts += [turn["value"] for record in dataset for turn in record["conversations"]]
    for path in extra_files or []:
        texts += [text for _, record in read_records(path) for text in _strings(record)]
    return texts


def _strings(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    return [text for item in value for text in _strings(item)] if isinstance(value, list) else []


def build_model_and_processor(model_args: ModelArguments, config: PiteConfig, dataset):
    if model_args.init_preset is not None:
        tokenizer = build_tokenizer(
            corpus_texts(dataset, model_args.tokenizer_corpus_files), vocab_size=config.text_config.vocab_size
        )
        if tokenizer.convert_tokens_to_ids(tokenizer.video_token) != config.video_token_id:
            raise ValueError(f"the local tokenizer's {tokenizer.video_token} id differs from config.video_token_id")
        side = config.vision_config.image_size
        video_processor = PiteVideoProcessor(
            num_frames=config.num_frames, size={"shortest_edge": side}, crop_size={"height": side, "width": side}
        )
        processor = PiteProcessor(video_processor=video_processor, tokenizer=tokenizer)
        return PiteForConditionalGeneration(config), processor
    model = AutoModelForImageTextToText.from_pretrained(
        model_args.model_name_or_path,
        config=config,
        dtype=model_args.dtype,
        attn_implementation=model_args.attn_implementation,
    )
    return model, AutoProcessor.from_pretrained(model_args.model_name_or_path)


def load_config(model_args: ModelArguments) -> PiteConfig:
    overrides = json.loads(model_args.config_overrides) if model_args.config_overrides else {}
    if model_args.init_preset is not None:
        return PiteConfig.from_preset(model_args.init_preset, **overrides)
    if model_args.model_name_or_path is None:
        raise ValueError("give --model_name_or_path (a PiTe checkpoint) or --init_preset (a random model)")
    return AutoConfig.from_pretrained(model_args.model_name_or_path, **overrides)


def main(argv: list[str] | None = None) -> None:
    model_args, data_args, stage_args, training_args = parse_arguments(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        level=logging.INFO if training_args.should_log else logging.WARNING,
    )
    set_seed(training_args.seed)
    config = load_config(model_args)

    loader_kwargs = {
        1: {"image_template": data_args.image_template},
        2: {
            "num_points": config.num_trajectory_points,
            "num_frames": config.num_frames,
            "num_time_bins": data_args.num_time_bins,
            "event_format": data_args.event_format,
        },
        3: {"num_time_bins": data_args.num_time_bins},
    }
    with training_args.main_process_first(desc="loading the data"):
        dataset = load_stage_dataset(
            stage_args.stage, data_args.data_files, data_args.media_folder, **loader_kwargs[stage_args.stage]
        )
        logger.info("stage %d: %d training records from %s", stage_args.stage, len(dataset), data_args.data_files)
        if stage_args.trajectory_data_files:
            trajectories = load_stage_dataset(
                2, stage_args.trajectory_data_files, data_args.media_folder, **loader_kwargs[2]
            )
            logger.info("+ %d trajectory records from %s", len(trajectories), stage_args.trajectory_data_files)
            dataset = concatenate_datasets([dataset, trajectories])

    model, processor = build_model_and_processor(model_args, config, dataset)
    needs_lengths = training_args.train_sampling_strategy in ("group_by_length", "batch_rebalance")
    if needs_lengths and training_args.length_column_name not in dataset.column_names:
        with training_args.main_process_first(desc="token lengths"):
            dataset = add_length_column(dataset, processor, training_args.length_column_name)
    model = prepare_stage_model(model, stage_args)
    trainable, total = model.get_nb_trainable_parameters()
    logger.info(
        "trainable parameters: %d of %d (%.2f%%); %d process(es)",
        trainable, total, 100 * trainable / total, training_args.world_size,
    )  # fmt: skip

    collator = PiteDataCollator(
        processor,
        coordinate_targets=stage_args.coordinate_targets,
        num_trajectory_points=config.num_trajectory_points,
        feature_store=VideoFeatureStore(data_args.feature_dir) if data_args.feature_dir else None,
        video_root=data_args.media_folder,
        max_length=data_args.max_length,
    )
    trainer = PiteTrainer(
        model=model, args=training_args, train_dataset=dataset, data_collator=collator, processing_class=processor
    )
    resume = training_args.resume_from_checkpoint
    result = trainer.train(resume_from_checkpoint=True if resume in ("true", "last") else resume)
    trainer.log_metrics("train", result.metrics)
    trainer.save_metrics("train", result.metrics)
    trainer.save_state()
    save_stage(trainer, training_args.output_dir, processor)


if __name__ == "__main__":
    main()
