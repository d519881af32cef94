"""Noun phrases of a caption: the things whose trajectories get annotated.

PiTe took noun phrases from a constituency parse. Parsers need model data, so the default here is a
rule-based English chunker with a small closed-class lexicon (determiners, prepositions, pronouns,
auxiliaries, common verbs) and suffix heuristics; it needs nothing downloaded. `SpacyPhraseExtractor`
uses spaCy's `noun_chunks` when the user has an English pipeline installed.

Every extractor returns `NounPhrase(text, char_span)` with `caption[begin:end] == text`, the span the
training collator puts the trajectory on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

__all__ = ["NounPhrase", "PhraseExtractor", "RuleBasedPhraseExtractor", "SpacyPhraseExtractor"]


@dataclass(frozen=True)
class NounPhrase:
    text: str
    char_span: tuple[int, int]


class PhraseExtractor(Protocol):
    def __call__(self, caption: str) -> list[NounPhrase]: ...


_DETERMINERS = set(
    [
        "a",
        "an",
        "the",
        "this",
        "that",
        "these",
        "those",
        "his",
        "her",
        "its",
        "their",
        "my",
        "your",
        "our",
        "some",
        "any",
        "each",
        "every",
        "another",
        "both",
        "either",
        "neither",
        "several",
        "many",
        "few",
        "no",
        "one",
        "two",
        "three",
        "four",
        "five",
        "six",
        "seven",
        "eight",
        "nine",
        "ten",
    ]
)
_ADJECTIVES = set(
    [
        "red",
        "green",
        "blue",
        "yellow",
        "orange",
        "purple",
        "pink",
        "brown",
        "black",
        "white",
        "gray",
        "grey",
        "cyan",
        "magenta",
        "golden",
        "silver",
        "dark",
        "light",
        "bright",
        "small",
        "big",
        "large",
        "little",
        "tiny",
        "huge",
        "giant",
        "tall",
        "short",
        "long",
        "young",
        "old",
        "new",
        "wooden",
        "metal",
        "plastic",
        "round",
        "square",
        "striped",
        "spotted",
        "other",
        "same",
        "first",
        "second",
        "third",
        "last",
        "next",
        "left",
        "right",
        "top",
        "bottom",
        "front",
        "middle",
    ]
)
# Closed-class words and frequent verbs: a phrase never contains them.
_STOPWORDS = set(
    [
        "i",
        "you",
        "he",
        "she",
        "it",
        "we",
        "they",
        "me",
        "him",
        "us",
        "them",
        "who",
        "whom",
        "whose",
        "which",
        "what",
        "where",
        "when",
        "why",
        "how",
        "there",
        "here",
        "myself",
        "yourself",
        "himself",
        "herself",
        "itself",
        "ourselves",
        "themselves",
        "something",
        "someone",
        "somebody",
        "everything",
        "everyone",
        "nothing",
        "anything",
        "anyone",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "being",
        "am",
        "do",
        "does",
        "did",
        "done",
        "has",
        "have",
        "had",
        "having",
        "will",
        "would",
        "shall",
        "should",
        "can",
        "could",
        "may",
        "might",
        "must",
        "not",
        "n't",
        "no",
        "yes",
        "and",
        "or",
        "but",
        "nor",
        "so",
        "yet",
        "then",
        "than",
        "as",
        "if",
        "because",
        "while",
        "although",
        "though",
        "until",
        "unless",
        "since",
        "of",
        "in",
        "on",
        "at",
        "to",
        "from",
        "by",
        "with",
        "without",
        "into",
        "onto",
        "out",
        "over",
        "under",
        "above",
        "below",
        "behind",
        "beside",
        "besides",
        "between",
        "among",
        "through",
        "across",
        "along",
        "around",
        "about",
        "against",
        "toward",
        "towards",
        "up",
        "down",
        "off",
        "near",
        "past",
        "after",
        "before",
        "during",
        "inside",
        "outside",
        "upon",
        "within",
        "via",
        "like",
        "very",
        "too",
        "also",
        "just",
        "only",
        "again",
        "still",
        "even",
        "quite",
        "really",
        "almost",
        "already",
        "ever",
        "never",
        "always",
        "often",
        "soon",
        "away",
        "back",
        "together",
        "slowly",
        "quickly",
        "fast",
        "now",
        "later",
        "once",
    ]
)
_VERBS = set(
    [
        "move",
        "go",
        "come",
        "walk",
        "run",
        "ride",
        "jump",
        "turn",
        "roll",
        "slide",
        "fall",
        "rise",
        "fly",
        "swim",
        "drive",
        "sit",
        "stand",
        "lie",
        "hold",
        "carry",
        "put",
        "take",
        "give",
        "get",
        "make",
        "play",
        "throw",
        "catch",
        "kick",
        "hit",
        "push",
        "pull",
        "open",
        "close",
        "cut",
        "cook",
        "eat",
        "drink",
        "talk",
        "speak",
        "say",
        "tell",
        "look",
        "see",
        "watch",
        "show",
        "appear",
        "disappear",
        "enter",
        "leave",
        "exit",
        "cross",
        "pass",
        "follow",
        "chase",
        "bounce",
        "spin",
        "rotate",
        "shake",
        "wave",
        "dance",
        "sing",
        "climb",
        "lift",
        "drop",
        "pick",
        "place",
        "pour",
        "wash",
        "clean",
        "paint",
        "draw",
        "write",
        "read",
        "use",
        "try",
        "start",
        "stop",
        "begin",
        "end",
        "continue",
        "keep",
        "let",
        "help",
        "want",
        "need",
        "grow",
        "shrink",
        "change",
        "stay",
        "remain",
        "reach",
        "touch",
        "meet",
        "hug",
        "kiss",
        "smile",
        "laugh",
        "cry",
        "point",
        "hand",
        "bring",
        "send",
        "set",
        "build",
        "break",
        "fix",
        "work",
        "wear",
        "paddle",
        "surf",
        "skate",
        "ski",
        "swing",
        "step",
        "lean",
        "bend",
        "stretch",
        "brush",
        "comb",
        "dry",
        "mix",
        "stir",
        "fill",
        "empty",
        "shoot",
        "score",
        "serve",
        "flip",
        "dive",
        "land",
        "hang",
        "float",
        "sink",
        "spread",
        "race",
        "overtake",
        "stop",
        "collide",
        "hide",
        "emerge",
        "approach",
        "circle",
        "zoom",
        "pan",
    ]
)
# Heads that name places in the frame or the video itself, not objects with a trajectory.
_UNGROUNDABLE_HEADS = set(
    [
        "left",
        "right",
        "top",
        "bottom",
        "middle",
        "center",
        "centre",
        "side",
        "front",
        "back",
        "end",
        "beginning",
        "time",
        "way",
        "frame",
        "frames",
        "scene",
        "video",
        "clip",
        "screen",
        "camera",
        "shot",
        "view",
        "moment",
        "rest",
        "lot",
        "kind",
        "sort",
        "part",
    ]
)
_WORD = re.compile(r"[A-Za-z0-9]+(?:['\-][A-Za-z0-9]+)*")


def _verb_base(word: str) -> str | None:
    """The verb lemma of an inflected form in `_VERBS` (moves, moving, moved, runs, ran is not handled)."""
    if word in _VERBS:
        return word
    for suffix, replacements in (
        ("ies", ("y",)),
        ("es", ("", "e")),
        ("s", ("",)),
        ("ing", ("", "e")),
        ("ed", ("", "e")),
    ):
        if word.endswith(suffix):
            stem = word[: -len(suffix)]
            for replacement in replacements:
                if stem + replacement in _VERBS:
                    return stem + replacement
            if len(stem) > 2 and stem[-1] == stem[-2] and stem[:-1] in _VERBS:  # running, stopped
                return stem[:-1]
    return None


class RuleBasedPhraseExtractor:
    """Determiner? (adjective | noun)* noun chunks, cut at closed-class words and verbs.

    Heuristics: a word of the verb lexicon (any inflection) ends a phrase once it has a noun ("the
    circle moves", "a man riding a bike") or when no phrase is open, and is a modifier or noun after a
    determiner or adjective ("a running dog", "the red circle"). Phrases whose head names a place in
    the frame ("the left") are dropped.
    """

    @staticmethod
    def _is_verb(word: str, current: list, has_noun: bool) -> bool:
        """A verb-lexicon word is a verb unless it follows a determiner/adjective with no noun yet
        ("the red circle", "a running dog"); an inflected one after an adjective is a verb too, as
        adjectives of the lexicon double as nouns ("the green square moves")."""
        if not current or has_noun:
            return True
        inflected = _verb_base(word) != word
        return inflected and any(t[1] not in _DETERMINERS for t in current)

    def __call__(self, caption: str) -> list[NounPhrase]:
        tokens = [(m.group(0), m.group(0).lower(), m.start(), m.end()) for m in _WORD.finditer(caption)]
        phrases: list[NounPhrase] = []
        current: list[tuple[str, str, int, int]] = []

        def flush():
            # trailing determiners/adjectives are not a noun: trim back to the last noun-like word
            while current and (current[-1][1] in _DETERMINERS or current[-1][1] in _STOPWORDS):
                current.pop()
            words = [t for t in current if t[1] not in _DETERMINERS]
            if words and words[-1][1] not in _UNGROUNDABLE_HEADS and not words[-1][1].isdigit():
                begin, end = current[0][2], current[-1][3]
                phrases.append(NounPhrase(caption[begin:end], (begin, end)))
            current.clear()

        for index, token in enumerate(tokens):
            word = token[1]
            has_noun = any(t[1] not in _DETERMINERS and t[1] not in _ADJECTIVES for t in current)
            previous_end = tokens[index - 1][3] if index else 0
            if current and re.search(r"[,.;:!?()\"]", caption[previous_end : token[2]]):
                flush()  # punctuation between words ends a phrase
            if word in _DETERMINERS:
                if current and (has_noun or current[-1][1] not in _DETERMINERS):
                    flush()
                current.append(token)
            elif (
                word in _STOPWORDS
                or _verb_base(word) is not None
                and word not in _ADJECTIVES
                and self._is_verb(word, current, has_noun)
            ):
                flush()
            else:
                current.append(token)
        flush()
        return phrases


class SpacyPhraseExtractor:
    """spaCy's `noun_chunks` from an installed English pipeline (e.g. `en_core_web_sm`); pronouns dropped."""

    def __init__(self, model: str = "en_core_web_sm"):
        try:
            import spacy
        except ImportError as error:
            raise ImportError(
                "the 'spacy' phrase backend needs spaCy and an English pipeline: pip install spacy, then install "
                f"the '{model}' package; or use the default 'rule' backend"
            ) from error
        try:
            self.nlp = spacy.load(model)
        except OSError as error:
            raise OSError(
                f"spaCy pipeline '{model}' is not installed (spaCy models are not on PyPI: install the wheel from "
                "the spaCy models release page, or pass a local pipeline directory)"
            ) from error

    def __call__(self, caption: str) -> list[NounPhrase]:
        phrases = []
        for chunk in self.nlp(caption).noun_chunks:
            if chunk.root.pos_ == "PRON":
                continue
            begin, end = chunk.start_char, chunk.end_char
            phrases.append(NounPhrase(caption[begin:end], (begin, end)))
        return phrases
