#!/usr/bin/env bash
# Load runs of the gateway with SIPp (Debian package sip-tester), on loopback.
#
#   tests/load/run.sh signalling [RATE] [SECONDS]   # call setups: INVITE/200/ACK/BYE, default 500/s for 30 s
#   tests/load/run.sh soak [RATE] [SECONDS] [HOLD_S] # PIN keyed by RFC 2833, caller stays HOLD_S in a
#                                                    # local room; default 50/s for 600 s, 10 s per call
#
# Runs the release binary (DIALIN_BIN, default target/release/dialin) on a scratch config and
# store, samples its CPU time, RSS and /metrics every 10 s, prints SIPp's final counts and the
# samples. Build first: cargo build --release.
set -euo pipefail
cd "$(dirname "$0")/../.."
mode=${1:-signalling}
BIN=${DIALIN_BIN:-${CARGO_TARGET_DIR:-target}/release/dialin}
PCAPS=/usr/share/sip-tester
SIP_PORT=${SIP_PORT:-25060}
ADMIN_PORT=${ADMIN_PORT:-28089}
command -v sipp >/dev/null || { echo "sipp not found (apt-get install sip-tester)"; exit 2; }
[ -x "$BIN" ] || { echo "$BIN not built (cargo build --release)"; exit 2; }

work=$(mktemp -d /tmp/dialin-load.XXXXXX)
cat >"$work/dialin.toml" <<CONF
[sip]
listen = ["udp://127.0.0.1:$SIP_PORT"]
[media]
rtp_ports = "10000-19999"
[store]
url = "sqlite://$work/dialin.db"
[admin]
listen = "127.0.0.1:$ADMIN_PORT"
token = "load"
[limits]
max_calls = 2000
[[trunk]]
id = "load"
allowed_addresses = ["127.0.0.0/8"]
pin_length = 4
max_calls = 2000
CONF

gw_pid=
cleanup() { if [ -n "$gw_pid" ]; then kill -TERM "$gw_pid" 2>/dev/null || true; sleep 1; kill -KILL "$gw_pid" 2>/dev/null || true; fi; }
trap cleanup EXIT

metric() { curl -s "http://127.0.0.1:$ADMIN_PORT/metrics" | awk -v m="$1" '$1==m {print $2}' | head -n1; }
active() { curl -s "http://127.0.0.1:$ADMIN_PORT/metrics" | awk '/^dialin_calls_active\{/ {s+=$2} END {print s+0}'; }
sample() {
  local t rss cpu
  t=$(date +%s)
  rss=$(awk '/^VmRSS/ {print $2}' /proc/$gw_pid/status)
  cpu=$(awk '{print $14+$15}' /proc/$gw_pid/stat)
  echo "t=$t rss_kib=$rss cpu_ticks=$cpu calls_active=$(active) ports_in_use=$(metric dialin_rtp_ports_in_use) tasks_alive=$(metric dialin_tasks_alive)"
}

if [ "$mode" = soak ]; then
  "$BIN" pin create --config "$work/dialin.toml" --room soak --pin 2468 >/dev/null
fi
RUST_LOG=${RUST_LOG:-warn} "$BIN" serve --config "$work/dialin.toml" >"$work/gateway.log" 2>&1 &
gw_pid=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$ADMIN_PORT/readyz" >/dev/null && break; sleep 0.1; done
echo "gateway pid $gw_pid, work dir $work, $(nproc) cores: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
sample

case "$mode" in
signalling)
  rate=${2:-500}; secs=${3:-30}
  calls=$((rate * secs))
  sipp_args=(-sn uac -s 1000 -r "$rate" -rp 1000 -m "$calls" -l $((rate * 4)))
  ;;
soak)
  rate=${2:-50}; secs=${3:-600}; hold=${4:-10}
  calls=$((rate * secs))
  # Welcome prompt ~1 s, five keys ~1.5 s, then in the room until HOLD_S after the answer.
  python3 - "$work/pin_caller.xml" "$PCAPS" $((hold * 1000 - 2500)) <<'PY'
import sys
out, pcaps, stay = sys.argv[1:]
keys = "".join(
    f'  <nop><action><exec play_pcap_audio="{pcaps}/dtmf_2833_{k}.pcap"/></action></nop>\n'
    '  <pause milliseconds="300"/>\n'
    for k in ["2", "4", "6", "8", "pound"])
xml = open("tests/load/pin_caller.xml").read()
open(out, "w").write(xml.replace("@KEYS@", keys).replace("@STAY_MS@", stay))
PY
  sipp_args=(-sf "$work/pin_caller.xml" -s 1000 -r "$rate" -rp 1000 -m "$calls" -l $((rate * hold * 3))
             -mi 127.0.0.1 -mp 6000)
  ;;
*) echo "mode: signalling | soak"; exit 2 ;;
esac

( while kill -0 "$gw_pid" 2>/dev/null; do sleep 10; sample; done ) >"$work/samples.txt" &
sampler=$!
start=$(date +%s.%N)
set +e
sipp 127.0.0.1:$SIP_PORT -i 127.0.0.1 -p $((SIP_PORT + 10)) "${sipp_args[@]}" \
  -nostdin -timeout $((secs + 120)) -trace_stat -stf "$work/stat.csv" -fd 1 -trace_err -error_file "$work/errors.log" \
  >"$work/sipp.out" 2>&1
sipp_rc=$?
set -e
end=$(date +%s.%N)
echo "sipp exit $sipp_rc after $(echo "$end - $start" | bc) s"
# Let the last calls end, then check that everything came back.
for _ in $(seq 60); do [ "$(active)" = 0 ] && break; sleep 1; done
sleep 2
kill "$sampler" 2>/dev/null || true
cat "$work/samples.txt"
echo "after: $(sample)"
python3 - "$work/stat.csv" <<'PY'
import csv, sys
rows = list(csv.reader(open(sys.argv[1]), delimiter=';'))
head, last = rows[0], rows[-1]
want = ["TotalCallCreated", "SuccessfulCall(C)", "FailedCall(C)", "OutgoingCall(C)", "Retransmissions(C)", "CurrentCall"]
print("sipp:", ", ".join(f"{k}={last[head.index(k)]}" for k in want if k in head))
PY
curl -s "http://127.0.0.1:$ADMIN_PORT/metrics" \
  | grep -E '^dialin_(calls_total|pin_attempts_total|media_late_frames_total|overload_refused_total|rtp_packets)' \
  | grep -v ' 0$' || true
echo "gateway log error lines: $(grep -c 'ERROR\|panicked' "$work/gateway.log" || true)"
exit "$sipp_rc"
