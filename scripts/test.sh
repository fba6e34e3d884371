#!/usr/bin/env bash
# Runs kiln's whole test suite. Installs the Debian packages the tests use when they are
# missing (the tests run real third-party tools: umoci, skopeo and podman read our images, a
# docker-registry serves base images built from busybox-static, runc and crun run steps), then runs
# cargo test over the workspace. Needs root: builds mount overlayfs.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/ensure-packages.sh umoci skopeo jq docker-registry busybox-static runc crun podman

cargo test --workspace "$@"
