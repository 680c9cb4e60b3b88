# The bashio functions config/addon/run.sh uses, as Home Assistant's base image has them:
# options from /data/options.json (as Supervisor writes it), discovery posted to Supervisor's API
# ($SUPERVISOR_DISCOVERY, default http://supervisor/discovery), logs to stdout.
bashio::config() {
    python3 -c 'import json, sys
value = json.load(open("/data/options.json")).get(sys.argv[1])
print("" if value is None else str(value).lower() if isinstance(value, bool) else value)' "$1"
}
bashio::config.has_value() { [ -n "$(bashio::config "$1")" ]; }
bashio::config.true() { [ "$(bashio::config "$1")" = "true" ]; }
bashio::log.info() { echo "[INFO] $*"; }
bashio::log.warning() { echo "[WARNING] $*"; }
bashio::exit.nok() { echo "[ERROR] $*"; exit 1; }
bashio::discovery() {
    python3 -c 'import json, sys, urllib.request
body = json.dumps({"service": sys.argv[1], "config": json.loads(sys.argv[2])}).encode()
request = urllib.request.Request(sys.argv[3], body, {"Content-Type": "application/json"})
print(urllib.request.urlopen(request, timeout=10).read().decode())' \
        "$1" "$2" "${SUPERVISOR_DISCOVERY:-http://supervisor/discovery}"
}
