#!/usr/bin/env bash
# The Debian package, installed for real: `dpkg -i` the .deb that `cargo deb` built, check
# the installed configuration, run the installed binary as the package's user with the
# installed configuration and token (as the systemd unit's ExecStart does; no systemd runs
# here), place a SIPp call that keys a PIN, then purge the package and check that nothing
# is left. Needs root, sipp and the .deb (target/debian/dialin_*.deb).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
deb=$(ls -t target/debian/dialin_*.deb | head -n 1)
fail() { echo "deb check: FAILED: $*" >&2; exit 1; }

echo "deb check: installing $deb"
dpkg -i "$deb" >/dev/null
getent passwd dialin >/dev/null || fail "no dialin system user"
[ "$(stat -c %U /var/lib/dialin)" = dialin ] || fail "/var/lib/dialin not owned by dialin"
for f in /usr/bin/dialin /etc/dialin/dialin.toml /etc/dialin/admin-token.env /lib/systemd/system/dialin.service; do
  [ -e "$f" ] || fail "$f missing"
done
dpkg-query -W -f='${Conffiles}\n' dialin | grep -q /etc/dialin/dialin.toml || fail "the config is not a conffile"
grep -q '^ExecStart=/usr/bin/dialin serve --config /etc/dialin/dialin.toml$' /lib/systemd/system/dialin.service \
  || fail "unexpected ExecStart"
set -a; . /etc/dialin/admin-token.env; set +a
[ "${#DIALIN_ADMIN_TOKEN}" -ge 32 ] || fail "the generated admin token is too short"

as_dialin() { runuser -u dialin -- "$@"; }
cd /var/lib/dialin
as_dialin /usr/bin/dialin check-config --config /etc/dialin/dialin.toml
# Ten different digits: SIPp replays each capture with the same RTP timestamps, so a digit
# keyed twice would look like a retransmission of the first.
pin=1357924680
as_dialin /usr/bin/dialin pin create --config /etc/dialin/dialin.toml --room deb-check --pin "$pin" >/dev/null
as_dialin /usr/bin/dialin serve --config /etc/dialin/dialin.toml >/tmp/dialin-deb.log 2>&1 &
gw=$!
trap 'pkill -KILL -u dialin 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf http://127.0.0.1:8089/readyz >/dev/null && break; sleep 0.1; done
curl -sf http://127.0.0.1:8089/readyz >/dev/null || { cat /tmp/dialin-deb.log; fail "the installed gateway is not ready"; }
[ "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8089/v1/pins)" = 401 ] || fail "/v1/pins without the token"
curl -sf -H "Authorization: Bearer $DIALIN_ADMIN_TOKEN" http://127.0.0.1:8089/v1/pins | grep -q deb-check \
  || fail "the generated token does not open the admin API"

# A SIPp caller keys the PIN with RFC 2833 captures and stays 2 s in the room.
work=$(mktemp -d)
python3 - "$work/caller.xml" /usr/share/sip-tester "$pin" "$root/tests/load/pin_caller.xml" <<'PY'
import sys
out, pcaps, pin, template = sys.argv[1:]
keys = "".join(
    f'  <nop><action><exec play_pcap_audio="{pcaps}/dtmf_2833_{k}.pcap"/></action></nop>\n'
    '  <pause milliseconds="300"/>\n'
    for k in list(pin) + ["pound"])
xml = open(template).read()
open(out, "w").write(xml.replace("@KEYS@", keys).replace("@STAY_MS@", "2000"))
PY
cp "$work/caller.xml" /tmp/dialin-deb-caller.xml
cd "$root"
sipp 127.0.0.1:5060 -sf /tmp/dialin-deb-caller.xml -s 1000 -i 127.0.0.1 -p 5070 -mi 127.0.0.1 -mp 6000 \
  -m 1 -nostdin -timeout 60 -trace_err -error_file "$work/errors.log" >"$work/sipp.out" 2>&1 \
  || { cat "$work/sipp.out" /tmp/dialin-deb.log; fail "the SIPp call failed"; }
accepted=$(curl -s http://127.0.0.1:8089/metrics | awk '$1=="dialin_pin_attempts_total{result=\"accepted\"}" {print $2}')
[ "$accepted" = 1 ] || { cat /tmp/dialin-deb.log; fail "the PIN was not accepted (accepted=$accepted)"; }
grep -q "joined the room" /tmp/dialin-deb.log || fail "the caller never joined the room"
# SIGTERM drains and exits (runuser does not pass the signal on: signal the gateway itself).
pkill -TERM -u dialin -x dialin || true
for _ in $(seq 100); do pgrep -u dialin >/dev/null || break; sleep 0.1; done
! pgrep -u dialin >/dev/null || fail "the gateway did not stop on SIGTERM"
wait "$gw" || true
trap - EXIT

echo "deb check: purging"
dpkg --purge dialin >/dev/null
for f in /usr/bin/dialin /etc/dialin /var/lib/dialin /lib/systemd/system/dialin.service; do
  [ ! -e "$f" ] || fail "$f left after purge"
done
! getent passwd dialin >/dev/null || fail "the dialin user is left after purge"
! getent group dialin >/dev/null || fail "the dialin group is left after purge"
echo "deb check: OK (installed, configured, called with a PIN, purged clean)"
