"""The caption metrics of the COCO/ActivityNet evaluators, from `pycocoevalcap` itself.

PTB tokenisation and METEOR 1.5 are Java programs shipped in `pycocoevalcap`; CIDEr is its Python
scorer. `CaptionScorer` starts the METEOR JVM once and keeps it for the whole run: starting it loads a
large paraphrase table (seconds), so a JVM per video would dominate scoring time
(`benchmarks/bench_eval.py` measures the difference). nltk's METEOR is a different metric and is not used.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence

__all__ = ["CaptionScorer", "JavaNotFoundError", "remove_nonascii", "require_java"]

_INSTALL_HINT = (
    "the caption metrics (PTB tokenizer, METEOR 1.5) are Java programs shipped in pycocoevalcap, and no `java` "
    "is on PATH. Install a Java runtime, e.g. `apt-get install openjdk-17-jre-headless` (Debian/Ubuntu), "
    "`conda install -c conda-forge openjdk`, or `brew install openjdk`."
)


class JavaNotFoundError(RuntimeError):
    """Raised before any scoring starts when no Java runtime is available."""


def require_java() -> str:
    """The path of `java`, or a `JavaNotFoundError` that says how to install it."""
    java = shutil.which("java")
    if java is None:
        raise JavaNotFoundError(_INSTALL_HINT)
    return java


def remove_nonascii(text: str) -> str:
    """densevid_eval's cleaning: every non-ASCII character becomes a space before tokenisation."""
    return "".join(c if ord(c) < 128 else " " for c in text)


def _import_pycocoevalcap():
    try:
        from pycocoevalcap.cider.cider import Cider
        from pycocoevalcap.meteor.meteor import Meteor
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
    except ImportError:
        raise ImportError("caption metrics need pycocoevalcap: `pip install 'pite[eval]'`") from None
    return PTBTokenizer, Meteor, Cider


class CaptionScorer:
    """PTB tokenizer + METEOR 1.5 (one JVM, started lazily, reused) + CIDEr, as a context manager.

    Inputs to `meteor`/`cider` are already tokenised strings; each pair is one hypothesis with its references.
    """

    def __init__(self):
        require_java()
        self._ptb_cls, self._meteor_cls, self._cider_cls = _import_pycocoevalcap()
        self._meteor = None
        self.meteor_starts = 0

    def tokenize(self, sentences: Sequence[str]) -> list[str]:
        """PTB-tokenise, lower-case and strip punctuation, in one Java call for all `sentences`."""
        if not sentences:
            return []
        captions = {i: [{"caption": remove_nonascii(s)}] for i, s in enumerate(sentences)}
        tokenized = self._ptb_cls().tokenize(captions)
        return [tokenized[i][0] for i in range(len(sentences))]

    def _meteor_process(self):
        if self._meteor is None:
            self._meteor = self._meteor_cls()
            self.meteor_starts += 1
        return self._meteor

    def meteor(self, hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> tuple[float, list[float]]:
        """METEOR 1.5 over the pairs: (the jar's aggregate score, the per-pair scores), as pycocoevalcap returns them."""
        gts = {i: list(refs) for i, refs in enumerate(references)}
        res = {i: [hyp] for i, hyp in enumerate(hypotheses)}
        meteor = self._meteor_process()
        try:
            score, scores = meteor.compute_score(gts, res)
        except (ValueError, BrokenPipeError) as e:
            stderr = b""
            if meteor.meteor_p.poll() is not None:
                stderr = meteor.meteor_p.stderr.read()
            self._meteor = None
            raise RuntimeError(
                f"the METEOR jar failed ({e}); its stderr: {stderr.decode(errors='replace')[-2000:]}"
            ) from e
        return score, scores

    def cider(self, hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> float:
        """pycocoevalcap's CIDEr over the pairs (document frequencies from these references only)."""
        gts = {i: list(refs) for i, refs in enumerate(references)}
        res = {i: [hyp] for i, hyp in enumerate(hypotheses)}
        score, _ = self._cider_cls().compute_score(gts, res)
        return float(score)

    def close(self) -> None:
        """Stop the METEOR JVM (idempotent)."""
        if self._meteor is not None:
            process = self._meteor.meteor_p
            with self._meteor.lock:
                process.stdin.close()
                process.kill()
                process.wait()
            self._meteor = None

    def __enter__(self) -> CaptionScorer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
