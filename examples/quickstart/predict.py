"""Send one prediction to the quickstart's deployment and show where the answer came from.

    python predict.py            # after `crispml run recipe.yaml` deployed the champion

The deployment is found with `crispml deployments --json`; the request is one customer from the
shipped data (the target column removed), as JSON records.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
CRISPML = str(Path(sys.executable).with_name("crispml"))


def deployment_url(name: str = "churn") -> str:
    listed = subprocess.run([CRISPML, "deployments", "--json"], cwd=HERE, capture_output=True, text=True, check=True)
    for row in json.loads(listed.stdout):
        if row["name"] == name and row["status"] == "up":
            return str(row["url"])
    sys.exit(f"no deployment named {name!r} is up: run `crispml run recipe.yaml` first")


def one_customer() -> dict[str, object]:
    with (HERE / "data" / "churn.csv").open() as fh:
        row = next(csv.DictReader(fh))
    row.pop("churned")
    numeric = {"tenure_months": int, "support_calls": int, "monthly_charges": float, "total_charges": float}
    return {k: numeric[k](v) if k in numeric else v for k, v in row.items()}


if __name__ == "__main__":
    url = deployment_url() + "/predict"
    body = json.dumps({"records": [one_customer()]}).encode()
    request = urllib.request.Request(url, data=body, headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        answer = json.load(response)
    model = answer["model"]
    print(f"POST {url}")
    print(f"  prediction: {answer['predictions'][0]}  probabilities: {answer.get('probabilities', [None])[0]}")
    print(
        f"  served by {model['name']}/{model['version']} (MLflow run {model.get('run_id')}), "
        f"trained in crispml run {model.get('crispml_run_id')} on data {str(model.get('data_fingerprint'))[:12]}…"
    )
