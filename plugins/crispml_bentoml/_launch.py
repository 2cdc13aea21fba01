"""The first seconds of a backend process: ``python -m crispml_bentoml._launch RELEASE HOST PORT``.

Runs in the background process crispml starts (its own session and process group, with
``BENTOML_HOME`` pointing into the project). It imports the release's model folder into
BentoML's model store (once per tag, under a lock: two deployments of one version may start at
once), then replaces itself with ``bentoml serve`` — same pid, same process group, so stopping
the group stops BentoML's workers too. Doing the import here, in a process whose
``BENTOML_HOME`` is set before BentoML is imported, keeps BentoML out of the crispml process.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import sys
from pathlib import Path


def import_model(release: Path) -> str:
    spec = json.loads((release / "spec.json").read_text())
    tag = spec["bento_tag"]
    home = Path(os.environ["BENTOML_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    import bentoml
    from bentoml.exceptions import NotFound

    with open(home / ".crispml-import.lock", "a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            bentoml.models.get(tag)
            return tag
        except NotFound:
            pass
        model = spec["model"]
        labels = {
            "crispml.deployment": spec["deployment"],
            "crispml.model": str(model["name"]),
            "crispml.version": str(model["version"]),
        }
        metadata = {k: v for k, v in model.items() if v is not None}
        model_dir = spec.get("model_dir", "model")
        with bentoml.models.create(tag, labels=labels, metadata=metadata) as stored:
            shutil.copytree(release / model_dir, stored.path_of(model_dir))
        return tag


def main(argv: list[str]) -> None:
    release, host, port = Path(argv[0]).resolve(), argv[1], argv[2]
    tag = import_model(release)
    print(f"crispml: model {tag} is in the BentoML store; starting bentoml serve", flush=True)
    command = [
        sys.executable,
        "-m",
        "bentoml",
        "serve",
        "service:Predictor",
        "--working-dir",
        str(release),
        "--host",
        host,
        "--port",
        port,
    ]
    os.chdir(release)
    os.execv(sys.executable, command)


if __name__ == "__main__":
    main(sys.argv[1:])
