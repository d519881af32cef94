import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from modeling_pite.evaluation.annotations import QASample, load_video_qa
from modeling_pite.evaluation.qa_judge import (
    JUDGE_SYSTEM_PROMPT,
    OpenAIJudge,
    TransformersJudge,
    exact_match,
    judge_messages,
    parse_judge_reply,
    score_qa,
)

SAMPLES = [
    QASample("1", "v_a", "What color is the shape?", "red"),
    QASample("2", "v_a", "How many objects are there?", "two"),
    QASample("3", "v_b", "Is it moving?", "yes"),
]


class ScriptedJudge:
    name = "scripted"

    def __init__(self, replies):
        self.replies, self.calls = list(replies), []

    def complete(self, messages, attempt):
        self.calls.append(attempt)
        return self.replies.pop(0)


def test_parse_judge_reply():
    assert parse_judge_reply("{'pred': 'yes', 'score': 4}") == ("yes", 4)
    assert parse_judge_reply("Sure! {'pred': 'no', 'score': 4.8} Hope it helps") == (
        "no",
        4,
    )  # int() like the original
    assert parse_judge_reply('{"pred": "Yes", "score": "3"}') == ("yes", 3)
    assert parse_judge_reply("{'pred': 'maybe', 'score': 3}") is None
    assert parse_judge_reply("{'pred': 'yes', 'score': 7}") is None
    assert parse_judge_reply("{'a': 1} then {'pred': 'no', 'score': 0}") == ("no", 0)
    assert parse_judge_reply("garbage {{ ]") is None


def test_prompt_is_video_chatgpt_verbatim():
    system, user = judge_messages("Q?", "A", "P")
    assert system["content"] == JUDGE_SYSTEM_PROMPT
    assert "accomplish the task:------##INSTRUCTIONS: - Focus" in JUDGE_SYSTEM_PROMPT
    assert user["content"].startswith(
        "Please evaluate the following video-based question-answer pair:\n\nQuestion: Q?\n"
    )
    assert "Correct Answer: A\nPredicted Answer: P\n\n" in user["content"]
    assert user["content"].endswith("your response should look like this: {'pred': 'yes', 'score': 4.8}.")


def test_retry_bound_and_aggregation(tmp_path):
    judge = ScriptedJudge(
        [
            "{'pred': 'yes', 'score': 5}",  # q1 at once
            "nonsense",
            "{'pred': 'no', 'score': 2}",  # q2 on the second attempt
            "junk",
            "junk",
            "junk",  # q3: three garbage replies -> "no", 0, invalid
        ]
    )
    predictions = {"1": "Red.", "2": "three", "3": "yes"}
    report, verdicts = score_qa(SAMPLES, predictions, judge, max_attempts=3, verdicts_path=tmp_path / "v.jsonl")
    assert judge.calls == [0, 0, 1, 0, 1, 2]
    assert [(v.pred, v.score, v.valid, v.attempts) for v in verdicts] == [
        ("yes", 5, True, 1),
        ("no", 2, True, 2),
        ("no", 0, False, 3),
    ]
    assert report["accuracy"] == pytest.approx(100 / 3)
    assert report["score"] == pytest.approx(7 / 3)
    assert report["invalid_verdicts"] == 1 and report["judge"] == "scripted"
    assert report["exact_match"] == pytest.approx(200 / 3)  # "Red." == "red", "yes" == "yes"
    # resume: verdicts of the same judge are reused, nothing is asked again
    again, _ = score_qa(SAMPLES, predictions, ScriptedJudge([]), verdicts_path=tmp_path / "v.jsonl")
    assert again == report
    # a changed prediction is judged again, the others are still reused
    judge = ScriptedJudge(["{'pred': 'yes', 'score': 3}"])
    changed, _ = score_qa(SAMPLES, {**predictions, "2": "two"}, judge, verdicts_path=tmp_path / "v.jsonl")
    assert judge.calls == [0] and changed["yes"] == 2


def test_missing_prediction_is_no_without_asking():
    judge = ScriptedJudge(["{'pred': 'yes', 'score': 5}"] * 2)
    report, verdicts = score_qa(SAMPLES, {"1": "red", "3": "yes"}, judge)
    assert len(judge.calls) == 2 and report["missing"] == 1 and verdicts[1].pred == "no"
    assert exact_match("  The  RED!", "the red") and not exact_match("red", "blue")


def test_video_qa_files(tmp_path):
    (tmp_path / "q.json").write_text(json.dumps([{"video_name": "v_a", "question": "what?", "question_id": 7}]))
    (tmp_path / "a.json").write_text(json.dumps([{"answer": "red", "type": 3, "question_id": 7}]))
    (sample,) = load_video_qa(tmp_path / "q.json", tmp_path / "a.json")
    assert (sample.question_id, sample.video_id, sample.answer) == ("7", "v_a", "red")
    (tmp_path / "a.json").write_text(json.dumps([]))
    with pytest.raises(ValueError, match="no answer for question_id '7'"):
        load_video_qa(tmp_path / "q.json", tmp_path / "a.json")


