#!/usr/bin/env bash
# Prepares a fresh Debian machine (as root) to build and test shoal: the packages the tests
# and the demo use, and a Rust toolchain if none is installed. Safe to run again.
set -euo pipefail

need=()
for pair in ip:iproute2 nft:nftables dig:dnsutils curl:curl ping:iputils-ping conntrack:conntrack nsenter:util-linux gcc:gcc; do
  cmd=${pair%%:*} pkg=${pair#*:}
  command -v "$cmd" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: installing the Rust toolchain (rustup, stable)"
  curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
  # shellcheck disable=SC1091
  . "$HOME/.cargo/env"
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "setup: shoal's lab and tests create network namespaces; run them as root" >&2
  exit 1
fi
