"""Share PiTe on the Hugging Face Hub: a generated model card and a single-call upload.

The card carries the training recipe (the three stages) in prose and the evaluation results as
`model-index` metadata, so the Hub renders them and `huggingface_hub.ModelCard` can read them back.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData
from transformers.dynamic_module_utils import custom_object_save

from .pipelines import PIPELINE_CLASSES

PAPER_URL = "https://arxiv.org/abs/2409.07239"
ORIGINAL_CODE_URL = "https://github.com/yliu-cs/PiTe"


@dataclass(frozen=True)
class TrainingStage:
    name: str
    data: str
    objective: str
    trained: str


# The published recipe; every stage merges the previous stage's LoRA and adds a fresh one.
TRAINING_STAGES: tuple[TrainingStage, ...] = (
    TrainingStage(
        name="Stage 1: referring-expression localization",
        data="Localized Narratives images (an image is a one-frame video)",
        objective="CE + lambda * L1(localization of every noun-phrase token)",
        trained="visual adapter, LoRA, localization head",
    ),
    TrainingStage(
        name="Stage 2: pixel-temporal alignment",
        data="PiTe-143k (InternVid clips with point trajectories of every noun phrase)",
        objective="CE + lambda / (P * N) * sum L1(trajectory), trajectory head initialised from the localization head",
        trained="LoRA, trajectory head",
    ),
    TrainingStage(
        name="Stage 3: video instruction tuning",
        data="Valley + Video-ChatGPT instruction dialogues",
        objective="CE",
        trained="LoRA",
    ),
)


@dataclass(frozen=True)
class Benchmark:
    task_name: str
    dataset_type: str
    dataset_name: str
    metrics: Mapping[str, str]  # metric key -> model-index metric type
    task_type: str = "video-text-to-text"
    dataset_split: str = "test"
    dataset_config: str | None = None  # tells apart two tasks on one dataset in the model-index


BENCHMARKS: dict[str, Benchmark] = {
    "msvd_qa": Benchmark("Video Question Answering", "msvd-qa", "MSVD-QA", {"accuracy": "accuracy", "score": "score"}),
    "msrvtt_qa": Benchmark(
        "Video Question Answering", "msrvtt-qa", "MSRVTT-QA", {"accuracy": "accuracy", "score": "score"}
    ),
    "activitynet_qa": Benchmark(
        "Video Question Answering", "activitynet-qa", "ActivityNet-QA", {"accuracy": "accuracy", "score": "score"}
    ),
    "activitynet_grounding": Benchmark(
        "Video Temporal Grounding",
        "activitynet-captions",
        "ActivityNet Captions",
        {"R1@0.3": "recall", "R1@0.5": "recall", "R1@0.7": "recall", "mIoU": "mean_iou"},
        dataset_split="val_2",
        dataset_config="temporal-grounding",
    ),
    "activitynet_dense_captioning": Benchmark(
        "Dense Video Captioning",
        "activitynet-captions",
        "ActivityNet Captions",
        {"CIDEr": "cider", "METEOR": "meteor", "SODA_c": "soda_c"},
        dataset_split="val_2",
        dataset_config="dense-captioning",
    ),
}

# The numbers of the paper (Table 1-3). QA accuracy is judged by GPT-3.5 (Video-ChatGPT protocol).
REPORTED_RESULTS: dict[str, dict[str, dict[str, float]]] = {
    "pite-7b": {
        "msvd_qa": {"accuracy": 68.4},
        "msrvtt_qa": {"accuracy": 56.4},
        "activitynet_qa": {"accuracy": 42.0},
        "activitynet_grounding": {"R1@0.3": 30.4, "R1@0.5": 17.8, "R1@0.7": 7.8, "mIoU": 22.0},
        "activitynet_dense_captioning": {"CIDEr": 21.7, "METEOR": 5.8, "SODA_c": 5.1},
    },
    "pite-13b": {
        "msvd_qa": {"accuracy": 71.6},
        "msrvtt_qa": {"accuracy": 57.7},
        "activitynet_qa": {"accuracy": 42.2},
        "activitynet_grounding": {"R1@0.3": 37.2, "R1@0.5": 23.7, "R1@0.7": 10.9, "mIoU": 26.0},
        "activitynet_dense_captioning": {"CIDEr": 26.5, "METEOR": 6.6, "SODA_c": 5.9},
    },
}

CARD_TEMPLATE = """---
{{ card_data }}
---

# {{ model_name }}

