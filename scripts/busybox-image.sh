#!/usr/bin/env bash
# Makes a small base image from Debian's busybox-static, as an OCI layout: DIR:1.35 holds
# busybox with its applets, /etc/passwd and /etc/group with root and app (1000), /tmp 1777,
# Cmd /bin/sh and the usual PATH. Used by examples/build.sh and by the tests' fixtures.
#   usage: scripts/busybox-image.sh DIR
set -euo pipefail
dir=${1:?usage: busybox-image.sh DIR}
"$(dirname "$0")/ensure-packages.sh" umoci busybox-static
[[ -x /bin/busybox ]] || { echo "no /bin/busybox (install busybox-static)" >&2; exit 2; }

bundle=$(mktemp -d)
trap 'rm -rf "$bundle"' EXIT
rm -rf "$dir"
umoci init --layout "$dir"
umoci new --image "$dir:1.35"
umoci unpack --image "$dir:1.35" "$bundle/b" >/dev/null
r=$bundle/b/rootfs
mkdir -p "$r/bin" "$r/etc" "$r/tmp" "$r/root" "$r/home/app"
chmod 1777 "$r/tmp"
cp /bin/busybox "$r/bin/busybox"
for applet in $("$r/bin/busybox" --list); do
  [[ $applet == busybox ]] || ln -sf busybox "$r/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' > "$r/etc/passwd"
printf 'root:x:0:\napp:x:1000:\nnogroup:x:65534:\n' > "$r/etc/group"
chown 1000:1000 "$r/home/app"
umoci repack --image "$dir:1.35" "$bundle/b" >/dev/null
umoci config --image "$dir:1.35" --config.cmd /bin/sh \
  --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin >/dev/null
