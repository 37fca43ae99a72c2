"""The model a model author edits: ``setup()`` runs once, ``predict(payload)`` runs per request.

The example is a real scikit-learn classifier of iris flowers, trained on the iris data set that
scikit-learn ships, so nothing is downloaded at run time. The image build trains it ahead
(``python -m model.model``); a replica without the saved artifact trains it in ``setup()`` (~0.1 s).

Contract: ``predict`` takes the JSON request body and returns something JSON-serialisable. Raise
``ValueError`` for bad input (the caller gets a 422 with your message); any other exception is a
model failure (500).
"""

from pathlib import Path
from typing import Any

ARTIFACT = Path(__file__).with_name("iris.joblib")
N_FEATURES = 4


class Model:
    """Iris species from sepal and petal lengths and widths (cm)."""

    def setup(self) -> None:
        """Load the trained classifier, training it first if the image did not."""
        import joblib

        if not ARTIFACT.exists():
            train(ARTIFACT)
        self.classifier, self.labels = joblib.load(ARTIFACT)

    def predict(self, payload: Any) -> dict[str, Any]:
        """Classify ``{"features": [[sepal_len, sepal_wid, petal_len, petal_wid], ...]}``."""
        rows = parse_features(payload)
        probabilities = self.classifier.predict_proba(rows)
        best = probabilities.argmax(axis=1)
        return {
            "predictions": [self.labels[i] for i in best],
            "probabilities": [round(float(p[i]), 4) for p, i in zip(probabilities, best, strict=True)],
        }


def parse_features(payload: Any) -> list[list[float]]:
    """The feature rows of a request, or ValueError saying what is wrong."""
    rows = payload.get("features") if isinstance(payload, dict) else None
    if not isinstance(rows, list) or not rows:
        raise ValueError('expected {"features": [[4 numbers], ...]}')
    for row in rows:
        valid = isinstance(row, list) and len(row) == N_FEATURES
        if not valid or not all(isinstance(x, int | float) and not isinstance(x, bool) for x in row):
            raise ValueError(f"each feature row must be a list of {N_FEATURES} numbers, got {row!r}")
    return [[float(x) for x in row] for row in rows]


def train(path: Path) -> None:
    """Fit the classifier on the bundled iris data set and save it with its labels."""
    import joblib
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    iris = load_iris()
    classifier = LogisticRegression(max_iter=1000).fit(iris.data, iris.target)
    joblib.dump((classifier, [str(name) for name in iris.target_names]), path)


if __name__ == "__main__":
    train(ARTIFACT)
