"""The smoke gate: a new server must predict the version's input example as the model does.

The reference answer comes from the model loaded in the deploying process from the release's
own files (:mod:`_flavors`), on the same frame the service builds from the same records. The
gate's requests go to the backend directly, marked with :data:`SMOKE_HEADER` so that they are
not logged as production traffic (the proxy drops that header from clients' requests).
"""

from __future__ import annotations

import http.client
import json
import math
import urllib.error
import urllib.request
from typing import Any

from crispml_bentoml import _flavors
from crispml_bentoml._release import Prepared

SMOKE_HEADER = "x-crispml-smoke"


def post_json(url: str, value: Any, headers: dict[str, str] | None = None, timeout: float = 30.0) -> tuple[int, Any]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(
        url,
        data=json.dumps(value).encode(),
        method="POST",
        headers={"content-type": "application/json", **(headers or {})},
    )
    try:
        with opener.open(request, timeout=timeout) as resp:
            return int(resp.status), json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        body = exc.read()
        try:
            return int(exc.code), json.loads(body)
        except ValueError:
            return int(exc.code), body.decode(errors="replace")


def smoke(url: str, prepared: Prepared) -> str | None:
    """``None`` when the server at ``url`` predicts the input example as the model does; else why not."""
    spec, example = prepared.spec, prepared.example
    reference = prepared.reference()
    if not example:
        return "the model version has no logged input example (a table): cannot smoke-test it"
    rows = example
    if prepared.resolver is not None:
        try:
            features, missing = prepared.resolver.fetch(example)
        except Exception as exc:
            return f"cannot fetch the example keys' features: {type(exc).__name__}: {exc}"[:500]
        if missing:
            return (
                f"online store has no features for {len(missing)} of {len(example)} example keys: "
                "run crispml materialize on the training recipe"
            )
        rows = [{**row, **feats} for row, feats in zip(example, features.to_dict(orient="records"), strict=True)]
    try:
        frame = _flavors.frame(rows, spec["columns"])
        expected = _flavors.jsonable(reference.predict(frame))
    except Exception as exc:
        return f"the registered model cannot predict its own input example: {type(exc).__name__}: {exc}"[:500]
    try:
        status, body = post_json(f"{url}/predict", {"records": example}, headers={SMOKE_HEADER: "1"})
    except (OSError, ValueError, http.client.HTTPException) as exc:  # died, hung, or answered garbage
        return f"smoke test: POST /predict with the input example failed: {type(exc).__name__}: {exc}"[:500]
    if status != 200 or not isinstance(body, dict):
        return f"smoke test: POST /predict with the input example answered {status}: {str(body)[:300]}"
    got = body.get("predictions")
    if not same(got, expected):
        return (
            f"smoke test: served predictions {str(got)[:200]} differ from the registered model's {str(expected)[:200]}"
        )
    if spec["classifier"]:
        proba = reference.predict_proba(frame)
        keys = [str(c) for c in _flavors.jsonable(reference.classes_)]
        want = [dict(zip(keys, map(float, row), strict=True)) for row in proba]
        served = body.get("probabilities")
        if (
            not isinstance(served, list)
            or len(served) != len(want)
            or not all(
                isinstance(s, dict) and s.keys() == w.keys() and all(math.isclose(s[k], w[k], abs_tol=1e-9) for k in w)
                for s, w in zip(served, want, strict=False)
            )
        ):
            return "smoke test: served probabilities differ from the registered model's"
    return None


def same(got: Any, expected: list[Any]) -> bool:
    if not isinstance(got, list) or len(got) != len(expected):
        return False
    for a, b in zip(got, expected, strict=True):
        if isinstance(a, float) or isinstance(b, float):
            if (
                not isinstance(a, int | float)
                or not isinstance(b, int | float)
                or not math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
            ):
                return False
        elif a != b:
            return False
    return True
