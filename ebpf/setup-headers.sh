#!/usr/bin/env bash
# Point /lib/modules/$(uname -r)/{build,source} at Debian's linux-headers-6.1.0-N packages.
#
# bcc compiles the eBPF C at load time against the running kernel's headers. This kernel
# ships none; Debian's 6.1 headers work for our sk_msg program (verified, see DESIGN.md).
# Debian bumps N over time, so the newest installed N is picked, never a fixed one.
# Idempotent: re-running only refreshes the two links. Needs root.
set -euo pipefail

release="$(uname -r)"
amd64="$(ls -d /usr/src/linux-headers-6.1.0-*-amd64 2>/dev/null | sort -V | tail -n 1 || true)"
if [[ -z "$amd64" ]]; then
    echo "no /usr/src/linux-headers-6.1.0-*-amd64; install them: apt-get install linux-headers-amd64" >&2
    exit 1
fi
common="${amd64%-amd64}-common"
if [[ ! -d "$common" ]]; then
    echo "$amd64 found but $common is missing; reinstall linux-headers-amd64" >&2
    exit 1
fi

mkdir -p "/lib/modules/$release"
ln -sfn "$amd64" "/lib/modules/$release/build"
ln -sfn "$common" "/lib/modules/$release/source"
echo "/lib/modules/$release/build -> $amd64"
echo "/lib/modules/$release/source -> $common"
