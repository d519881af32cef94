"""Open-ended video QA scored by the Video-ChatGPT protocol: an LLM judge plus exact match.

For each (question, correct answer, predicted answer) the judge is given Video-ChatGPT's system and
user prompts (`quantitative_evaluation/evaluate_activitynet_qa.py`, text kept verbatim) and replies
with a Python dict string `{'pred': 'yes'|'no', 'score': 0..5}`. Accuracy = yes / (yes + no), score =
mean of `int(score)`, as in that script. A reply that does not parse is asked again, at most
`max_attempts` times; after that the question counts as "no", 0 and is reported in `invalid_verdicts`.

The judge is pluggable: `TransformersJudge` (any local causal LM, its chat template when it has one) or
`OpenAIJudge` (any OpenAI-compatible chat-completions endpoint, plain urllib). Its `name` is recorded
beside every number, since scores from different judges are not comparable.
"""

from __future__ import annotations

import ast
import json
import os
import re
import string
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

from tqdm.auto import tqdm

from .annotations import QASample
from .jsonl import append_jsonl, read_jsonl

__all__ = [
    "JUDGE_SYSTEM_PROMPT",
    "Judge",
    "JudgeVerdict",
    "OpenAIJudge",
    "TransformersJudge",
    "exact_match",
    "judge_messages",
    "parse_judge_reply",
    "score_qa",
]

# Video-ChatGPT's prompt, verbatim (its string pieces are concatenated without separators).
JUDGE_SYSTEM_PROMPT = (
    "You are an intelligent chatbot designed for evaluating the correctness of generative outputs for "
    "question-answer pairs. Your task is to compare the predicted answer with the correct answer and determine "
    "if they match meaningfully. Here's how you can accomplish the task:"
    "------"
    "##INSTRUCTIONS: "
    "- Focus on the meaningful match between the predicted answer and the correct answer.\n"
    "- Consider synonyms or paraphrases as valid matches.\n"
    "- Evaluate the correctness of the prediction compared to the answer."
)
_JUDGE_USER_TEMPLATE = (
    "Please evaluate the following video-based question-answer pair:\n\n"
    "Question: {question}\n"
    "Correct Answer: {answer}\n"
    "Predicted Answer: {prediction}\n\n"
    "Provide your evaluation only as a yes/no and score where the score is an integer value between 0 and 5, "
    "with 5 indicating the highest meaningful match. Please generate the response in the form of a Python "
    "dictionary string with keys 'pred' and 'score', where value of 'pred' is  a string of 'yes' or 'no' and "
    "value of 'score' is in INTEGER, not STRING."
    "DO NOT PROVIDE ANY OTHER OUTPUT TEXT OR EXPLANATION. Only provide the Python dictionary string. "
    "For example, your response should look like this: {{'pred': 'yes', 'score': 4.8}}."
)
_DICT = re.compile(r"\{[^{}]*\}")


def judge_messages(question: str, answer: str, prediction: str) -> list[dict[str, str]]:
    """The chat sent to the judge for one QA pair."""
    user = _JUDGE_USER_TEMPLATE.format(question=question, answer=answer, prediction=prediction)
    return [{"role": "system", "content": JUDGE_SYSTEM_PROMPT}, {"role": "user", "content": user}]


def parse_judge_reply(text: str) -> tuple[str, int] | None:
    """`("yes" | "no", score)` from the first dict in `text` with 'pred' and 'score', else None.

    Like Video-ChatGPT: `ast.literal_eval` of the dict, "yes" in pred -> yes, elif "no" -> no, score
    `int(score)`; tolerant of prose around the dict, JSON quoting and a score given as a string. A pred
    without yes/no or a score outside 0..5 is invalid.
    """
    for match in _DICT.finditer(text):
        try:
            value = ast.literal_eval(match.group())
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            try:
                value = json.loads(match.group())
            except ValueError:
                continue
        if not isinstance(value, dict) or "pred" not in value or "score" not in value:
            continue
        pred = str(value["pred"]).lower()
        verdict = "yes" if "yes" in pred else "no" if "no" in pred else None
        try:
            score = int(float(value["score"]))
        except (TypeError, ValueError):
            continue
        if verdict is not None and 0 <= score <= 5:
            return verdict, score
    return None


def exact_match(prediction: str, answer: str) -> bool:
    """Case-, punctuation- and whitespace-insensitive string equality."""

    def normalize(text: str) -> str:
        return " ".join(text.lower().translate(str.maketrans("", "", string.punctuation)).split())

    return normalize(prediction) == normalize(answer)


class Judge(Protocol):
    """Anything that answers a chat; `attempt` > 0 means the previous reply did not parse."""

    name: str

    def complete(self, messages: list[dict[str, str]], attempt: int) -> str: ...


class TransformersJudge:
    """A local causal LM as judge: greedy on the first attempt, sampled on retries (a greedy retry would repeat)."""

    def __init__(self, model_or_path, tokenizer=None, *, max_new_tokens: int = 48, name: str | None = None):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if isinstance(model_or_path, str | os.PathLike):
            self.name = name or f"transformers:{model_or_path}"
            tokenizer = tokenizer or AutoTokenizer.from_pretrained(model_or_path)
            model_or_path = AutoModelForCausalLM.from_pretrained(model_or_path)
        else:
            self.name = name or f"transformers:{model_or_path.config.name_or_path or type(model_or_path).__name__}"
        if tokenizer is None:
            raise ValueError("pass the judge's tokenizer along with a model object")
        self.model, self.tokenizer = model_or_path.eval(), tokenizer
        self.max_new_tokens = max_new_tokens

    def _prompt_ids(self, messages):
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
            )
        text = "\n\n".join(m["content"] for m in messages) + "\n\n"
        return self.tokenizer(text, return_tensors="pt")

    def complete(self, messages: list[dict[str, str]], attempt: int) -> str:
        import torch

        inputs = self._prompt_ids(messages).to(self.model.device)
        pad_token_id = self.tokenizer.pad_token_id
        if pad_token_id is None:
            pad_token_id = self.tokenizer.eos_token_id
        with torch.no_grad():
            output = self.model.generate(
                **inputs,
                max_new_tokens=self.max_new_tokens,
                do_sample=attempt > 0,
                pad_token_id=pad_token_id,
            )
        return self.tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)


