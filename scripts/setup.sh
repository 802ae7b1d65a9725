#!/usr/bin/env bash
# Sets up plugvisor on a Debian/Ubuntu machine: the system packages it needs
# (installed with apt-get when missing), then the npm packages from the
# lockfile, which also build the native addon, the C client library and the
# TypeScript (npm ci runs `install` and `prepare`).
set -euo pipefail
cd "$(dirname "$0")/.."

# nasm: guest code in tests; bubblewrap + libseccomp-dev: the plugin sandbox;
# protobuf-c: the native VCPU threads and the C client library; valgrind: the C
# library's leak checks; clang: sanitizer and libFuzzer builds of the native
# VCPU threads (native/test); iproute2: the persistent taps of the network
# tests; build-essential, python3, pkg-config: the native addon and C builds.
packages=(build-essential python3 pkg-config nasm bubblewrap libseccomp-dev protobuf-c-compiler libprotobuf-c-dev valgrind clang iproute2)

missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' || missing+=("$package")
done

if ((${#missing[@]} > 0)); then
  echo "setup: installing Debian packages: ${missing[*]}"
  if [[ $(id -u) -eq 0 ]]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  elif command -v sudo >/dev/null; then
    sudo apt-get update -qq
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "setup: please install these Debian packages as root: ${missing[*]}" >&2
    exit 1
  fi
fi

if [[ ! -e /dev/kvm ]]; then
  echo "setup: warning: /dev/kvm is missing; plugvisor needs KVM (enable virtualization, load kvm_intel or kvm_amd)." >&2
fi

npm ci --no-audit --no-fund
