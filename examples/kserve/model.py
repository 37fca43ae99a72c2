"""A KServe model on KServe's own ModelServer, speaking the Open Inference Protocol (V2): iris species from four
measurements, by the nearest class centroid (its "weights", loaded from WEIGHTS)."""

import json
import os

import kserve
import numpy as np
from kserve import InferOutput, InferRequest, InferResponse


class Iris(kserve.Model):
    """Nearest-centroid iris classifier."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.load()

    def load(self) -> bool:
        """Load the centroids."""
        print("loading the centroids", flush=True)
        with open(os.environ.get("WEIGHTS", "/app/centroids.json")) as f:
            found = json.load(f)
        self.labels = list(found)
        self.centroids = np.array([found[label] for label in self.labels])
        self.ready = True
        return True

    def predict(self, payload: InferRequest, headers: dict[str, str] | None = None) -> InferResponse:
        """The species of each row of the first input (FP32, shape [N, 4])."""
        rows = payload.inputs[0].as_numpy().astype(float)
        if rows.ndim != 2 or rows.shape[1] != 4:
            raise ValueError(f"expected rows of 4 measurements, got shape {list(rows.shape)}")
        distances = ((rows[:, None, :] - self.centroids[None]) ** 2).sum(-1)
        species = [self.labels[i] for i in distances.argmin(axis=1)]
        output = InferOutput(name="species", shape=[len(species)], datatype="BYTES", data=species)
        return InferResponse(response_id=payload.id or "", model_name=self.name, infer_outputs=[output])


if __name__ == "__main__":
    model = Iris(os.environ.get("MODEL_NAME", "iris"))
    kserve.ModelServer(http_port=int(os.environ.get("PORT", "8080")), enable_grpc=False).start([model])
