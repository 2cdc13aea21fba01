"""A runner that runs every stage in a process of its own (``crispml run-stage RUN STAGE``) and
retries a stage that fails: the shape of a distributed runner (Prefect tasks), without one.

Named in a recipe as ``plugins: [subprocess_runner]`` and ``runner: {use: subprocess_runner}``;
the folder holding this file must be on ``PYTHONPATH`` for the stage processes too.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import crispml

CRISPML = str(Path(sys.executable).with_name("crispml"))


class SubprocessOptions(crispml.Options):
    retries: int = 2
    """How many times a failed stage is run again."""


@crispml.hookimpl
def crispml_declare() -> crispml.Declaration:
    return crispml.Declaration(runner=SubprocessOptions, description="Each stage in its own process, retried.")


@crispml.hookimpl
def crispml_execute(plan: Any, options: SubprocessOptions) -> str:
    env = {**os.environ, "CRISPML_PROJECT": str(plan.context.project_dir)}
    for name in plan.stage_names:
        for _ in range(1 + options.retries):
            proc = subprocess.run(
                [CRISPML, "run-stage", plan.context.run_id, name],
                env=env,
                stdout=subprocess.PIPE,
                text=True,
                timeout=300,
            )
            if proc.returncode != 1:  # 1: the stage failed (recorded): try it again
                break
        if proc.returncode == 1:
            break  # out of retries: the stages left end skipped, as under the local runner
        if proc.returncode not in (0, 3):
            raise RuntimeError(f"crispml run-stage {name} exited {proc.returncode}")
        assert proc.stdout.split()[-1] in ("succeeded", "cached", "rejected", "skipped"), proc.stdout
    return str(plan.finish())
