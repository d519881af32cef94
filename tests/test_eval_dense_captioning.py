import json
import shutil

import numpy as np
import pytest

from modeling_pite.evaluation.annotations import AnnotationError, VideoCaptions
from modeling_pite.evaluation.caption_metrics import CaptionScorer, JavaNotFoundError
from modeling_pite.evaluation.dense_captioning import (
    dense_captions_from_text,
    evaluate_dense_captions,
    load_densevid_submission,
    merge_similar_events,
    parse_dense_captions,
    segment_tiou,
)
from modeling_pite.evaluation.soda import order_preserving_max_score, soda_f_measure


class ExactMatchScorer:
    """Stand-in for the Java metrics: a pair scores 1 when hypothesis == reference, the aggregate is the mean."""

    def tokenize(self, sentences):
        return [s.lower().rstrip(".") for s in sentences]

    def meteor(self, hyps, refs):
        scores = [float(h == r[0]) for h, r in zip(hyps, refs)]
        return float(np.mean(scores)), scores

    def cider(self, hyps, refs):
        return 10 * self.meteor(hyps, refs)[0]


REFERENCES = {
    "v1": VideoCaptions("v1", 100.0, [(0.0, 10.0), (10.0, 30.0)], ["A.", "B."]),
    "v2": VideoCaptions("v2", 100.0, [(0.0, 50.0), (20.0, 50.0)], ["C.", "D."]),
    "v3": VideoCaptions("v3", 100.0, [(0.0, 50.0)], ["E."]),  # no prediction at all
    "v4": VideoCaptions("v4", 100.0, [(0.0, 50.0)], ["F."]),  # an empty prediction list
}
PREDICTIONS = {
    "v1": [
        {"sentence": "a", "timestamp": [0.0, 10.0]},  # tIoU 1 with A
        {"sentence": "b", "timestamp": [10.0, 24.0]},  # tIoU 14/20 = 0.7 with B, minus densevid's 1e-8
        {"sentence": "zzz", "timestamp": [50.0, 60.0]},  # overlaps nothing: paired with garbage
    ],
    "v2": [{"sentence": "c", "timestamp": [10.0, 50.0]}],  # tIoU 0.8 with C and 0.75 with D: paired with both
    "v4": [],
    "v9": [{"sentence": "not in the references", "timestamp": [0.0, 1.0]}],
}


def test_tiou_matches_densevid():
    assert segment_tiou([10.0, 24.0], [10.0, 30.0]) < 0.7  # exactly 0.7 falls just short (the 1e-8 term)
    assert segment_tiou([0.0, 10.0], [20.0, 30.0]) == 0.0
    assert segment_tiou([40.0, 20.0], [20.0, 40.0]) == 0.0  # reversed prediction overlaps nothing


def test_densevid_protocol_hand_computed():
    report, per_video = evaluate_dense_captions(PREDICTIONS, REFERENCES, scorer=ExactMatchScorer())
    # v1: pairs (a,A) (b,B) (zzz,garbage) at 0.3/0.5 -> 2/3; at 0.7/0.9 b is unmatched -> 1/3
    # v2: (c,C) (c,D) at 0.3/0.5/0.7 -> 1/2; nothing >= 0.9 -> garbage -> 0;  v3, v4 -> 0
    assert per_video["v1"]["meteor@0.5"] == pytest.approx(2 / 3)
    assert per_video["v1"]["meteor@0.7"] == pytest.approx(1 / 3)
    assert per_video["v2"]["meteor@0.7"] == pytest.approx(1 / 2) and per_video["v2"]["meteor@0.9"] == 0
    assert report["meteor@0.3"] == pytest.approx(100 * 7 / 24)
    assert report["meteor@0.9"] == pytest.approx(100 * 2 / 24)
    assert report["meteor"] == pytest.approx(100 * (7 + 7 + 5 + 2) / 96)
    assert report["cider"] == pytest.approx(10 * report["meteor"])
    # SODA_c: v1 matches A-a (tIoU 1) and B-b (0.7): total 1.7, P = 1.7/3, R = 1.7/2 -> F = 2 * 1.7 / 5
    #         v2 matches C-c (0.8): P = 0.8, R = 0.4 -> F = 0.8 * 2 / 3
    assert per_video["v1"]["soda_c"] == pytest.approx(2 * 1.7 / 5, abs=1e-6)
    assert per_video["v2"]["soda_c"] == pytest.approx(0.8 * 2 / 3, abs=1e-6)
    assert report["soda_c"] == pytest.approx(100 * (0.68 + 1.6 / 3) / 4, abs=1e-4)
    assert (report["missing_videos"], report["empty_videos"], report["extra_videos"]) == (1, 1, 1)