class OpenAIJudge:
    """An OpenAI-compatible `/chat/completions` endpoint (OpenAI, vLLM, llama.cpp server, ...).

    `base_url` defaults to `$OPENAI_BASE_URL` (else https://api.openai.com/v1), `api_key` to
    `$OPENAI_API_KEY`. Transport errors and HTTP 429/5xx are retried with backoff; other HTTP errors raise.
    """

    def __init__(
        self,
        model: str = "gpt-3.5-turbo",
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        max_transport_retries: int = 5,
        retry_backoff: float = 1.0,
        temperature: float = 0.0,
    ):
        self.model = model
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1").rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.timeout, self.max_transport_retries, self.temperature = timeout, max_transport_retries, temperature
        self.retry_backoff = retry_backoff
        self.name = f"openai:{model}@{self.base_url}"

    def complete(self, messages: list[dict[str, str]], attempt: int) -> str:
        body = json.dumps({"model": self.model, "messages": messages, "temperature": self.temperature}).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        url = f"{self.base_url}/chat/completions"
        for retry in range(self.max_transport_retries + 1):
            request = urllib.request.Request(url, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    reply = json.loads(response.read())
                return reply["choices"][0]["message"]["content"] or ""
            except urllib.error.HTTPError as e:
                if e.code != 429 and e.code < 500 or retry == self.max_transport_retries:
                    raise RuntimeError(f"judge endpoint {url} answered HTTP {e.code}: {e.read()[:500]!r}") from e
            except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
                if retry == self.max_transport_retries:
                    raise RuntimeError(f"judge endpoint {url} unreachable: {e}") from e
            except (KeyError, IndexError, TypeError, ValueError):
                return ""  # a malformed body is a garbage verdict: the caller's bounded retry handles it
            time.sleep(min(self.retry_backoff * 2**retry, 30.0))
        raise AssertionError("unreachable")


@dataclass
class JudgeVerdict:
    """One judged question; `prediction` is what was judged (None when the model gave no answer)."""

    question_id: str
    prediction: str | None
    pred: str
    score: int
    valid: bool
    attempts: int
    judge: str
    reply: str


def _judge_one(judge: Judge, sample: QASample, prediction: str, max_attempts: int) -> JudgeVerdict:
    messages = judge_messages(sample.question, sample.answer, prediction)
    reply = ""
    for attempt in range(max_attempts):
        reply = judge.complete(messages, attempt)
        parsed = parse_judge_reply(reply)
        if parsed is not None:
            return JudgeVerdict(sample.question_id, prediction, *parsed, True, attempt + 1, judge.name, reply)
    return JudgeVerdict(sample.question_id, prediction, "no", 0, False, max_attempts, judge.name, reply)


def score_qa(
    samples: Sequence[QASample],
    predictions: Mapping[str, str],
    judge: Judge | None = None,
    *,
    max_attempts: int = 3,
    verdicts_path: str | Path | None = None,
    progress: bool = False,
) -> tuple[dict[str, float | int | str], list[JudgeVerdict]]:
    """Exact match, and with a `judge` the Video-ChatGPT accuracy and score, over all `samples`.

    A question without a prediction is "no", 0 (and not sent to the judge). Verdicts are appended to
    `verdicts_path` (JSONL) as they come; a verdict found there from the same judge on the same prediction
    is reused, so an interrupted judging run resumes (and a new model run in the same folder is re-judged).
    """
    if not samples:
        raise ValueError("no QA samples to score")
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
    report: dict[str, float | int | str] = {
        "exact_match": 100
        * sum(exact_match(predictions.get(s.question_id, ""), s.answer) for s in samples)
        / len(samples),
        "num_questions": len(samples),
        "missing": sum(s.question_id not in predictions for s in samples),
    }
    if judge is None:
        return report, []
    done = {}
    if verdicts_path is not None:
        done = {r["question_id"]: JudgeVerdict(**r) for r in read_jsonl(verdicts_path) if r.get("judge") == judge.name}
    verdicts = []
    for sample in tqdm(samples, desc=f"judging ({judge.name})", disable=not progress):
        prediction = predictions.get(sample.question_id)
        verdict = done.get(sample.question_id)
        if verdict is None or verdict.prediction != prediction:
            if prediction is not None:
                verdict = _judge_one(judge, sample, prediction, max_attempts)
            else:
                verdict = JudgeVerdict(sample.question_id, None, "no", 0, False, 0, judge.name, "")
            if verdicts_path is not None:
                append_jsonl(verdicts_path, asdict(verdict))
        verdicts.append(verdict)
    yes = sum(v.pred == "yes" for v in verdicts)
    report.update(
        {
            "accuracy": 100 * yes / len(verdicts),
            "score": sum(v.score for v in verdicts) / len(verdicts),
            "yes": yes,
            "no": len(verdicts) - yes,
            "invalid_verdicts": sum(not v.valid and v.attempts > 0 for v in verdicts),
            "judge": judge.name,
        }
    )
    return report, verdicts
