#!/usr/bin/env bash
# Way 1, the command line: a data scientist on a laptop. From an empty folder:
#     bash cli.sh                  # PORT=3100 bash cli.sh serves on another port
# Copies a ready-made recipe (served, monitored churn model), runs it end to end, then looks around.
set -euo pipefail
PORT="${PORT:-3000}"

crispml init retrain-on-drift my-churn                # recipe.yaml + data/ + make_data.py
cd my-churn
crispml check recipe.yaml                              # fields, plugins, options, gates: nothing runs
crispml run recipe.yaml --set deploy.port="$PORT"      # load, train, evaluate (gate), register, deploy, monitor
crispml runs                                           # every run, newest first
run_id="$(crispml runs --json --limit 1 | python -c 'import json, sys; print(json.load(sys.stdin)[0]["run_id"])')"
crispml show "$run_id"                                 # its manifest: recipe, versions, git, data, stages
crispml models                                         # registered versions and the champion
crispml deploy churn-watched@champion --port "$PORT"   # serve the champion (again), behind the smoke gate
crispml deployments                                    # what is serving, from which version
crispml monitor recipe.yaml                            # drift of the served traffic (too little yet: exit 0)
