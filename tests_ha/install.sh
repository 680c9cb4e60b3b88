#!/usr/bin/env bash
# Installs the Home Assistant of tests_ha/requirements.txt into .venv-ha (Python 3.13), with the
# release's own package constraints, and Debian's ffmpeg for its audio conversions.
#
# Home Assistant 2026.2.3 asks for Python >= 3.13.2; these machines have 3.13.0 (pyenv), on which
# it runs: hence --ignore-requires-python. HA_PYTHON overrides the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
version="$(sed -n 's/^homeassistant==//p' tests_ha/requirements.txt)"
python="${HA_PYTHON:-}"
if [ -z "${python}" ]; then
    if command -v pyenv > /dev/null && pyenv prefix 3.13.0 > /dev/null 2>&1; then
        python="$(pyenv prefix 3.13.0)/bin/python"
    else
        python="$(command -v python3.13)"
    fi
fi
[ -x .venv-ha/bin/python ] || "${python}" -m venv .venv-ha
mkdir -p .venv-ha/wheels
.venv-ha/bin/pip download --quiet --no-deps --ignore-requires-python \
    --dest .venv-ha/wheels "homeassistant==${version}"
wheel="$(ls .venv-ha/wheels/homeassistant-"${version}"-*.whl)"
# the release's own pins: without them pip backtracks through old sdists
.venv-ha/bin/python - "${wheel}" > .venv-ha/constraints.txt <<'PY'
import sys, zipfile
sys.stdout.write(zipfile.ZipFile(sys.argv[1]).read("homeassistant/package_constraints.txt").decode())
PY
.venv-ha/bin/pip install --quiet --ignore-requires-python -c .venv-ha/constraints.txt \
    "${wheel}" -r tests_ha/requirements.txt
if ! command -v ffmpeg > /dev/null; then
    apt-get update -q && apt-get install -y -q --no-install-recommends ffmpeg
fi
