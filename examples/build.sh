#!/usr/bin/env bash
# Builds the example image in examples/hello into an OCI layout, then shows how to look at it.
# Needs root (kiln mounts overlayfs); builds kiln itself first.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
out=${1:-examples/out/hello-oci}
mkdir -p "$(dirname "$out")"
target/release/kiln --root "${KILN_ROOT:-/var/lib/kiln}" build \
  -t hello:1 --output "type=oci,dest=$out,tar=false" examples/hello
cat <<MSG

The image is an OCI layout in $out (tag hello:1 → ref name "1"). Look at it with:
  skopeo inspect oci:$out:1
  umoci unpack --image $out:1 /tmp/hello-bundle && ls -R /tmp/hello-bundle/rootfs
MSG
