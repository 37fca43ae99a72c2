"""``serverless-model build``: build the models' images locally, showing the build's progress; never pulls."""

from pathlib import Path

from workers.config import ModelConfig, Settings


def build_images(settings: Settings, only: list[str] | None = None) -> int:
    """Build the image of every model (of ``only``, if given) that declares ``image`` and ``build`` (a folder with a
    Dockerfile, relative to the models file). Each image once. The exit status."""
    import docker

    models = settings.load_models()
    if unknown := sorted(set(only or ()) - set(models)):
        print(f"no model named {', '.join(unknown)} in {settings.models_file}", flush=True)
        return 1
    client = docker.from_env()
    root = settings.models_file.resolve().parent
    built: set[str] = set()
    for model in models.values():
        if model.image and model.build and model.image not in built and (not only or model.name in only):
            if not build_one(client, model, root / model.build):
                return 1
            built.add(model.image)
    return 0


def build_one(client: object, model: ModelConfig, context: Path) -> bool:
    """Build one image from ``context``; whether it worked."""
    print(f"building {model.image} from {context}/", flush=True)
    for chunk in client.api.build(path=str(context), tag=model.image, network_mode="host",  # type: ignore[attr-defined]
                                  pull=False, rm=True, decode=True):
        if "error" in chunk:
            print(f"build of {model.image} failed: {chunk['error']}", flush=True)
            return False
        line = chunk.get("stream", "").rstrip()
        if line.startswith("Step ") or line.startswith("Successfully"):
            print(f"  {line}", flush=True)
    return True
