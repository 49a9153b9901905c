#!/usr/bin/env bash
# Builds the shoal .deb with cargo-deb: `shoal` and `shoald` in /usr/bin, the systemd unit
# (packaging/shoald.service, installed but not enabled), the man pages (`shoal gen-man`)
# and the bash, zsh and fish completions (`shoal completion`). Metadata: the
# [package.metadata.deb] table of crates/shoal/Cargo.toml.
#
# Usage: scripts/package.sh [--profile release|dev] [--no-build] [--out DIR]
#   --profile   which build to package (default release; dev is quicker, and bigger)
#   --no-build  package the binaries already built (the test does: it runs inside cargo)
#   --out       where the .deb goes (default target/debian)
# Prints the path of the .deb it made on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release
build=1
out=target/debian
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile=${2:?--profile needs release or dev}; shift 2 ;;
    --no-build) build=0; shift ;;
    --out) out=${2:?--out needs a directory}; shift 2 ;;
    -h|--help) sed -n 2,11p "$0"; exit 0 ;;
    *) echo "package.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$profile" in
  release) dir=release ;;
  dev|debug) profile=dev; dir=debug ;;
  *) echo "package.sh: --profile is release or dev, not $profile" >&2; exit 2 ;;
esac

if ! command -v cargo-deb >/dev/null; then
  echo "package.sh: installing cargo-deb (once)" >&2
  cargo install cargo-deb --locked --version 3.8.0
fi
if [ "$build" = 1 ]; then
  cargo build --profile "$profile" -p shoal --bins
fi

bin="${CARGO_TARGET_DIR:-target}/$dir"
for b in shoal shoald; do
  if [ ! -x "$bin/$b" ]; then
    echo "package.sh: $bin/$b is missing: build it (cargo build --profile $profile -p shoal) or drop --no-build" >&2
    exit 1
  fi
done

# What the binaries generate about themselves, where the asset paths
# (target/release/pkg/..., which cargo-deb maps to the profile's directory) find it.
pkg="$bin/pkg"
rm -rf "$pkg"
mkdir -p "$pkg/man" "$pkg/completions"
"$bin/shoal" gen-man "$pkg/man"
gzip -9n "$pkg"/man/*
"$bin/shoal" completion bash >"$pkg/completions/shoal"
"$bin/shoal" completion zsh >"$pkg/completions/_shoal"
"$bin/shoal" completion fish >"$pkg/completions/shoal.fish"

mkdir -p "$out"
# --fast: gzip instead of xz; a dev build's debug info makes xz take minutes.
fast=()
[ "$profile" = dev ] && fast=(--fast)
cargo deb -p shoal --no-build --profile "$profile" --output "$out" "${fast[@]}" | tail -n 1
