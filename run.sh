#!/usr/bin/env bash
# Set up everything, then run the main job: index photos and show what is most similar to a few queries.
#   ./run.sh              generated samples (from photos that dependencies ship)
#   ./run.sh PHOTOS_DIR   your own folder
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup-env.sh
exec .venv/bin/lookalike demo "$@"
