"""Ask a PiTe checkpoint about a video; optionally save the predicted trajectories drawn over the frames.

    python examples/infer_video_qa.py --model pite-7b --video clip.mp4 --question "What is the man doing?" \
        --trajectories-out trajectories.mp4
"""

import argparse

from transformers import pipeline

import modeling_pite  # noqa: F401  (registers the "video-qa" pipeline)
from modeling_pite.video_io import sample_video
from modeling_pite.visualization import save_trajectory_visualization


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="converted or trained PiTe checkpoint (folder or Hub id)")
    parser.add_argument("--video", required=True, nargs="+", help="one or more video files")
    parser.add_argument("--question", required=True)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--trajectories-out", help="draw the answer's noun-phrase trajectories: .mp4, .gif or .png")
    parser.add_argument("--device", default=None, help="e.g. cuda:0; default CPU")
    args = parser.parse_args()

    qa = pipeline("video-qa", model=args.model, device=args.device)
    want_trajectories = args.trajectories_out is not None
    outputs = qa(
        args.video,
        question=args.question,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        return_trajectories=want_trajectories,
    )
    for output in outputs:
        print(f"{output['video']}: {output['answer']}")
        for phrase in output.get("trajectories", []):
            print(f"  trajectory of {phrase['phrase']!r}: {phrase['trajectory'].shape}")
    if want_trajectories:
        first = outputs[0]
        frames, metadata = sample_video(first["video"], qa.model.config.num_frames)
        path = save_trajectory_visualization(
            args.trajectories_out, frames, first["trajectories"], timestamps=metadata.timestamps
        )
        print(f"trajectories drawn into {path}")


if __name__ == "__main__":
    main()