def test_tiny_local_model_as_judge(tmp_path, tiny_tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tiny_tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        bos_token_id=tiny_tokenizer.bos_token_id,
        eos_token_id=tiny_tokenizer.eos_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(tmp_path / "judge")
    tiny_tokenizer.save_pretrained(tmp_path / "judge")
    judge = TransformersJudge(str(tmp_path / "judge"), max_new_tokens=8)
    report, verdicts = score_qa(SAMPLES, {"1": "red", "2": "two", "3": "no"}, judge, max_attempts=2)
    assert report["judge"] == f"transformers:{tmp_path / 'judge'}"
    assert report["num_questions"] == 3 and len(verdicts) == 3
    assert all(1 <= v.attempts <= 2 and v.pred in ("yes", "no") and 0 <= v.score <= 5 for v in verdicts)
    assert report["invalid_verdicts"] == sum(not v.valid for v in verdicts)
    assert report["score"] == pytest.approx(sum(v.score for v in verdicts) / 3)
    assert report["exact_match"] == pytest.approx(200 / 3)


class _ChatServer:
    """An OpenAI chat-completions endpoint on 127.0.0.1 replaying scripted (status, content) pairs."""

    def __init__(self, script):
        self.script, self.requests = list(script), []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append((self.path, dict(self.headers), body))
                status, content = outer.script.pop(0)
                payload = {"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]}
                data = json.dumps(payload if status == 200 else {"error": content}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def test_openai_compatible_endpoint(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    script = [
        (200, "I think it is right."),  # garbage: asked again
        (200, "{'pred': 'yes', 'score': 4}"),
        (500, "overloaded"),  # transport-level retry, not a judge attempt
        (200, "{'pred': 'no', 'score': 1}"),
        (200, "{'pred': 'yes', 'score': 5}"),
    ]
    with _ChatServer(script) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.url)
        judge = OpenAIJudge("judge-model", retry_backoff=0.0)
        report, verdicts = score_qa(SAMPLES, {"1": "red", "2": "one", "3": "yes"}, judge, max_attempts=3)
    assert [(v.pred, v.score, v.attempts) for v in verdicts] == [("yes", 4, 2), ("no", 1, 1), ("yes", 5, 1)]
    assert report["accuracy"] == pytest.approx(200 / 3) and report["score"] == pytest.approx(10 / 3)
    assert report["judge"] == f"openai:judge-model@{server.url}"
    path, headers, body = server.requests[0]
    assert path == "/v1/chat/completions" and headers["Authorization"] == "Bearer sk-test"
    assert body["model"] == "judge-model" and body["messages"][0]["content"] == JUDGE_SYSTEM_PROMPT


def test_openai_endpoint_client_error_raises():
    with _ChatServer([(401, "bad key")]) as server:
        judge = OpenAIJudge("m", base_url=server.url, api_key="x", retry_backoff=0.0)
        with pytest.raises(RuntimeError, match="HTTP 401"):
            score_qa(SAMPLES[:1], {"1": "red"}, judge)


def test_pite_evaluate_qa_with_http_judge_resumes(tmp_path, monkeypatch):
    from modeling_pite.cli import main

    (tmp_path / "q.json").write_text(json.dumps([{"video_name": s.video_id, "question": s.question, "question_id": s.question_id} for s in SAMPLES]))  # fmt: skip
    (tmp_path / "a.json").write_text(json.dumps([{"answer": s.answer, "type": 0, "question_id": s.question_id} for s in SAMPLES]))  # fmt: skip
    (tmp_path / "p.json").write_text(json.dumps({"1": "red", "2": "three", "3": "yes"}))
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    script = [(200, "{'pred': 'yes', 'score': 5}"), (200, "{'pred': 'no', 'score': 1}"), (200, "{'pred': 'yes', 'score': 4}")]  # fmt: skip
    with _ChatServer(script) as server:
        args = ["evaluate", "--task", "qa", "--annotations", str(tmp_path / "q.json"), "--answers", str(tmp_path / "a.json"), "--predictions", str(tmp_path / "p.json"), "--judge", "openai", "--judge-model", "local-judge", "--judge-base-url", server.url, "--output-dir", str(tmp_path / "out"), "--no-progress"]  # fmt: skip
        main(args)
        main(args)  # the rerun reuses verdicts.jsonl: the server has no replies left
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["accuracy"] == pytest.approx(200 / 3) and report["score"] == pytest.approx(10 / 3)
    assert report["judge"] == f"openai:local-judge@{server.url}" and len(server.requests) == 3
    assert "Authorization" not in server.requests[0][1]  # no key given, none sent
    assert (
        f"accuracy (%) (judge: openai:local-judge@{server.url}) | 66.67 |"
        in (tmp_path / "out" / "report.md").read_text()
    )