def test_duplicate_predictions_are_scored_twice_and_max_proposals_truncates():
    refs = {"v": VideoCaptions("v", 10.0, [(0.0, 10.0)], ["x"])}
    dup = {"v": [{"sentence": "x", "timestamp": [0.0, 10.0]}, {"sentence": "y", "timestamp": [0.0, 10.0]}] * 2}
    report, per_video = evaluate_dense_captions(dup, refs, scorer=ExactMatchScorer())
    assert report["meteor"] == pytest.approx(50.0)
    # SODA matches one-to-one: the reference is used once, so the duplicates cost precision (P 1/4, R 1)
    assert per_video["v"]["soda_c"] == pytest.approx(0.4, abs=1e-6)
    report, per_video = evaluate_dense_captions(dup, refs, scorer=ExactMatchScorer(), max_proposals=1)
    assert report["meteor"] == pytest.approx(100.0)
    assert per_video["v"]["soda_c"] == pytest.approx(1.0, abs=1e-6)


def test_order_preserving_dp():
    assert order_preserving_max_score(np.array([[0.0, 1.0], [1.0, 0.0]])) == 1.0  # crossing pairs: one only
    assert order_preserving_max_score(np.array([[0.5, 0.0], [0.0, 0.5]])) == 1.0
    assert order_preserving_max_score(np.array([[0.2, 0.9, 0.1]])) == 0.9  # one reference, one match
    assert soda_f_measure(np.zeros((2, 0)), np.zeros((2, 0))) == (0.0, 0.0, 0.0)


def test_parse_model_answers():
    text = '[{"event": "A man runs.", "timestamps": "from 00 to 10"}, {"event": "He jumps.", "timestamps": "from 11 to 40"}]'
    assert parse_dense_captions(text) == [(0, 10, "A man runs."), (11, 40, "He jumps.")]
    multiline = 'Sure:\n[\n  {"event": "a", "timestamps": "from 05 to 09"},\n  {"event": "b", "timestamps": "from 10 to 20"}\n]'
    assert parse_dense_captions(multiline) == [(5, 9, "a"), (10, 20, "b")]
    truncated = '[{"event": "a", "timestamps": "from 05 to 09"}, {"event": "b", "timest'
    assert parse_dense_captions(truncated) == [(5, 9, "a")]
    assert parse_dense_captions("[{'event': 'a', 'timestamps': 'from 05 to 09'}]") == [(5, 9, "a")]
    assert parse_dense_captions("From 00 to 12, a man enters. From 13 to 40, he sits.") == [
        (0, 12, "a man enters."),
        (13, 40, "he sits."),
    ]
    assert parse_dense_captions('[{"event": "no span", "timestamps": "later"}]') == []
    assert parse_dense_captions("nothing here") == []


