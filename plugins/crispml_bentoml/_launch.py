"""The first seconds of a backend process: ``python -m crispml_bentoml._launch [RELEASE HOST PORT]``.

Runs in the background process crispml starts (its own session and process group, with
``BENTOML_HOME`` pointing into the project). It imports the release's model folder into
BentoML's model store (once per tag, under a lock: two deployments of one version may start at
once), then runs ``bentoml serve`` in the same interpreter — same pid, same process group, so
stopping the group stops BentoML's workers too. Doing the import here, in a process whose
``BENTOML_HOME`` is set before BentoML is imported, keeps BentoML out of the crispml process.

**Warm start.** Started with no arguments, the launcher first imports what ``bentoml serve``
and the release's ``service.py`` need (BentoML, its server, NumPy, pydantic), then waits for
one line ``RELEASE HOST PORT`` on its standard input. A first deploy starts it *before* the
registry resolves the model (``_process.WarmLauncher``): the imports overlap the registry's
(MLflow's import is most of a resolve), which is what stood between a deploy and its first
answer (docs/performance.md). An empty standard input (the deploy failed before it had a
release) ends it quietly. Until the line comes its output goes nowhere; then to the release's
``server.log``, like a launcher started with arguments.

Either way the deploy keeps its pipe to the launcher's input until the smoke gate has passed
(``_tether``): a deploy killed before that takes its backend with it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
from pathlib import Path

from crispml_bentoml import _tether


def import_model(release: Path) -> str:
    spec = json.loads((release / "spec.json").read_text())
    tag = spec["bento_tag"]
    home = Path(os.environ["BENTOML_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    import bentoml
    from bentoml.exceptions import NotFound

    from crispml import file_lock

    with file_lock(home / ".crispml-import.lock"):
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


def warm_up() -> None:
    """Import what serving will: each import is a module the arbiter would load anyway, so a
    failure here is only a missed head start (the real import reports it in ``server.log``)."""
    for module in (
        "bentoml",
        "bentoml_cli.cli",
        "bentoml_cli.serve",
        "_bentoml_impl.server.serving",
        "numpy",
        "pydantic",
        "anyio.to_thread",
    ):
        with contextlib.suppress(Exception):
            __import__(module)


def serve(release: Path, host: str, port: str) -> None:
    """``bentoml serve service:Predictor`` for ``release``, in this interpreter (what a
    ``python -m bentoml serve …`` would do, without a second interpreter's start-up)."""
    tag = import_model(release)
    print(f"crispml: model {tag} is in the BentoML store; starting bentoml serve", flush=True)
    os.chdir(release)
    from bentoml_cli.cli import cli

    args = ["serve", "service:Predictor", "--working-dir", str(release), "--host", host, "--port", port]
    sys.argv = ["bentoml", *args]
    cli.main(args=args, prog_name="bentoml")


def main(argv: list[str]) -> None:
    if argv:
        release, host, port = Path(argv[0]).resolve(), argv[1], argv[2]
    else:
        warm_up()
        line = sys.stdin.buffer.readline().decode().split()
        if len(line) != 3:
            return  # the deploy ended before it had a release for this process
        release, host, port = Path(line[0]).resolve(), line[1], line[2]
        log = os.open(release / "server.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
    _tether.watch(folder=release)  # until the deploy keeps this server, it dies with the deploy
    serve(release, host, port)


if __name__ == "__main__":
    main(sys.argv[1:])
