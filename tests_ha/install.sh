#!/usr/bin/env bash
# Installs the Home Assistant releases of tests_ha/versions, each with the release's own package
# constraints and the requirements of its Wyoming integration chain (read from its manifests):
#
#   tests_ha/install.sh [oldest|newest]...   (default: both)
#
#   oldest: into .venv-ha, on Python 3.13 (pyenv's 3.13.0, or python3.13; HA_PYTHON overrides).
#   newest: into a Debian sid folder, .ha-newest/ (debootstrap --variant=minbase), with Debian's
#           python3.14, g++ (pymicro-vad and pyspeex-noise have no cp314 wheels) and ffmpeg; its
#           venv is /opt/ha in that folder. pip and apt inside it use this host's pip
#           configuration, CA certificates and apt settings (copied in). tests_ha/run.sh enters it.
#
# Debian's ffmpeg is installed on this host too (Home Assistant's audio conversions).
set -euo pipefail
cd "$(dirname "$0")/.."
here="$(pwd)"
sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo

field() {  # field NAME COLUMN: a column of tests_ha/versions
    awk -v name="$1" -v column="$2" '$1 == name { print $column }' tests_ha/versions
}

# the requirements of the components the Wyoming integration needs (their dependency closure),
# read from the release's own manifests, and its package_constraints.txt
wheel_facts() {  # wheel_facts WHEEL OUT_DIR
    python3 - "$1" "$2" <<'PY'
import json
import sys
import zipfile
from pathlib import Path

wheel, out = zipfile.ZipFile(sys.argv[1]), Path(sys.argv[2])
names = set(wheel.namelist())
todo, seen, requirements = ["wyoming", "tts", "ffmpeg", "frontend"], set(), []
while todo:
    component = todo.pop()
    manifest = f"homeassistant/components/{component}/manifest.json"
    if component in seen or manifest not in names:
        continue
    seen.add(component)
    data = json.loads(wheel.read(manifest))
    requirements += data.get("requirements", [])
    if component != "frontend":  # the frontend's own requirement only, not the whole UI
        todo += data.get("dependencies", [])
(out / "integrations.txt").write_text("\n".join(sorted(set(requirements))) + "\n")
(out / "constraints.txt").write_bytes(wheel.read("homeassistant/package_constraints.txt"))
PY
}

install_oldest() {
    local version python
    version="$(field oldest 2)"
    python="${HA_PYTHON:-}"
    if [ -z "${python}" ]; then
        if command -v pyenv > /dev/null && pyenv prefix "$(field oldest 3).0" > /dev/null 2>&1; then
            python="$(pyenv prefix "$(field oldest 3).0")/bin/python"
        else
            python="$(command -v "python$(field oldest 3)")"
        fi
    fi
    [ -x .venv-ha/bin/python ] || "${python}" -m venv .venv-ha
    mkdir -p .venv-ha/wheels
    .venv-ha/bin/pip download --quiet --no-deps --ignore-requires-python \
        --dest .venv-ha/wheels "homeassistant==${version}"
    local wheel
    wheel="$(ls .venv-ha/wheels/homeassistant-"${version}"-*.whl)"
    wheel_facts "${wheel}" .venv-ha
    # the release's own pins: without them pip backtracks through old sdists
    .venv-ha/bin/pip install --quiet --ignore-requires-python -c .venv-ha/constraints.txt \
        "${wheel}" -r .venv-ha/integrations.txt -r tests_ha/requirements.txt
    echo "Home Assistant ${version} on $(.venv-ha/bin/python --version) in .venv-ha"
}

install_newest() {
    local version python root=.ha-newest
    version="$(field newest 2)"
    python="python$(field newest 3)"
    if [ ! -x "${root}/usr/bin/${python}" ]; then
        command -v debootstrap > /dev/null \
            || $sudo apt-get install -y -qq debootstrap > /dev/null \
            || { $sudo apt-get update -qq && $sudo apt-get install -y -qq debootstrap > /dev/null; }
        local mirror
        mirror=$(sed -n '/^URIs:/{s/^URIs: *//p;q}' /etc/apt/sources.list.d/debian.sources 2> /dev/null)
        rm -rf "${root}"
        $sudo debootstrap --variant=minbase \
            --include="${python},${python}-venv,${python}-dev,g++,ffmpeg,ca-certificates" \
            sid "${root}.partial" "${mirror:-http://deb.debian.org/debian}" \
            > "${root}.debootstrap.log" 2>&1 || { tail -20 "${root}.debootstrap.log"; exit 1; }
        mv "${root}.partial" "${root}"
        rm -f "${root}.debootstrap.log"
    fi
    # this host's way out: pip's configuration, the CA bundle, apt's settings, the resolver
    $sudo mkdir -p "${root}/etc/xdg" "${root}/etc/ssl/certs" "${root}/etc/apt/apt.conf.d"
    [ -f /etc/pip.conf ] && $sudo cp /etc/pip.conf "${root}/etc/pip.conf"
    [ -d /etc/xdg/pip ] && $sudo cp -r /etc/xdg/pip "${root}/etc/xdg/"
    $sudo cp /etc/ssl/certs/ca-certificates.crt "${root}/etc/ssl/certs/ca-certificates.crt"
    $sudo cp /etc/apt/apt.conf.d/* "${root}/etc/apt/apt.conf.d/" 2> /dev/null || true
    $sudo cp /etc/resolv.conf "${root}/etc/resolv.conf" 2> /dev/null || true
    mkdir -p "${root}/opt/wheels"
    # the wheel is fetched here (its requires-python is the chroot's business), installed there
    python3 -m pip download --quiet --no-deps --ignore-requires-python \
        --dest "${root}/opt/wheels" "homeassistant==${version}"
    local wheel
    wheel="$(cd "${root}/opt/wheels" && ls homeassistant-"${version}"-*.whl)"
    wheel_facts "${root}/opt/wheels/${wheel}" "${root}/opt/wheels"
    cp tests_ha/requirements.txt "${root}/opt/wheels/tests.txt"
    # the torch cap of this host's pip constraints means nothing there: none of these is torch
    $sudo chroot "${root}" /usr/bin/env -i PATH=/usr/bin:/bin HOME=/root \
        PIP_CERT=/etc/ssl/certs/ca-certificates.crt PIP_DISABLE_PIP_VERSION_CHECK=1 \
        PIP_DEFAULT_TIMEOUT=180 /bin/sh -euc "
            [ -f /opt/ha/pyvenv.cfg ] || ${python} -m venv /opt/ha
            cd /opt/wheels
            /opt/ha/bin/pip install --quiet -c constraints.txt '${wheel}' \
                -r integrations.txt -r tests.txt
            echo \"Home Assistant ${version} on \$(/opt/ha/bin/python --version) in ${here}/${root}\"
        "
}

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(oldest newest)
for target in "${targets[@]}"; do
    case "${target}" in
        oldest) install_oldest ;;
        newest) install_newest ;;
        *) echo "usage: tests_ha/install.sh [oldest|newest]..." >&2; exit 2 ;;
    esac
done
if ! command -v ffmpeg > /dev/null; then
    $sudo apt-get update -q && $sudo apt-get install -y -q --no-install-recommends ffmpeg
fi
