import json

import pytest

from modeling_pite.evaluation.annotations import (
    AnnotationError,
    GroundingQuery,
    grounding_queries,
    load_activitynet_captions,
    load_charades_sta,
    load_durations,
)
from modeling_pite.evaluation.grounding import grounding_iou, grounding_prompt, score_grounding


def test_prompt_follows_vtimellm():
    assert grounding_prompt(" A man walks the Dog. ") == "During which frames can we see a man walks the dog?"
    assert grounding_prompt("She smiles") == "During which frames can we see she smiles?"


def test_iou_is_rounded_to_two_decimals_and_reversed_spans_score_zero():
    assert grounding_iou((0.0, 0.296), (0.0, 1.0)) == 0.3  # rounding lifts it onto the 0.3 threshold
    assert grounding_iou((0.45, 0.60), (0.3, 0.6)) == 0.5
    assert grounding_iou((0.60, 0.30), (0.3, 0.6)) == 0.0  # written order kept: empty intersection
    assert grounding_iou((0.2, 0.2), (0.2, 0.2)) == 0.0  # degenerate union


def test_score_grounding_hand_computed():
    # reference span (30 s, 60 s) of a 100 s video, i.e. (0.30, 0.60)
    queries = [GroundingQuery(f"v#{i}", "v", "s", 30.0, 60.0, 100.0) for i in range(8)]
    predictions = {
        "v#0": "From 30 to 60.",  # IoU 1.0
        "v#1": "The event happens from 45 to 60.",  # IoU 0.5 exactly
        "v#2": "from 39 to 60",  # IoU 0.7 exactly
        "v#3": "from 51 to 60",  # IoU 0.3 exactly
        "v#4": "from 60 to 30",  # reversed -> 0
        "v#5": "I cannot tell.",  # unparseable -> 0, stays in the denominator
        # v#6 missing -> 0, counted as unparseable
        "v#7": "between 00 and 09",  # parsed, no overlap -> 0
    }
    report, items = score_grounding(predictions, queries)
    assert [item.iou for item in items] == [1.0, 0.5, 0.7, 0.3, 0.0, 0.0, 0.0, 0.0]
    assert report["miou"] == pytest.approx(100 * 2.5 / 8)
    assert report["r1@0.3"] == pytest.approx(100 * 4 / 8)
    assert report["r1@0.5"] == pytest.approx(100 * 3 / 8)
    assert report["r1@0.7"] == pytest.approx(100 * 2 / 8)
    assert report["unparseable"] == pytest.approx(100 * 2 / 8)
    assert report["reversed"] == pytest.approx(100 * 1 / 8)
    assert report["missing"] == 1 and report["num_queries"] == 8
    assert items[7].span == (0, 9) and items[5].span is None and items[6].missing


def test_activitynet_file_to_report(tmp_path):
    path = tmp_path / "val_2.json"
    path.write_text(
        json.dumps(
            {
                "v_a": {"duration": 50.0, "timestamps": [[0.0, 25.0], [25.0, 50.0]], "sentences": ["One.", "Two."]},
                "v_b": {"duration": 20.0, "timestamps": [[10.0, 20.0]], "sentences": ["Three."]},
            }
        )
    )
    queries = grounding_queries(load_activitynet_captions(path))
    assert [q.query_id for q in queries] == ["v_a#0", "v_a#1", "v_b#0"]
    report, _ = score_grounding({"v_a#0": "from 00 to 50", "v_a#1": "from 50 to 99", "v_b#0": "50 and 99"}, queries)
    # IoUs: (0, .5) vs (0, .5) = 1.0; (.5, .99) vs (.5, 1) = 0.98; same for v_b (10/20 .. 20/20)
    assert report["miou"] == pytest.approx(100 * (1.0 + 0.98 + 0.98) / 3)
    assert report["r1@0.7"] == pytest.approx(100.0) and report["unparseable"] == 0


def test_annotation_errors_name_file_and_entry(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"v_x": {"duration": 10, "timestamps": [[0, 1]], "sentences": []}}))
    with pytest.raises(AnnotationError, match=r"bad\.json.*v_x.*1 timestamps but 0 sentences"):
        load_activitynet_captions(path)
    path.write_text("{not json")
    with pytest.raises(AnnotationError, match="not valid JSON"):
        load_activitynet_captions(path)


def test_charades_sta_lines_with_durations(tmp_path):
    lines = tmp_path / "charades_sta_test.txt"
    lines.write_text("3MSZA 24.3 30.4##person turn a light on.\n3MSZA 0.0 5.0##a person opens a door.\nAB12 1 2##x\n")
    csv = tmp_path / "Charades_v1_test.csv"
    csv.write_text("id,subject,length\n3MSZA,s,31.0\n")
    videos = load_charades_sta(lines, load_durations(csv))
    assert videos["3MSZA"].timestamps == [(24.3, 30.4), (0.0, 5.0)]
    assert videos["3MSZA"].sentences[0] == "person turn a light on."
    assert videos["3MSZA"].duration == 31.0 and videos["AB12"].duration is None
    queries = grounding_queries(videos)
    with pytest.raises(ValueError, match="AB12#0.*duration"):
        score_grounding({}, queries)
    lines.write_text("3MSZA 24.3##no end\n")
    with pytest.raises(AnnotationError, match=r"charades_sta_test\.txt:1"):
        load_charades_sta(lines)
