#!/usr/bin/env bash
# Runs kiln's whole test suite. Installs the Debian packages the tests use when they are
# missing (the tests run real third-party tools: umoci and skopeo read our images, a
# docker-registry serves base images built from busybox-static, runc and crun run steps), then runs
# cargo test over the workspace. Needs root: builds mount overlayfs.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(umoci skopeo jq docker-registry busybox-static runc crun)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing ${missing[*]}" >&2
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

cargo test --workspace "$@"
