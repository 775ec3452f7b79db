#!/usr/bin/env bash
# The Prefect tests again, on the oldest Prefect that pyproject.toml allows (the main
# run has the newest). A venv over the main environment (--system-site-packages: the
# project and every other dependency as installed) with only Prefect pinned down.
# The tests that lean on Prefect's engine, runtime, logging, server and API; left out
# to keep it short: the throughput tests, the examples and the Globus transfer step,
# which exercise funcx-flows or Globus more than Prefect.
set -euo pipefail
cd "$(dirname "$0")/.."
oldest=$(python - <<'PY'
import tomllib
from packaging.requirements import Requirement
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
prefect = next(Requirement(d) for d in deps if Requirement(d).name == "prefect")
print(next(s.version for s in prefect.specifier if s.operator == ">="))
PY
)
venv=$(mktemp -d)/prefect-oldest
trap 'rm -rf "$(dirname "$venv")"' EXIT
python -m venv --system-site-packages "$venv"
"$venv/bin/python" -m pip install -q "prefect==$oldest"
"$venv/bin/python" -c "import prefect; print('prefect', prefect.__version__)"
"$venv/bin/python" -m pytest -q -p no:cacheprovider \
    tests/integration/prefect/test_local_parity.py \
    tests/integration/prefect/test_interruption.py \
    tests/integration/prefect/test_remote_tasks.py \
    tests/integration/prefect/test_server.py \
    tests/integration/prefect/test_trigger_targets.py \
    tests/unit/endpoint/test_callcontext.py \
    -k "not remote_map_returns_in_order and not holds_many_without_a_thread"
