"""``serverless-model build``: build the model images locally, showing the build's progress."""

from pathlib import Path

from workers.config import Settings


def build_images(settings: Settings, context: Path) -> int:
    """Build the image of every model that declares one from ``context``; never pulls. Exit status."""
    import docker

    client = docker.from_env()
    for model in settings.load_models().values():
        if not model.image:
            continue
        print(f"building {model.image} from {context}/", flush=True)
        for chunk in client.api.build(path=str(context), tag=model.image, network_mode="host", pull=False,
                                      rm=True, decode=True):
            if "error" in chunk:
                print(f"build of {model.image} failed: {chunk['error']}", flush=True)
                return 1
            line = chunk.get("stream", "").rstrip()
            if line.startswith("Step ") or line.startswith("Successfully"):
                print(f"  {line}", flush=True)
    return 0