PiTe (Pixel-Temporal Alignment for Large Video-Language Models, ECCV 2024, [paper]({{ paper_url }})) is a
video LLM that learns *pixel-temporal alignment*: while it reads or writes a noun phrase it also regresses
where that object is, in every frame, as point trajectories. CLIP ViT-L/14 encodes {{ num_frames }} frames
sampled uniformly over the whole video into one token each, a linear adapter maps them into the language
model, and two heads read the last hidden state next to the language-model head: a localization head
(x, y) and a trajectory head ({{ num_points }} points x {{ num_frames }} frames x (x, y)).

{{ description }}

## Usage

```python
from transformers import pipeline

# the checkpoint carries its code; with the `pite` package installed this runs the same classes
qa = pipeline("video-qa", model="{{ repo_id }}", trust_remote_code=True)
qa("video.mp4", question="What is the person doing?", return_trajectories=True)
# {"answer": ..., "trajectories": [{"phrase": ..., "trajectory": array [{{ num_points }}, {{ num_frames }}, 2], "timestamps": [...]}]}

grounding = pipeline("video-temporal-grounding", model="{{ repo_id }}", trust_remote_code=True)
grounding("video.mp4", query="a man opens the door")  # {"start": seconds, "end": seconds, ...}

captions = pipeline("video-dense-captioning", model="{{ repo_id }}", trust_remote_code=True)
captions("video.mp4")  # {"events": [{"caption": ..., "start": seconds, "end": seconds}, ...]}
```

Grounding and dense captioning share their prompts and parsers with the evaluation code of the `pite`
package, so they need it installed; `video-qa` runs from the checkpoint's code alone.

## Training stages

Each stage merges the previous stage's LoRA into the weights and trains a fresh one (AdamW, lr 1e-4,
cosine schedule, bf16, LoRA r=64, alpha=128).

| Stage | Data | Objective | Trained |
|---|---|---|---|
{% for stage in stages -%}
| {{ stage.name }} | {{ stage.data }} | {{ stage.objective }} | {{ stage.trained }} |
{% endfor %}
## Evaluation

{% if results -%}
| Task | Dataset | Metric | Value |
|---|---|---|---|
{% for result in results -%}
| {{ result.task_name }} | {{ result.dataset_name }} | {{ result.metric_name }} | {{ result.metric_value }} |
{% endfor %}
{{ results_source }}
{%- else -%}
No evaluation results were recorded for this checkpoint.
{%- endif %}

## Limitations

- A video is always {{ num_frames }} frames sampled over its whole length: events shorter than
  duration / {{ num_frames }} can fall between two frames, and temporal answers are quantised to that step.
- Timestamps in the text are two-digit frame indices (00-{{ "%02d" % (num_frames - 1) }}); the pipelines turn
  them into seconds.
- Generation on CPU is slow for the 7B/13B models; use a GPU.

## Citation

