"""Upload a PiTe checkpoint folder to the Hugging Face Hub with a generated model card.

Evaluation results (optional) are a JSON `{benchmark: {metric: value}}` with the keys of
`modeling_pite.hub.BENCHMARKS`, e.g. `{"activitynet_grounding": {"R1@0.3": 30.4, "mIoU": 22.0}}`.

    huggingface-cli login   # or pass --token / set HF_TOKEN
    python examples/upload_to_hub.py --model pite-7b --repo-id your-name/pite-7b --results results.json
"""

import argparse
import json
from pathlib import Path

from transformers import AutoModelForImageTextToText, AutoProcessor

import modeling_pite  # noqa: F401  (registers PiTe with the Auto classes)
from modeling_pite.hub import create_model_card, push_to_hub


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="local checkpoint folder")
    parser.add_argument("--repo-id", required=True)
    parser.add_argument("--results", help="JSON file of evaluation results for the model card")
    parser.add_argument("--results-source", help="where the results come from (shown on the card)")
    parser.add_argument("--token", default=None, help="Hub token; default: the logged-in user's")
    parser.add_argument("--private", action="store_true")
    parser.add_argument(
        "--no-pipeline-code",
        action="store_true",
        help="do not ship the pipelines' code (then `pipeline(...)` works without trust_remote_code for pite users)",
    )
    args = parser.parse_args()

    model = AutoModelForImageTextToText.from_pretrained(args.model)
    processor = AutoProcessor.from_pretrained(args.model)
    results = json.loads(Path(args.results).read_text()) if args.results else None
    card = create_model_card(
        args.repo_id.split("/")[-1],
        repo_id=args.repo_id,
        results=results,
        results_source=args.results_source,
        num_frames=model.config.num_frames,
        num_points=model.config.num_trajectory_points,
    )
    commit = push_to_hub(
        model,
        processor,
        args.repo_id,
        card=card,
        token=args.token,
        private=args.private,
        pipeline_code=not args.no_pipeline_code,
    )
    print(f"uploaded: {commit}")


if __name__ == "__main__":
    main()
