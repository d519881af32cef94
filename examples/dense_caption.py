"""List the events of a video with their times (dense video captioning), optionally as JSON.

python examples/dense_caption.py --model pite-7b --video clip.mp4 --output events.json
"""

import argparse
import json

from transformers import pipeline

import modeling_pite  # noqa: F401  (registers the "video-dense-captioning" pipeline)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--video", required=True)
    parser.add_argument("--max-new-tokens", type=int, default=512)
    parser.add_argument("--output", help="write the events as JSON here")
    parser.add_argument("--device", default=None)
    args = parser.parse_args()

    captioning = pipeline("video-dense-captioning", model=args.model, device=args.device)
    output = captioning(args.video, max_new_tokens=args.max_new_tokens, do_sample=False)
    for event in output["events"]:
        print(f"{event['start']:7.2f}s - {event['end']:7.2f}s  {event['caption']}")
    if not output["events"]:
        print(f"no timed events in the answer: {output['answer']!r}")
    if args.output:
        with open(args.output, "w") as handle:
            json.dump({"video": args.video, "events": output["events"], "answer": output["answer"]}, handle, indent=2)


if __name__ == "__main__":
    main()