```bibtex
@inproceedings{conf/eccv/Liu24PiTe,
  author    = {Yang Liu and Pengxiang Ding and Siteng Huang and Min Zhang and Han Zhao and Donglin Wang},
  title     = {PiTe: Pixel-Temporal Alignment for Large Video-Language Model},
  booktitle = {Proc. of ECCV},
  year      = {2024}
}
```
"""


def eval_results_from_mapping(
    results: Mapping[str, Mapping[str, float]], *, source_name: str | None = None, source_url: str | None = None
) -> list[EvalResult]:
    """`{benchmark key: {metric key: value}}` (keys of `BENCHMARKS`) -> model-index `EvalResult`s."""
    eval_results = []
    for benchmark_key, metrics in results.items():
        if benchmark_key not in BENCHMARKS:
            raise ValueError(f"unknown benchmark {benchmark_key!r}; expected one of {sorted(BENCHMARKS)}")
        benchmark = BENCHMARKS[benchmark_key]
        for metric_key, value in metrics.items():
            if metric_key not in benchmark.metrics:
                raise ValueError(
                    f"unknown metric {metric_key!r} for {benchmark_key!r}; expected one of {sorted(benchmark.metrics)}"
                )
            eval_results.append(
                EvalResult(
                    task_type=benchmark.task_type,
                    task_name=benchmark.task_name,
                    dataset_type=benchmark.dataset_type,
                    dataset_name=benchmark.dataset_name,
                    dataset_split=benchmark.dataset_split,
                    dataset_config=benchmark.dataset_config,
                    metric_type=benchmark.metrics[metric_key],
                    metric_name=metric_key,
                    metric_value=float(value),
                    source_name=source_name if source_url else None,  # the Hub wants both or neither
                    source_url=source_url,
                )
            )
    return eval_results


def create_model_card(
    model_name: str,
    *,
    repo_id: str | None = None,
    results: Mapping[str, Mapping[str, float]] | None = None,
    results_source: str | None = None,
    results_url: str | None = None,
    base_model: list[str] | None = None,
    license: str = "llama2",
    num_frames: int = 100,
    num_points: int = 3,
    description: str = "",
) -> ModelCard:
    """Build the card: usage, the three training stages, and `results` as model-index metadata.

    `results` defaults to the paper's numbers when `model_name` is `pite-7b` or `pite-13b`; pass your own
    evaluation (`{benchmark: {metric: value}}`, keys of `BENCHMARKS`) for a checkpoint you trained.
    """
    if results is None and model_name in REPORTED_RESULTS:
        results = REPORTED_RESULTS[model_name]
        results_source = results_source or "Reported in the PiTe paper (ECCV 2024)"
        results_url = results_url or PAPER_URL
    eval_results = eval_results_from_mapping(results or {}, source_name=results_source, source_url=results_url)
    card_data = ModelCardData(
        model_name=model_name,
        base_model=base_model or ["lmsys/vicuna-7b-v1.5", "openai/clip-vit-large-patch14"],
        license=license,
        language="en",
        library_name="transformers",
        pipeline_tag="video-text-to-text",
        tags=["pite", "video-llm", "video-question-answering", "temporal-grounding", "dense-video-captioning"],
        eval_results=eval_results or None,
    )
    return ModelCard.from_template(
        card_data,
        template_str=CARD_TEMPLATE,
        model_name=model_name,
        repo_id=repo_id or model_name,
        paper_url=PAPER_URL,
        description=description,
        stages=TRAINING_STAGES,
        results=eval_results,
        results_source=_source_line(results_source, results_url),
        num_frames=num_frames,
        num_points=num_points,
    )


def _source_line(source: str | None, url: str | None) -> str:
    if source and url:
        return f"Source: [{source}]({url})"
    return f"Source: {source}" if source else ""


@contextmanager
def _remote_code_marked(model: Any, processor: Any) -> Iterator[None]:
    """While saving: list the pipelines in the config and give this processor instance an `auto_map` entry."""
    model.config.custom_pipelines = {
        task: {
            "impl": f"pipelines.{cls.__name__}",
            "pt": ["AutoModelForImageTextToText"],
            "tf": [],
            "type": "multimodal",
        }
        for task, cls in PIPELINE_CLASSES.items()
    }
    processor._auto_class = "AutoProcessor"
    try:
        yield
    finally:
        del model.config.custom_pipelines, processor._auto_class


def save_for_hub(
    model: Any, processor: Any, folder: str | Path, card: ModelCard | None = None, *, pipeline_code: bool = True
) -> Path:
    """Write everything an upload needs into `folder`: weights, configs, processor, chat template, card.

    With `pipeline_code`, the folder also carries the processor's and the pipelines' code (`auto_map`,
    `custom_pipelines`), so `pipeline("video-qa", model=repo, trust_remote_code=True)` works without this
    package. transformers then insists on `trust_remote_code=True` for those tasks even where the package is
    installed; pass `pipeline_code=False` for a folder that only `import modeling_pite` users load.
    """
    folder = Path(folder)
    with _remote_code_marked(model, processor) if pipeline_code else nullcontext():
        model.save_pretrained(folder)
        processor.save_pretrained(folder)
    if pipeline_code:
        custom_object_save(PIPELINE_CLASSES["video-qa"], folder)  # pipelines.py and the modules it imports
    if card is None:
        card = create_model_card(
            folder.name, num_frames=model.config.num_frames, num_points=model.config.num_trajectory_points
        )
    card.save(folder / "README.md")
    return folder


def push_to_hub(
    model: Any,
    processor: Any,
    repo_id: str,
    *,
    card: ModelCard | None = None,
    token: str | None = None,
    private: bool = False,
    pipeline_code: bool = True,
    commit_message: str = "Upload PiTe model, processor and model card",
) -> Any:
    """Save model + processor + card to a temporary folder and upload it with one `upload_folder` call.

    `token` is the user's Hub token (default: the logged-in user's); see `save_for_hub` for `pipeline_code`.
    """
    if card is None:
        card = create_model_card(
            repo_id.split("/")[-1],
            repo_id=repo_id,
            num_frames=model.config.num_frames,
            num_points=model.config.num_trajectory_points,
        )
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = save_for_hub(model, processor, Path(tmp) / repo_id.split("/")[-1], card, pipeline_code=pipeline_code)
        return api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message=commit_message)
