#!/bin/sh
# Write $DAGSTER_HOME/dagster.yaml from the template, filling in the deployment's names
# ($ADP_DATA_VOLUME, $ADP_NETWORK, ...) that parts of the run launcher's config cannot read
# from the environment themselves; then run the container's command.
set -eu
python3 - <<'PY'
import os
import re
import sys

template = open("/opt/dagster/dagster.yaml.template").read()
missing = sorted({name for name in re.findall(r"\$\{(\w+)\}", template) if not os.environ.get(name)})
if missing:
    sys.exit(f"dagster entrypoint: set {', '.join(missing)}")
open(os.path.join(os.environ["DAGSTER_HOME"], "dagster.yaml"), "w").write(os.path.expandvars(template))
PY
# The folder the sensor watches, ready for `docker compose cp FILE dagster-code:/data/inbox/`.
mkdir -p "${TASKS_DIR:-/data/inbox}"
exec "$@"