def test_merge_adjacent_near_duplicates_and_convert_to_seconds():
    events = [(0, 10, "a man runs"), (11, 20, "a man runs"), (30, 40, "a man runs"), (41, 50, "a dog runs")]
    assert merge_similar_events(events) == [(0, 20, "a man runs"), (30, 40, "a man runs"), (41, 50, "a dog runs")]
    text = '[{"event": "x", "timestamps": "from 00 to 09"}, {"event": "x", "timestamps": "from 10 to 19"}]'
    assert dense_captions_from_text(text, duration=50.0) == [{"sentence": "x", "timestamp": [0.0, 10.0]}]


def test_submission_reader(tmp_path):
    path = tmp_path / "sub.json"
    path.write_text(json.dumps({"version": "1.0", "results": {"v": [{"sentence": "a", "timestamp": [0, 1]}]}}))
    assert load_densevid_submission(path) == {"v": [{"sentence": "a", "timestamp": [0, 1]}]}
    path.write_text(json.dumps({"results": {"v": [{"sentence": "a"}]}}))
    with pytest.raises(AnnotationError, match=r"results\['v'\]\[0\]"):
        load_densevid_submission(path)


def test_missing_java_says_how_to_install(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(JavaNotFoundError, match="apt-get install openjdk-17-jre-headless"):
        CaptionScorer()


@pytest.mark.slow
def test_java_metrics_equal_pycocoevalcap_called_directly():
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    refs = {
        "v1": VideoCaptions(
            "v1", 60.0, [(0.0, 20.0), (20.0, 60.0)], ["A man walks a dog in the park.", "The dog jumps over a fence!"]
        ),
        "v2": VideoCaptions(
            "v2", 30.0, [(0.0, 30.0), (5.0, 25.0)], ["A woman is singing on stage.", "People clap, cheering loudly."]
        ),
    }
    preds = {
        "v1": [
            {"sentence": "A man is walking his dog.", "timestamp": [0.0, 18.0]},
            {"sentence": "A dog jumps.", "timestamp": [22.0, 60.0]},
        ],
        "v2": [{"sentence": "a woman sings and people clap", "timestamp": [0.0, 28.0]}],
    }
    with CaptionScorer() as scorer:
        _, per_video = evaluate_dense_captions(preds, refs, scorer=scorer, tious=[0.5])
        assert scorer.meteor_starts == 1
    # at tIoU 0.5 every prediction matches exactly these references (v2's one matches both)
    pairs = {"v1": [(0, 0), (1, 1)], "v2": [(0, 0), (0, 1)]}
    meteor = Meteor()
    tokenizer = PTBTokenizer()
    for vid, vid_pairs in pairs.items():
        res = {i: [{"caption": preds[vid][p]["sentence"]}] for i, (p, _) in enumerate(vid_pairs)}
        gts = {i: [{"caption": refs[vid].sentences[r]}] for i, (_, r) in enumerate(vid_pairs)}
        res, gts = tokenizer.tokenize(res), tokenizer.tokenize(gts)
        assert per_video[vid]["meteor@0.5"] == pytest.approx(meteor.compute_score(gts, res)[0], abs=1e-9)
        assert per_video[vid]["cider@0.5"] == pytest.approx(Cider().compute_score(gts, res)[0], abs=1e-9)
        assert per_video[vid]["meteor@0.5"] > 0
    # SODA_c's matrix: METEOR with the reference as hypothesis (fujiso/SODA's argument order)
    sorted_preds = tokenizer.tokenize({i: [{"caption": p["sentence"]}] for i, p in enumerate(preds["v1"])})
    sorted_refs = tokenizer.tokenize({i: [{"caption": s}] for i, s in enumerate(refs["v1"].sentences)})
    matrix = np.array(
        [[meteor.compute_score({0: sorted_preds[p]}, {0: sorted_refs[g]})[1][0] for p in range(2)] for g in range(2)]
    )
    iou = np.array([[segment_tiou(p["timestamp"], span) for p in preds["v1"]] for span in refs["v1"].timestamps])
    assert per_video["v1"]["soda_c"] == pytest.approx(soda_f_measure(iou, matrix)[2], abs=1e-9)
