import pytest

from processing.tokenizer import build_tokenizer

# Text the tiny test tokenizer is trained on: the chat template's words, temporal phrases and digits.
TOKENIZER_CORPUS = [
    "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
    "detailed, and polite answers to the user's questions. USER: ASSISTANT:",
    "the red circle moves to the left, from 12 to 40. From 05 to 37, a blue square appears.",
    "During which frames can we see a green triangle? What color is the shape? How many objects are there?",
    "0 1 2 3 4 5 6 7 8 9 yes no left right up down",
]


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return build_tokenizer(TOKENIZER_CORPUS, vocab_size=256)
