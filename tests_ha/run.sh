#!/usr/bin/env bash
# Runs the real-Home-Assistant suite against the releases of tests_ha/versions (installed by
# tests_ha/install.sh), each beside the real server and the real wyoming-piper (.venv-peers):
#
#   tests_ha/run.sh [oldest|newest]... [-- PYTEST ARGS]   (default: both)
#
# newest runs inside the Debian sid folder .ha-newest/ (chroot, which shares this host's
# loopback): this checkout and the Python prefix its .venv and .venv-peers are made from are
# bind-mounted at the same paths, so the suite starts the server and Piper exactly as for oldest.
set -euo pipefail
cd "$(dirname "$0")/.."
here="$(pwd)"
sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
targets=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do targets+=("$1"); shift; done
[ $# -gt 0 ] && shift
[ ${#targets[@]} -gt 0 ] || targets=(oldest newest)
suite=(-m pytest -c tests_ha/pytest.ini --rootdir . tests_ha "$@")

run_newest() {
    local root="${here}/.ha-newest" mounted=() base
    [ -x "${root}/opt/ha/bin/python" ] || { echo "run tests_ha/install.sh newest first" >&2; exit 2; }
    base="$(.venv/bin/python -c 'import sys; print(sys.base_prefix)')"
    unmount() {
        local index
        for ((index = ${#mounted[@]} - 1; index >= 0; index--)); do
            $sudo umount "${mounted[index]}" || $sudo umount -l "${mounted[index]}"
        done
    }
    trap unmount EXIT
    for path in "${base}" "${here}"; do
        $sudo mkdir -p "${root}${path}"
        $sudo mount --bind "${path}" "${root}${path}"
        mounted+=("${root}${path}")
    done
    $sudo mount -t proc proc "${root}/proc"
    mounted+=("${root}/proc")
    $sudo chroot "${root}" /usr/bin/env -i PATH=/usr/bin:/bin HOME=/root LANG=C.UTF-8 \
        WSRVC_HA_RELEASE=newest /bin/sh -c 'cd "$0" && shift && exec /opt/ha/bin/python "$@"' \
        "${here}" "${suite[@]}"
    unmount
    trap - EXIT
}

for target in "${targets[@]}"; do
    case "${target}" in
        oldest) WSRVC_HA_RELEASE=oldest .venv-ha/bin/python "${suite[@]}" ;;
        newest) run_newest ;;
        *) echo "usage: tests_ha/run.sh [oldest|newest]... [-- PYTEST ARGS]" >&2; exit 2 ;;
    esac
done
