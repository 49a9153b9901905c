#!/usr/bin/env bash
# Prepares a fresh Debian machine (as root) to build and test shoal: the packages the tests,
# the eBPF build and the demo call, and a Rust toolchain at least the workspace's rust-version
# with rustfmt and clippy. Safe to run again: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# Before anything is installed: the lab and the tests create network namespaces.
if [ "$(id -u)" -ne 0 ]; then
  echo "setup: shoal's lab and tests create network namespaces; run them as root" >&2
  exit 1
fi

# command:package. `type -P` looks on PATH only: `kill` is also a shell builtin, but the
# tests run the binary (procps).
need=()
for pair in \
  ip:iproute2 bridge:iproute2 nft:nftables conntrack:conntrack \
  dig:dnsutils curl:curl ping:iputils-ping \
  nsenter:util-linux unshare:util-linux kill:procps sysctl:procps \
  python3:python3 gcc:gcc g++:g++ strip:binutils ldd:libc-bin \
  clang:clang llvm-strip:llvm bpftool:bpftool \
  docker-registry:docker-registry skopeo:skopeo umoci:umoci runc:runc conmon:conmon \
  promtool:prometheus chromium:chromium \
  man:man-db dpkg-deb:dpkg systemd-analyze:systemd; do
  cmd=${pair%%:*} pkg=${pair#*:}
  type -P "$cmd" >/dev/null 2>&1 || need+=("$pkg")
done
# The eBPF programs of shoal-bpf include libbpf's headers.
[ -f /usr/include/bpf/bpf_helpers.h ] || need+=(libbpf-dev)
# Containers get containers-common's seccomp profile (runc has none of its own).
[ -f /usr/share/containers/seccomp.json ] || need+=(golang-github-containers-common)
# The Engine API tests drive shoal with Debian's docker CLI (20.10, API 1.41); its daemons
# (dockerd, containerd) are never started: policy-rc.d below keeps them from starting.
[ -x /usr/bin/docker ] || need+=(docker.io)
# Image tests build images from a static busybox (busybox-static, not the dynamic busybox).
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'install ok installed' ||
  need+=(busybox-static)
if [ ${#need[@]} -gt 0 ]; then
  mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
  echo "setup: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # docker-registry, docker.io and prometheus ship services; the tests start their own
  # registries and Prometheus (tests/metrics.rs) and no docker daemon, so no package may
  # start one: policy-rc.d answers 101 (action forbidden) while installing.
  policy=/usr/sbin/policy-rc.d
  own_policy=
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    trap 'rm -f "$policy"' EXIT
    own_policy=1
  fi
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  if [ -n "$own_policy" ]; then
    rm -f "$policy"
    trap - EXIT
  fi
fi

# shellcheck disable=SC1091
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: installing the Rust toolchain (rustup, stable)"
  curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c rustfmt -c clippy
  # shellcheck disable=SC1091
  . "$HOME/.cargo/env"
fi

# The workspace's rust-version (Cargo.toml) is the oldest toolchain that builds it.
want=$(sed -n 's/^rust-version *= *"\([0-9.]*\)".*/\1/p' Cargo.toml | head -n1)
have=$(rustc --version | awk '{print $2}')
if [ "$(printf '%s\n%s\n' "$want" "$have" | sort -V | head -n1)" != "$want" ]; then
  if ! command -v rustup >/dev/null 2>&1; then
    echo "setup: rustc $have is older than the workspace's rust-version $want, and there is no rustup to upgrade it; install Rust $want or newer" >&2
    exit 1
  fi
  echo "setup: rustc $have is older than the workspace's rust-version $want; updating stable"
  rustup update stable --no-self-update
  rustup default stable
  have=$(rustc --version | awk '{print $2}')
  if [ "$(printf '%s\n%s\n' "$want" "$have" | sort -V | head -n1)" != "$want" ]; then
    echo "setup: rustc is still $have after the update; shoal needs $want or newer" >&2
    exit 1
  fi
fi
for tool in fmt clippy; do
  if ! cargo "$tool" --version >/dev/null 2>&1; then
    echo "setup: adding the toolchain's $tool"
    rustup component add "$([ "$tool" = fmt ] && echo rustfmt || echo clippy)"
  fi
done
# scripts/package.sh and crates/shoal/tests/package.rs build the .deb with cargo-deb.
if ! cargo deb --version >/dev/null 2>&1; then
  echo "setup: installing cargo-deb"
  cargo install cargo-deb --locked --version 3.8.0
fi
