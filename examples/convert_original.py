"""Convert the authors' PiTe release (Vicuna v1.5 + CLIP ViT-L/14 + LoRA stage folders) into one checkpoint.

Same as `pite convert-original`; see docs/conversion.md for the folder layout.

    python examples/convert_original.py --checkpoint-dir checkpoint --model-scale 7b --output pite-7b
"""

import argparse

import torch

from modeling_pite.conversion import OriginalRelease, convert_original


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint-dir", required=True, help="folder laid out as the original inference.py expects")
    parser.add_argument("--model-scale", default="7b", choices=["7b", "13b"])
    parser.add_argument("--output", required=True)
    parser.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    args = parser.parse_args()

    release = OriginalRelease.from_checkpoint_dir(args.checkpoint_dir, args.model_scale)
    output = convert_original(
        release, args.output, dtype=getattr(torch, args.dtype), model_name=f"pite-{args.model_scale}"
    )
    print(f"converted checkpoint: {output}")


if __name__ == "__main__":
    main()
