#!/usr/bin/with-contenv bashio
# Maps the add-on options to wyoming-wsrvc flags, starts the server, and announces it to
# Home Assistant through Supervisor discovery once it answers describe.
set -euo pipefail

voices_dir="$(bashio::config 'voices_dir')"
if [ ! -d "${voices_dir}" ]; then
    # first start: seed the folder with the example profile (the folder is under /share,
    # mapped read-write, so the Samba or File editor add-on can add voices there)
    if mkdir -p "${voices_dir}" 2>/dev/null \
        && cp "$(python3 -m wyoming_wsrvc.example_voices)"/example.yaml "${voices_dir}/"; then
        bashio::log.info "Created ${voices_dir} with the example voice profile"
    else
        bashio::log.warning "Cannot create ${voices_dir}; serving the example voice profile"
        voices_dir="$(python3 -m wyoming_wsrvc.example_voices)"
    fi
fi

# The voice studio on the ingress port: only Home Assistant's ingress proxy may connect
# (Home Assistant's own sign-in guards it; the port is not published).
flags=(--uri 'tcp://0.0.0.0:10210' --data-dir /data --voices "${voices_dir}"
       --device "$(bashio::config 'device')" --zeroconf
       --http-uri 'http://0.0.0.0:8099' --http-ingress)
if bashio::config.has_value 'default_voice'; then
    flags+=(--default-voice "$(bashio::config 'default_voice')")
fi
if bashio::config.has_value 'threads'; then
    flags+=(--threads "$(bashio::config 'threads')")
fi
if bashio::config.true 'debug_logging'; then
    flags+=(--debug)
fi

python3 -m wyoming_wsrvc "${flags[@]}" &
server_pid=$!
trap 'kill -TERM "${server_pid}"; wait "${server_pid}"; exit $?' TERM INT

# Announce only once the server really answers (models loaded and warmed up).
until python3 -m wyoming_wsrvc.server.healthcheck --uri tcp://127.0.0.1:10210 --timeout 5; do
    if ! kill -0 "${server_pid}" 2>/dev/null; then
        bashio::exit.nok "wyoming-wsrvc stopped during start-up"
    fi
    sleep 5
done
bashio::discovery "wyoming" "{\"uri\": \"tcp://$(hostname):10210\"}" > /dev/null
bashio::log.info "Announced wyoming-wsrvc to Home Assistant"

wait "${server_pid}"
