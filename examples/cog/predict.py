"""A Cog predictor, unchanged from what `cog build` would take: counts the words of a text and scores it with
a tiny lexicon (its "weights", loaded in setup from WEIGHTS)."""

import json
import os

from cog import BasePredictor


class Predictor(BasePredictor):
    """Text statistics and a lexicon score."""

    def setup(self) -> None:
        """Load the lexicon."""
        print("loading the lexicon", flush=True)
        with open(os.environ.get("WEIGHTS", "/src/lexicon.json")) as f:
            self.lexicon = json.load(f)

    def predict(self, text: str) -> dict:
        """Words, characters, and the sum of the lexicon's scores of the words."""
        words = text.split()
        if not words:
            raise ValueError("text has no words")
        score = sum(self.lexicon.get(word.lower().strip(".,!?"), 0) for word in words)
        return {"words": len(words), "characters": len(text), "score": score}
