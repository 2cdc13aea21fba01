"""What predict.py, simulate.py and demo.py share: the crispml command next to this Python, and
the served deployment over HTTP (clients send customer ids only; Feast supplies the features)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CRISPML = str(Path(sys.executable).with_name("crispml"))
NAME = "churn"


def crispml(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``crispml ARGS`` on this example's project, its output captured."""
    env = {**os.environ, "CRISPML_PROJECT": os.environ.get("CRISPML_PROJECT", str(HERE))}
    done = subprocess.run([CRISPML, *args], cwd=HERE, capture_output=True, text=True, env=env)
    if check and done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        sys.exit(f"crispml {' '.join(args)}: {lines[-1] if lines else f'exit {done.returncode}'}")
    return done


def deployment_url() -> str:
    """The URL of the ``churn`` deployment, or exit with what to run."""
    for row in json.loads(crispml("deployments", "--json").stdout):
        if row["name"] == NAME and row["status"] == "up":
            return str(row["url"])
    sys.exit(f"no deployment named {NAME!r} is up: run `crispml run recipe.yaml` first")


def predict(url: str, customer_ids: list[int]) -> tuple[dict[str, Any], str]:
    """POST the ids to ``/predict``; the answer and the ``x-crispml-model`` header."""
    body = json.dumps({"records": [{"customer_id": int(c)} for c in customer_ids]}).encode()
    request = urllib.request.Request(f"{url}/predict", data=body, headers={"content-type": "application/json"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never a proxy
    with opener.open(request, timeout=60) as response:
        return json.load(response), str(response.headers["x-crispml-model"])
