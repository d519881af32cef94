"""Find when things happen in a video: each query -> start/end seconds (VTimeLLM-style grounding).

python examples/ground_events.py --model pite-7b --video clip.mp4 --query "a man opens the door" "he sits down"
"""

import argparse

from transformers import pipeline

import modeling_pite  # noqa: F401  (registers the "video-temporal-grounding" pipeline)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--video", required=True)
    parser.add_argument("--query", required=True, nargs="+", help="one or more sentences to ground")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--device", default=None)
    args = parser.parse_args()

    grounding = pipeline("video-temporal-grounding", model=args.model, device=args.device)
    items = [{"video": args.video, "query": query} for query in args.query]
    for output in grounding(items, max_new_tokens=args.max_new_tokens, do_sample=False):
        if output["start"] is None:
            print(f"{output['query']!r}: no time span in the answer {output['answer']!r}")
        else:
            print(
                f"{output['query']!r}: {output['start']:.2f}s - {output['end']:.2f}s (frames {output['frame_span']})"
            )


if __name__ == "__main__":
    main()
