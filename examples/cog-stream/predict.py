"""A streaming Cog predictor, unchanged from what `cog build` would take: says a text back a word at a time, as
a language model gives its tokens."""

import time
from collections.abc import Iterator

from cog import BasePredictor, streaming


class Predictor(BasePredictor):
    """Each word of the text, in order."""

    @streaming
    def predict(self, text: str, pause: float = 0.0) -> Iterator[str]:
        """The words of ``text``, ``pause`` seconds apart."""
        words = text.split()
        if not words:
            raise ValueError("text has no words")
        for i, word in enumerate(words):
            if i and pause > 0:
                time.sleep(pause)
            yield word
