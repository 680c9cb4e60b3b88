#!/bin/sh
# Docker entry point: seed /data/voices with the example profile on first start, then run the
# server as PID 1 (exec), so SIGTERM reaches it directly.
set -e
if [ ! -d /data/voices ] || [ -z "$(ls -A /data/voices 2>/dev/null)" ]; then
    mkdir -p /data/voices
    cp "$(python -m wyoming_wsrvc.example_voices)"/*.yaml /data/voices/
fi
exec python -m wyoming_wsrvc --data-dir /data --voices /data/voices "$@"
