#!/usr/bin/env bash
# Way 3, Prefect-scheduled flows: an ML engineer keeping the model fresh. From the folder
# `cli.sh` made (my-churn/):
#     bash ../schedule.sh          # PREFECT_PORT=4300 PORT=3100 bash ../schedule.sh
# Starts the project's Prefect server, schedules a weekly retrain, runs it once now and waits,
# then stops the server (the schedule stays recorded: `crispml server start` brings it back).
# The scheduled runs land in the same run store (crispml runs), linked to their flow runs.
set -euo pipefail
PORT="${PORT:-3000}"

crispml server start --port "${PREFECT_PORT:-4200}"      # Prefect's API and UI on 127.0.0.1
trap 'crispml server stop' EXIT
crispml schedule recipe.yaml --cron "0 3 * * 1" --set deploy.port="$PORT" --replace   # Mondays 03:00
crispml schedules                                        # name, schedule, next and last runs
crispml schedules run retrain-on-drift --wait 900        # one flow run now; waits for it to end
crispml runs --limit 1                                   # the flow run's crispml run
