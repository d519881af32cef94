"""The transformers grounding backend (Grounding DINO boxes + SAM masks) with tiny random local checkpoints."""

import numpy as np
import pytest
from transformers import (
    BertConfig,
    BertTokenizer,
    CLIPTokenizer,
    GroundingDinoConfig,
    GroundingDinoForObjectDetection,
    GroundingDinoProcessor,
    Owlv2Config,
    Owlv2ForObjectDetection,
    Owlv2Processor,
    SamConfig,
    SamModel,
    SamProcessor,
    SwinConfig,
)
from transformers.models.grounding_dino.image_processing_pil_grounding_dino import GroundingDinoImageProcessorPil
from transformers.models.owlv2.image_processing_pil_owlv2 import Owlv2ImageProcessorPil
from transformers.models.sam.image_processing_pil_sam import SamImageProcessorPil

from processing.annotation.grounding import DetectorSegmenterGrounder, build_grounder

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "the", "red", "circle", "a", "dog"]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Save a tiny Grounding DINO (2 decoder layers, its minimum) and a tiny SAM with their processors."""
    folder = tmp_path_factory.mktemp("grounding_models")
    (folder / "vocab.txt").write_text("\n".join(WORDS) + "\n")
    detector = GroundingDinoForObjectDetection(
        GroundingDinoConfig(
            backbone_config=SwinConfig(
                embed_dim=8,
                depths=[1, 1, 1, 1],
                num_heads=[1, 1, 1, 1],
                window_size=4,
                image_size=128,
                out_features=["stage2", "stage3", "stage4"],
            ),
            text_config=BertConfig(
                vocab_size=len(WORDS),
                hidden_size=16,
                num_hidden_layers=1,
                num_attention_heads=2,
                intermediate_size=16,
                max_position_embeddings=64,
            ),
            d_model=32,
            encoder_layers=1,
            decoder_layers=2,
            encoder_attention_heads=2,
            decoder_attention_heads=2,
            encoder_ffn_dim=32,
            decoder_ffn_dim=32,
            num_queries=8,
            max_text_len=32,
            encoder_n_points=1,
            decoder_n_points=1,
        )
    )
    processor = GroundingDinoProcessor(
        image_processor=GroundingDinoImageProcessorPil(size={"shortest_edge": 128, "longest_edge": 128}),
        tokenizer=BertTokenizer(str(folder / "vocab.txt")),
    )
    detector.save_pretrained(folder / "detector")
    processor.save_pretrained(folder / "detector")
    segmenter = SamModel(
        SamConfig(
            vision_config={
                "hidden_size": 16,
                "output_channels": 8,
                "num_hidden_layers": 1,
                "num_attention_heads": 2,
                "image_size": 64,
                "patch_size": 8,
                "window_size": 2,
                "global_attn_indexes": [0],
                "num_pos_feats": 4,
                "mlp_dim": 16,
            },
            prompt_encoder_config={"hidden_size": 8, "image_size": 64, "patch_size": 8, "mask_input_channels": 4},
            mask_decoder_config={
                "hidden_size": 8,
                "mlp_dim": 16,
                "num_hidden_layers": 1,
                "num_attention_heads": 2,
                "iou_head_hidden_dim": 8,
            },
        )
    )
    segmenter.save_pretrained(folder / "segmenter")
    SamProcessor(
        image_processor=SamImageProcessorPil(size={"longest_edge": 64}, pad_size={"height": 64, "width": 64})
    ).save_pretrained(folder / "segmenter")
    return folder


FRAME = (np.random.default_rng(0).random((48, 80, 3)) * 255).astype(np.uint8)


def test_detector_and_segmenter_give_a_frame_sized_mask(checkpoints):
    grounder = build_grounder(
        "transformers",
        detector=checkpoints / "detector",
        segmenter=checkpoints / "segmenter",
        box_threshold=0.0,
        text_threshold=0.0,
    )
    box, score = grounder.detect(FRAME, "the red circle")
    assert 0 <= box[0] <= box[2] <= 80 and 0 <= box[1] <= box[3] <= 48 and 0 <= score <= 1
    mask = grounder(FRAME, "the red circle")
    assert mask.shape == (48, 80) and mask.dtype == bool


def test_box_only_and_threshold(checkpoints):
    grounder = DetectorSegmenterGrounder(checkpoints / "detector", box_threshold=0.0, text_threshold=0.0)
    box, _ = grounder.detect(FRAME, "a dog")
    mask = grounder(FRAME, "a dog")
    ys, xs = np.nonzero(mask)
    assert mask.sum() == 0 or (
        xs.min() >= round(box[0]) - 1 and xs.max() <= round(box[2]) and ys.max() <= round(box[3])
    )
    strict = DetectorSegmenterGrounder(checkpoints / "detector", box_threshold=1.01)
    assert strict.detect(FRAME, "a dog") is None and not strict(FRAME, "a dog").any()  # "empty mask" downstream


def test_owlv2_detector(tmp_path):
    """OWLv2 with a character-level CLIP tokenizer (BOS must not be id 0: OWLv2 masks such queries)."""
    import json

    vocab = {"!": 0}
    for char in "abcdefghijklmnopqrstuvwxyz":
        vocab[char], vocab[char + "</w>"] = len(vocab), len(vocab) + 1
    vocab["<|startoftext|>"], vocab["<|endoftext|>"] = len(vocab), len(vocab) + 1
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    (tmp_path / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt"))
    small = {"hidden_size": 16, "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2}
    model = Owlv2ForObjectDetection(
        Owlv2Config(
            text_config={
                **small,
                "vocab_size": len(vocab),
                "max_position_embeddings": 16,
                "bos_token_id": vocab["<|startoftext|>"],
                "eos_token_id": vocab["<|endoftext|>"],
            },
            vision_config={**small, "image_size": 32, "patch_size": 8},
            projection_dim=16,
        )
    )
    model.save_pretrained(tmp_path / "owl")
    Owlv2Processor(
        image_processor=Owlv2ImageProcessorPil(size={"height": 32, "width": 32}), tokenizer=tokenizer
    ).save_pretrained(tmp_path / "owl")
    grounder = DetectorSegmenterGrounder(tmp_path / "owl", box_threshold=0.0)
    box, score = grounder.detect(FRAME, "the red circle")
    assert 0 <= box[0] <= box[2] <= 80 and 0 <= box[1] <= box[3] <= 48 and 0 <= score <= 1
    assert grounder(FRAME, "the red circle").shape == (48, 80)
