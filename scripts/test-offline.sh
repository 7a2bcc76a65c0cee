#!/usr/bin/env bash
# Proves that nothing needs a network: the C phone-call example (tiny-model generation with
# streaming and barge-in, rewards, learning updates, saves, a second call loading the saved
# adapter) and a CLI generation run inside a new network namespace (`unshare -n`) whose only
# interface, loopback, is down. Any attempt to reach a network fails there, and so would the run.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v unshare >/dev/null || { echo "test-offline: unshare not found (Debian package util-linux)"; exit 1; }
[ -x target/c/phone_call ] || { echo "test-offline: target/c/phone_call missing: run 'make ffi'"; exit 1; }
host_ns=$(readlink /proc/self/ns/net)
store=$(mktemp -d /tmp/attune-offline-XXXXXX)
trap 'rm -rf "$store"' EXIT
HOST_NS="$host_ns" STORE="$store" unshare -n -- bash -c '
  set -euo pipefail
  ns=$(readlink /proc/self/ns/net)
  # /proc/net/dev lists the interfaces of this namespace (/sys/class/net still shows those of the host).
  ifaces=$(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d " " | tr "\n" " ")
  echo "test-offline: running in network namespace $ns (the host is in $HOST_NS); interfaces: $ifaces"
  if [ "$ns" = "$HOST_NS" ]; then echo "test-offline: not in a new network namespace"; exit 1; fi
  if [ "$ifaces" != "lo " ]; then echo "test-offline: interfaces other than loopback: $ifaces"; exit 1; fi
  target/c/phone_call models/tiny "$STORE" > "$STORE/phone_call.log"
  grep -q "update accepted" "$STORE/phone_call.log" || { echo "test-offline: no learning update ran"; cat "$STORE/phone_call.log"; exit 1; }
  saved=$(find "$STORE" -name "v*.attune" | wc -l)
  [ "$saved" -ge 2 ] || { echo "test-offline: expected saved adapter versions, found $saved"; exit 1; }
  target/release/attune generate --model models/tiny --max-new-tokens 8 "Hello" > /dev/null
  echo "test-offline: phone call (generation, $(grep -c "update accepted" "$STORE/phone_call.log") accepted updates, $saved saved versions) and a CLI generation ran with no network"
'
