"""``serverless-model build``: build the models' images locally, showing the build's progress; never pulls. With
``SM_ENGINES`` (every swarm node's engine), each model's image is then copied onto every node that lacks it,
keeping its ID (``docker save | docker load``), so the swarm backend can name it by ID and nothing is pulled."""

import contextlib
from pathlib import Path
from typing import Any

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
        run = model.runtime
        if run.image and run.build and run.image not in built and (not only or model.name in only):
            if not build_one(client, model, root / run.build):
                return 1
            built.add(run.image)
    engines = [url.strip() for url in settings.engines.split(",") if url.strip()]
    images = {m.runtime.image for m in models.values() if m.runtime.image and (not only or m.name in only)}
    return 0 if all(copy_image(client, image, engines) for image in sorted(images)) else 1


def copy_image(client: Any, image: str, engines: list[str]) -> bool:
    """Put ``image`` onto each engine that does not hold it by the same ID; whether every engine has it now."""
    import docker
    import docker.errors

    try:
        local = client.images.get(image)
    except docker.errors.ImageNotFound:
        if engines:
            print(f"image {image} is not here: build it (or pull it) before it can go to the nodes", flush=True)
        return not engines
    for url in engines:
        try:
            other = docker.DockerClient(base_url=url, timeout=600)
            with contextlib.suppress(docker.errors.ImageNotFound):
                if other.images.get(image).id == local.id:
                    print(f"  {url} has {image}", flush=True)
                    continue
            print(f"  copying {image} to {url}", flush=True)
            for answer in other.api.load_image(local.save(chunk_size=1024 * 1024, named=image), quiet=True):
                if "error" in answer or "errorDetail" in answer:  # the engine answers 200 and says it here
                    print(f"cannot copy {image} to {url}: {answer.get('error') or answer['errorDetail']}", flush=True)
                    return False
            if other.images.get(image).id != local.id:
                print(f"{url} holds another {image} after the copy", flush=True)
                return False
        except docker.errors.DockerException as exc:
            print(f"cannot copy {image} to {url}: {exc}", flush=True)
            return False
    return True


def build_one(client: object, model: ModelConfig, context: Path) -> bool:
    """Build one image from ``context``; whether it worked."""
    print(f"building {model.runtime.image} from {context}/", flush=True)
    for chunk in client.api.build(path=str(context), tag=model.runtime.image, network_mode="host",  # type: ignore[attr-defined]
                                  pull=False, rm=True, decode=True):
        if "error" in chunk:
            print(f"build of {model.runtime.image} failed: {chunk['error']}", flush=True)
            return False
        line = chunk.get("stream", "").rstrip()
        if line.startswith("Step ") or line.startswith("Successfully"):
            print(f"  {line}", flush=True)
    return True
