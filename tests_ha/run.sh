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
mounted=()

run_newest() {
    local root="${here}/.ha-newest" base
    mounted=()
    [ -f "${root}/opt/ha/pyvenv.cfg" ] || { echo "run tests_ha/install.sh newest first" >&2; exit 2; }
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
    # read-only there: a mount left behind by a killed run must not let `rm -rf` of this
    # checkout reach the host's Python
    $sudo mount -o remount,bind,ro "${root}${base}"
    $sudo mount -t proc proc "${root}/proc"
    mounted+=("${root}/proc")
    local status=0
    $sudo chroot "${root}" /usr/bin/env -i PATH=/usr/bin:/bin HOME=/root LANG=C.UTF-8 \
        /bin/sh -c 'cd "$0" && exec /opt/ha/bin/python "$@"' \
        "${here}" "${suite[@]}" || status=$?
    unmount
    trap - EXIT
    return "${status}"
}

failed=()
for target in "${targets[@]}"; do
    echo "== Home Assistant $(awk -v n="${target}" '$1 == n { print $2 " on Python " $3 }' tests_ha/versions)"
    case "${target}" in
        oldest) .venv-ha/bin/python "${suite[@]}" || failed+=("${target}") ;;
        newest) run_newest || failed+=("${target}") ;;
        *) echo "usage: tests_ha/run.sh [oldest|newest]... [-- PYTEST ARGS]" >&2; exit 2 ;;
    esac
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "tests_ha failed on: ${failed[*]}" >&2
    exit 1
fi
