#!/usr/bin/env bash
# Builds the example in examples/hello — two stages, RUN steps, a heredoc — into an OCI layout,
# then says how to look at it. There is no Docker Hub here, so the script makes its base image
# from Debian's busybox-static and serves it from a docker-registry it starts on loopback.
# Needs root (kiln mounts overlayfs); builds kiln itself first.
#   usage: examples/build.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-examples/out/hello-oci}

scripts/ensure-packages.sh docker-registry skopeo umoci busybox-static

cargo build --release --quiet

work=$(mktemp -d)
registry_pid=
cleanup() { [[ -n $registry_pid ]] && kill "$registry_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat > "$work/registry.yml" <<YML
version: 0.1
log: {level: error}
storage: {filesystem: {rootdirectory: $work/registry}}
http: {addr: 127.0.0.1:$port}
YML
docker-registry serve "$work/registry.yml" > "$work/registry.log" 2>&1 &
registry_pid=$!
for _ in $(seq 1 100); do (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done

scripts/busybox-image.sh "$work/busybox"
base=127.0.0.1:$port/busybox:1.35
skopeo copy -q --dest-tls-verify=false "oci:$work/busybox:1.35" "docker://$base"

mkdir -p "$(dirname "$out")"
target/release/kiln --root "${KILN_ROOT:-/var/lib/kiln}" build \
  --build-arg "BASE=$base" -t hello:1 \
  --output "type=oci,dest=$out,tar=false" examples/hello

cat <<MSG

The image is an OCI layout in $out, tagged hello:1 (ref name "1"). Look at it with:
  skopeo inspect oci:$out:1
  umoci unpack --image $out:1 /tmp/hello-bundle && cat /tmp/hello-bundle/rootfs/www/version.txt
MSG
