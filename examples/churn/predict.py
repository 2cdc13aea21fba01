"""Ask the served churn model about a few customers, by id only, and show what it used.

    python predict.py                 # customers 1, 2, 3, 42 and 1337
    python predict.py 7 99            # these customers

The client sends ``{"records": [{"customer_id": 7}]}``: the deployment fetches the customer's
features from Feast's online store, predicts, and logs the features it used beside the keys
(read back here with ``crispml predictions churn --tail 1``).
"""

from __future__ import annotations

import json
import sys

from _client import crispml, deployment_url, predict

DEFAULT = [1, 2, 3, 42, 1337]


def main(customer_ids: list[int]) -> None:
    url = deployment_url()
    answer, served_by = predict(url, customer_ids)
    logged = json.loads(crispml("predictions", "churn", "--tail", "1").stdout.strip().splitlines()[-1])
    model = answer["model"]
    print(f"POST {url}/predict  {len(customer_ids)} customers (ids only) → x-crispml-model: {served_by}")
    print(f"  model {model['name']}/{model['version']}, trained in crispml run {model['crispml_run_id']}")
    features = logged.get("features") or [{} for _ in customer_ids]
    names = list(features[0])
    print(f"  features from Feast: {', '.join(names)}")
    for cid, label, proba, row in zip(
        customer_ids, answer["predictions"], answer["probabilities"], features, strict=True
    ):
        shown = ", ".join(f"{k}={row[k]}" for k in ("contract", "monthly_charges", "support_calls_30d"))
        print(f"  customer {cid:>5}: churn={label}  p(churn)={proba['1']:.2f}  ({shown}, …)")


if __name__ == "__main__":
    main([int(arg) for arg in sys.argv[1:]] or DEFAULT)
