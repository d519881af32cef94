"""`pite annotate`: build PiTe stage-2 trajectory data from a manifest of videos and captions."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .manifest import MANIFEST_FORMATS, read_manifest
from .pipeline import AnnotationConfig, run_annotation
from .preview import render_preview

# command-line flags that override fields of the config file
_OVERRIDES = (
    "phrase_backend",
    "grounding_backend",
    "tracker",
    "num_frames",
    "num_keypoints",
    "max_points",
    "shard_size",
)


def add_subparser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "annotate",
        help="annotate videos with noun-phrase keypoint trajectories (stage-2 data)",
        description="caption -> noun phrases -> first-frame masks -> point tracks -> k-means++ keypoint "
        "trajectories, written as resumable parquet shards (load with datasets.load_dataset('parquet', ...)).",
    )
    parser.add_argument("manifest", help="JSONL/JSON manifest, InternVid CSV/JSONL or ActivityNet Captions JSON")
    parser.add_argument("--output-dir", required=True, help="folder for data/*.parquet, reports and the summary")
    parser.add_argument("--format", default="auto", choices=["auto", *MANIFEST_FORMATS], help="manifest format")
    parser.add_argument("--video-root", help="folder of the videos (default: the manifest's folder)")
    parser.add_argument("--video-ext", default="", help="video file suffix for InternVid/ActivityNet ids, e.g. .mp4")
    parser.add_argument("--config", help="YAML/JSON file with AnnotationConfig fields")
    parser.add_argument("--phrase-backend", choices=["rule", "spacy"])
    parser.add_argument("--grounding-backend", choices=["given", "color_shape", "transformers"])
    parser.add_argument("--detector", help="local Grounding DINO / OWLv2 checkpoint (transformers backend)")
    parser.add_argument("--segmenter", help="local SAM checkpoint (transformers backend)")
    parser.add_argument("--tracker", help="lk (default), farneback, or a registered tracker")
    parser.add_argument("--num-frames", type=int, help="N frames sampled over the whole video (default 100)")
    parser.add_argument("--num-keypoints", type=int, help="P keypoints per phrase (default 3)")
    parser.add_argument("--max-points", type=int, help="query points tracked per phrase")
    parser.add_argument("--shard-size", type=int, help="videos per output shard")
    parser.add_argument("--num-workers", type=int, default=1, help="worker processes (one per core)")
    parser.add_argument("--overwrite", action="store_true", help="discard a previous run with another config")
    parser.add_argument("--preview", type=int, default=0, metavar="K", help="render previews of the first K records")
    parser.add_argument("--preview-format", default="png", choices=["png", "gif", "mp4"])
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    overrides = {name: getattr(args, name) for name in _OVERRIDES if getattr(args, name) is not None}
    config = AnnotationConfig.from_file(args.config, **overrides) if args.config else AnnotationConfig(**overrides)
    if args.detector or args.segmenter:
        config.grounding_kwargs = {**config.grounding_kwargs, "detector": args.detector, "segmenter": args.segmenter}
    items = read_manifest(args.manifest, args.format, args.video_root, args.video_ext)
    summary = run_annotation(items, args.output_dir, config, num_workers=args.num_workers, overwrite=args.overwrite)
    if args.preview:
        import pyarrow.parquet as pq

        output_dir = Path(args.output_dir)
        records = []
        for shard in sorted((output_dir / "data").glob("shard-*.parquet")):
            records += pq.read_table(shard).to_pylist()
            if len(records) >= args.preview:
                break
        summary["previews"] = [
            str(render_preview(record, output_dir / "previews" / f"{record['id']}.{args.preview_format}"))
            for record in records[: args.preview]
        ]
    print(json.dumps(summary, indent=1))
    return 0
