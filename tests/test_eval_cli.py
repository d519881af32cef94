import json

import pytest

from modeling_pite.cli import main
from modeling_pite.evaluation.cli import load_answers
from modeling_pite.evaluation.jsonl import append_jsonl, read_jsonl
from modeling_pite.evaluation.runner import EvalItem, run_generation

ANNOTATIONS = {
    "v_a": {"duration": 50.0, "timestamps": [[0.0, 25.0], [25.0, 50.0]], "sentences": ["A dog runs.", "It sits."]},
    "v_b": {"duration": 20.0, "timestamps": [[10.0, 20.0]], "sentences": ["A cat jumps."]},
}


@pytest.fixture
def activitynet(tmp_path):
    path = tmp_path / "val_2.json"
    path.write_text(json.dumps(ANNOTATIONS))
    return path


def test_score_grounding_predictions_file(tmp_path, activitynet):
    predictions = tmp_path / "answers.json"
    predictions.write_text(json.dumps({"v_a#0": "from 00 to 49", "v_a#1": "no idea", "v_b#0": "From 50 to 99."}))
    out = tmp_path / "out"
    assert main(["evaluate", "--task", "grounding", "--annotations", str(activitynet), "--predictions", str(predictions), "--output-dir", str(out)]) == 0  # fmt: skip
    report = json.loads((out / "report.json").read_text())
    # IoUs: (0, .49) vs (0, .5) -> 0.98; unparseable -> 0; (.5, .99) vs (.5, 1) -> 0.98
    assert report["miou"] == pytest.approx(100 * 1.96 / 3)
    assert report["r1@0.7"] == pytest.approx(200 / 3) and report["unparseable"] == pytest.approx(100 / 3)
    assert report["task"] == "grounding" and report["num_items"] == 3
    assert "| mIoU | 65.33 |" in (out / "report.md").read_text()


def test_score_qa_jsonl_without_judge(tmp_path):
    (tmp_path / "q.json").write_text(json.dumps([{"video_name": "v", "question": "color?", "question_id": i} for i in range(4)]))  # fmt: skip
    (tmp_path / "a.json").write_text(json.dumps([{"answer": "red", "type": 3, "question_id": i} for i in range(4)]))
    lines = [{"question_id": 0, "pred": "Red"}, {"1": "blue"}, {"id": "2", "output": "red."}]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    out = tmp_path / "out"
    main(["evaluate", "--task", "qa", "--annotations", str(tmp_path / "q.json"), "--answers", str(tmp_path / "a.json"), "--predictions", str(tmp_path / "p.jsonl"), "--output-dir", str(out)])  # fmt: skip
    report = json.loads((out / "report.json").read_text())
    assert report["exact_match"] == pytest.approx(50.0) and report["missing"] == 1
    assert "accuracy" not in report and "judge" not in report


def test_load_answers_rejects_records_without_ids(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps([{"text": "x", "other": 1}]))
    with pytest.raises(ValueError, match=r"p\.json: record 0 has no id"):
        load_answers(path)


def test_torn_jsonl_line_is_skipped_and_appending_continues(tmp_path):
    path = tmp_path / "p.jsonl"
    append_jsonl(path, {"id": "a", "output": "1"})
    with open(path, "a") as f:
        f.write('{"id": "b", "outp')  # the process died mid-write
    append_jsonl(path, {"id": "c", "output": "3"})
    assert [r["id"] for r in read_jsonl(path)] == ["a", "c"]


class Crash(Exception):
    pass


def test_interrupted_generation_resumes_to_the_same_answers(tmp_path):
    items = [EvalItem(f"q{i}", f"v{i % 3}", f"prompt {i}") for i in range(7)]

    def answer(batch):
        return [f"answer to {item.prompt}" for item in batch]

    calls = []

    def crashing(batch):
        calls.append(len(batch))
        if len(calls) == 3:
            raise Crash
        return answer(batch)

    with pytest.raises(Crash):
        run_generation(items, crashing, tmp_path / "p.jsonl", batch_size=2, progress=False)
    assert len(list(read_jsonl(tmp_path / "p.jsonl"))) == 4  # two batches kept
    asked = []

    def recording(batch):
        asked.extend(item.item_id for item in batch)
        return answer(batch)

    resumed, errors = run_generation(items, recording, tmp_path / "p.jsonl", batch_size=2, progress=False)
    assert asked == ["q4", "q5", "q6"] and not errors
    assert resumed == dict(zip([i.item_id for i in items], answer(items)))


def test_bad_items_are_skipped_reported_and_retried(tmp_path):
    items = [EvalItem(f"q{i}", f"v{i}", "p") for i in range(4)]

    def flaky(batch):
        if any(item.video_id == "v2" for item in batch):
            raise FileNotFoundError("no video for 'v2'")
        return ["ok"] * len(batch)

    outputs, errors = run_generation(items, flaky, tmp_path / "p.jsonl", batch_size=4, progress=False)
    assert set(outputs) == {"q0", "q1", "q3"} and list(errors) == ["q2"] and "no video" in errors["q2"]
    outputs, errors = run_generation(items, lambda batch: ["fixed"] * len(batch), tmp_path / "p.jsonl", progress=False)
    assert outputs["q2"] == "fixed" and not errors

    def broken(batch):
        raise OSError("wrong video folder")

    with pytest.raises(RuntimeError, match="all 2 items failed.*wrong video folder"):
        run_generation(items[:2], broken, tmp_path / "q.jsonl", progress=False)
