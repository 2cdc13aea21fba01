"""The serve process: ``python -m crispml_prefect._serve PROJECT`` (started by ``crispml schedule``).

Serves every schedule recorded in ``PROJECT/.crispml/prefect/schedules.json`` on the API named
there, with ``pause_on_shutdown=False`` so that stopping or restarting it leaves schedules as
they are. Scheduled runs keep Prefect's flow-run heartbeat (crash detection).
"""

from __future__ import annotations

import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    project = Path(argv[0]).resolve()
    from prefect import serve

    from crispml_prefect._schedules import deployment, read, served

    record = read(project)
    deployments = [deployment(project, name, entry) for name, entry in sorted(served(record).items())]
    if not deployments:
        return 0
    serve(*deployments, pause_on_shutdown=False, print_starting_message=False)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
