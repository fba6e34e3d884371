#!/usr/bin/env bash
# Issue 5 item 6: the same workloads with kiln, BuildKit (Docker 20.10's builder) and buildah, in
# one run; prints each figure (median wall time) and kiln's ratio to each peer as a markdown table.
#
#   1. multi-stage: a builder stage computes (a ~0.3 s shell loop writing a file), a final stage
#      copies its output — cold, and its no-op rebuild;
#   2. three independent stages that each `RUN sleep 2`, a final stage copying from all three — cold;
#   3. a 5,000-file context (+ 1,000 files excluded by .dockerignore), `COPY . /app` and a RUN after
#      it — cold, no-op rebuild, rebuild after changing one file;
#   4. (BIG=1 only) a 1 GiB COPY layer of incompressible data — cold and no-op rebuild; kiln also
#      with compression=zstd, and kiln's peak memory (/usr/bin/time's max RSS).
#
#   bench/workloads.sh                     # RUNS=3 (median of 3), all three builders
#   RUNS=2 BIG=1 bench/workloads.sh        # also the 1 GiB COPY (BIG_RUNS=1 by default)
#   PEERS="buildkit" bench/workloads.sh    # a subset of peers (buildkit, buildah)
#   WORKLOADS="4" PEERS="" bench/workloads.sh   # only the 1 GiB COPY, kiln only
#
# kiln builds with `--progress quiet -o type=oci,dest=DIR,tar=false` (its default --jobs);
# BuildKit with `DOCKER_BUILDKIT=1 docker build -q --network host -t TAG` (exports into the engine's
# image store); buildah with `buildah build --isolation=chroot --layers --jobs $JOBS -t TAG` into a
# storage root of its own. "Cold" means no build cache, the base image at hand: kiln `kiln prune` (the
# base is a local image, `kiln build -t` of `FROM` the registry's, as Docker's is `docker import`ed);
# BuildKit `docker builder prune -af` + the built image removed (the base stays imported); buildah
# `rm -a` + `rmi -af`, then the base pulled again (untimed). kiln's multi-stage build is also timed on
# a fresh --root, pulling the ~1 MB base from the loopback registry ("cold, fresh root").
set -euo pipefail

RUNS=${RUNS:-3}
BIG=${BIG:-0}
BIG_RUNS=${BIG_RUNS:-1}
WORKLOADS=${WORKLOADS:-1 2 3$( ((BIG)) && echo " 4" || true)}   # e.g. WORKLOADS=4 for the 1 GiB COPY alone
JOBS=${JOBS:-$(( $(nproc) * 2 > 4 ? $(nproc) * 2 : 4 ))}   # kiln's default: 2 per CPU, at least 4
PEERS=${PEERS-buildkit buildah}
LOOP=${LOOP:-50000}   # iterations of the builder stage's shell loop (~0.3 s on the bench machine)
repo=$(cd "$(dirname "$0")/.." && pwd)
conformance=${CONFORMANCE:-$repo/../shared/conformance}
W=$(mktemp -d /tmp/kiln-workloads.XXXXXX)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
log() { echo "== $*" >&2; }

# Fixtures: a registry with the busybox base (the conformance suite's setup.sh).
REG=127.0.0.1:$(free_port)
HTTP=127.0.0.1:$(free_port)
BASE=$REG/busybox:1.35
export CONF_BASE=$W/base
here=$conformance   # setup.sh serves $here/http
# shellcheck source=/dev/null
source "$conformance/setup.sh"
started_peer=0
buildah_root=$W/buildah
final_cleanup() {
  if command -v buildah >/dev/null && [[ -d $buildah_root ]]; then
    B rm -a >/dev/null 2>&1 || true; B rmi -af >/dev/null 2>&1 || true
    umount -R "$buildah_root/root/overlay" 2>/dev/null || true
  fi
  if [[ -n ${DOCKER_HOST:-} ]]; then
    /usr/bin/docker rmi -f kiln-wl-1 kiln-wl-2 kiln-wl-3 kiln-wl-4 kiln-wl-busybox:1.35 >/dev/null 2>&1 || true
    /usr/bin/docker builder prune -af >/dev/null 2>&1 || true
    ((started_peer)) && "$conformance/../peers/dockerd.sh" stop || true
  fi
  cleanup; rm -rf "$W"
}
trap final_cleanup EXIT
start_fixtures "$W" >&2

# kiln, release build.
log "building kiln (release)"
(cd "$repo" && cargo build --release -q) >&2
target=$(cd "$repo" && cargo metadata --format-version 1 --no-deps | jq -r .target_directory)
KILN=$target/release/kiln

# ---------------------------------------------------------------------------------------------
# Workloads. Dockerfiles live outside the contexts, in $W/df; `FROM @BASE@` is filled per builder.
log "writing workloads"
mkdir -p "$W/df" "$W/ctx1" "$W/ctx2" "$W/ctx3" "$W/ctx4"
cat > "$W/df/1" <<EOF
FROM @BASE@ AS builder
RUN i=0; while [ \$i -lt $LOOP ]; do echo "line \$i"; i=\$((i+1)); done > /out.txt && wc -l /out.txt
FROM @BASE@
COPY --from=builder /out.txt /out.txt
EOF
cat > "$W/df/2" <<'EOF'
FROM @BASE@ AS a
RUN sleep 2 && echo a > /a
FROM @BASE@ AS b
RUN sleep 2 && echo b > /b
FROM @BASE@ AS c
RUN sleep 2 && echo c > /c
FROM @BASE@
COPY --from=a /a /a
COPY --from=b /b /b
COPY --from=c /c /c
EOF
cat > "$W/df/3" <<'EOF'
FROM @BASE@
COPY . /app
RUN find /app -type f | wc -l > /count && cat /app/d07/f007.txt > /last
EOF
cat > "$W/df/4" <<'EOF'
FROM @BASE@
COPY blob /blob
EOF
echo "context of workload 1" > "$W/ctx1/README"
echo "context of workload 2" > "$W/ctx2/README"
# Workload 3: 50 dirs x 100 files (5,000 files, 100-300 bytes each) sent, 1,000 more ignored.
python3 - "$W/ctx3" <<'EOF'
import os, sys
root = sys.argv[1]
for d in range(50):
    p = os.path.join(root, "d%02d" % d); os.makedirs(p)
    for f in range(100):
        with open(os.path.join(p, "f%03d.txt" % f), "w") as fh:
            fh.write(("file %d/%d\n" % (d, f)) * (10 + (d * 100 + f) % 20))
for d in range(10):
    p = os.path.join(root, "node_modules", "m%02d" % d); os.makedirs(p)
    for f in range(90):
        open(os.path.join(p, "x%03d.js" % f), "w").write("module %d %d\n" % (d, f))
for f in range(100):
    open(os.path.join(root, "d%02d" % (f % 50), "debug%03d.log" % f), "w").write("log %d\n" % f)
open(os.path.join(root, ".dockerignore"), "w").write("node_modules\n**/*.log\n")
EOF
# (the 5,000 d*/f*.txt files, .dockerignore itself, 900 node_modules + 100 *.log ignored)
if [[ " $WORKLOADS " == *" 4 "* ]]; then head -c 1G /dev/urandom > "$W/ctx4/blob"; fi

# ---------------------------------------------------------------------------------------------
# Timing. measure KEY PREP CMD [RUNS]: runs PREP (untimed) then CMD, RUNS times; records the median
# in R[KEY] and every run in ALL[KEY]. A failing CMD records "fail" (log in $W/KEY.log).
declare -A R ALL
measure() {
  local key=$1 prep=$2 cmd=$3 n=${4:-$RUNS} i t0 t1 times=()
  for i in $(seq 1 "$n"); do
    eval "$prep" >> "$W/$key.prep.log" 2>&1 || true
    t0=$(date +%s%N)
    if ! eval "$cmd" > "$W/$key.log" 2>&1; then
      R[$key]=fail; ALL[$key]="fail: $(tail -n 3 "$W/$key.log" | tr '\n' ' ' | cut -c1-200)"
      log "$key FAILED: ${ALL[$key]}"; return 0
    fi
    t1=$(date +%s%N)
    times+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f", (b - a) / 1e9}')")
  done
  R[$key]=$(printf '%s\n' "${times[@]}" | sort -g | awk '{a[NR]=$1} END {if (NR % 2) print a[(NR+1)/2]; else printf "%.3f\n", (a[NR/2]+a[NR/2+1])/2}')
  ALL[$key]=${times[*]}
  log "$key: ${R[$key]} s  (runs: ${ALL[$key]})"
}

# ---------------------------------------------------------------------------------------------
# kiln
KROOT=$W/kiln-root
# The base as a local image of kiln's store, as Docker's is an imported image of its own.
"$KILN" --root "$KROOT" build --progress quiet -t kiln-wl-busybox:1.35 - <<< "FROM $BASE" >/dev/null
for i in 1 2 3 4; do sed "s#@BASE@#kiln-wl-busybox:1.35#g" "$W/df/$i" > "$W/df/$i.kiln"; done
sed "s#@BASE@#$BASE#g" "$W/df/1" > "$W/df/1.kiln-pull"
kiln_build() { "$KILN" --root "$KROOT" build --progress quiet -f "$W/df/$1.kiln" -o "type=oci,dest=$W/out/kiln-$1,tar=false" "${@:2}" "$W/ctx$1"; }
kiln_cold() { "$KILN" --root "$KROOT" prune >/dev/null; rm -rf "$W/out/kiln-$1"; }
kiln_fresh() { "$KILN" --root "$W/kiln-fresh" build --progress quiet -f "$W/df/1.kiln-pull" -o "type=oci,dest=$W/out/kiln-fresh,tar=false" "$W/ctx1"; }
kiln_build_zstd() { "$KILN" --root "$KROOT" build --progress quiet -f "$W/df/$1.kiln" -o "type=oci,dest=$W/out/kiln-$1,tar=false,compression=zstd" "$W/ctx$1"; }
builders=(kiln)

# BuildKit: Docker 20.10's engine, FROM the same busybox rootfs `docker import`ed.
if [[ " $PEERS " == *" buildkit "* ]]; then
  peer_sock=${KILN_PEER_DOCKER:-/tmp/kiln-peer-docker}/docker.sock
  DOCKER_HOST=unix://$peer_sock /usr/bin/docker info >/dev/null 2>&1 || started_peer=1
  eval "$("$conformance/../peers/dockerd.sh")"
  if tar -C "$W/base.bundle/rootfs" -c . | /usr/bin/docker import -c 'CMD ["/bin/sh"]' \
       -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' - kiln-wl-busybox:1.35 >/dev/null; then
    for i in 1 2 3 4; do sed "s#@BASE@#kiln-wl-busybox:1.35#g" "$W/df/$i" > "$W/df/$i.docker"; done
    builders+=(buildkit)
    BK_VERSION=$(/usr/bin/docker version -f '{{.Server.Version}}')
  else
    log "skipping BuildKit: docker import failed"
  fi
fi
buildkit_build() { DOCKER_BUILDKIT=1 /usr/bin/docker build -q --network host -f "$W/df/$1.docker" -t "kiln-wl-$1" "${@:2}" "$W/ctx$1"; }
buildkit_cold() { /usr/bin/docker rmi -f "kiln-wl-$1" >/dev/null 2>&1 || true; /usr/bin/docker builder prune -af >/dev/null; }

# buildah: its own storage root; FROM the loopback registry (pulled once per cold run, untimed).
B() { buildah --root "$buildah_root/root" --runroot "$buildah_root/run" --storage-driver overlay "$@"; }
if [[ " $PEERS " == *" buildah "* ]]; then
  command -v buildah >/dev/null || apt-get install -y -qq buildah >/dev/null 2>&1 || true
  mkdir -p "$W/probe"; printf 'FROM %s\nRUN true\n' "$BASE" > "$W/probe/Dockerfile"
  if command -v buildah >/dev/null && B pull -q --tls-verify=false "$BASE" >/dev/null 2>"$W/buildah-probe.log" \
     && B build -q --isolation=chroot --layers --tls-verify=false "$W/probe" >>"$W/buildah-probe.log" 2>&1; then
    for i in 1 2 3 4; do sed "s#@BASE@#$BASE#g" "$W/df/$i" > "$W/df/$i.buildah"; done
    builders+=(buildah)
    BUILDAH_VERSION=$(buildah --version | awk '{print $3}')
  else
    log "skipping buildah: $(tail -n 2 "$W/buildah-probe.log" 2>/dev/null | tr '\n' ' ')"
  fi
fi
buildah_build() { B build -q --isolation=chroot --layers --jobs "$JOBS" --tls-verify=false -f "$W/df/$1.buildah" -t "kiln-wl-$1" "${@:2}" "$W/ctx$1"; }
buildah_cold() { B rm -a >/dev/null 2>&1 || true; B rmi -af >/dev/null 2>&1 || true; B pull -q --tls-verify=false "$BASE" >/dev/null; }

# ---------------------------------------------------------------------------------------------
# kiln's own view (--progress plain, with step timings): the multi-stage cold and no-op, the
# 5,000-file no-op and one-file-changed; and one 5,000-file no-op without -o. Printed to stderr.
kiln_views() {
  local f t0 t1
  kiln_plain() { "$KILN" --root "$KROOT" build --progress plain -f "$W/df/$1.kiln" -o "type=oci,dest=$W/out/kiln-$1,tar=false" "$W/ctx$1"; }
  kiln_plain 1 > "$W/kiln-1cold.plain" 2>&1 || true   # (workloads 2 and 3 pruned the root)
  kiln_plain 1 > "$W/kiln-1noop.plain" 2>&1 || true
  kiln_plain 3 > "$W/kiln-3noop.plain" 2>&1 || true
  change_one; kiln_plain 3 > "$W/kiln-3one.plain" 2>&1 || true
  t0=$(date +%s%N); "$KILN" --root "$KROOT" build --progress quiet -f "$W/df/3.kiln" "$W/ctx3" >/dev/null 2>&1 || true; t1=$(date +%s%N)
  for f in kiln-1cold kiln-1noop kiln-3noop kiln-3one; do { echo "---- $f (--progress plain)"; cat "$W/$f.plain"; } >&2; done
  echo "---- kiln no-op rebuild of workload 3 without -o: $(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f", (b - a) / 1e9}') s (one run)" >&2
}

change=0
change_one() { change=$((change + 1)); echo "changed $change $(date +%s%N)" >> "$W/ctx3/d07/f007.txt"; }
for b in "${builders[@]}"; do
  log "builder: $b"
  if [[ " $WORKLOADS " == *" 1 "* ]]; then
    # 1. multi-stage: cold, then no-op rebuild (one untimed warm-up build first).
    measure "$b.1cold" "${b}_cold 1" "${b}_build 1"
    "${b}_build" 1 > /dev/null 2>&1 || true
    measure "$b.1noop" ":" "${b}_build 1"
    if [[ $b == kiln ]]; then measure "kiln.1fresh" "rm -rf $W/kiln-fresh $W/out/kiln-fresh" "kiln_fresh"; fi
  fi
  if [[ " $WORKLOADS " == *" 2 "* ]]; then
    # 2. three 2 s stages, cold; and again with --no-cache on a warm root/store (base local everywhere).
    measure "$b.2cold" "${b}_cold 2" "${b}_build 2"
    measure "$b.2nc" ":" "${b}_build 2 --no-cache"
  fi
  if [[ " $WORKLOADS " == *" 3 "* ]]; then
    # 3. 5,000-file context: cold, no-op, one changed file.
    measure "$b.3cold" "${b}_cold 3" "${b}_build 3"
    "${b}_build" 3 > /dev/null 2>&1 || true
    measure "$b.3noop" ":" "${b}_build 3"
    measure "$b.3one" "change_one" "${b}_build 3"
    if [[ $b == kiln ]]; then kiln_views; fi
  fi
  if [[ " $WORKLOADS " == *" 4 "* ]]; then
    # 4. 1 GiB COPY: cold, its no-op rebuild (then freed, for the disk's sake); kiln also with
    #    compression=zstd, and its peak memory (max RSS of the gzip cold build, /usr/bin/time).
    measure "$b.4cold" "${b}_cold 4" "${b}_build 4" "$BIG_RUNS"
    measure "$b.4noop" ":" "${b}_build 4"
    if [[ $b == kiln ]]; then
      measure "kiln.4zstd" "kiln_cold 4" "kiln_build_zstd 4" "$BIG_RUNS"
      kiln_cold 4
      /usr/bin/time -f %M -o "$W/kiln-4.rss" "$KILN" --root "$KROOT" build --progress quiet \
        -f "$W/df/4.kiln" -o "type=oci,dest=$W/out/kiln-4,tar=false" "$W/ctx4" >/dev/null 2>&1 || true
      R[kiln.4rss]=$(awk '{printf "%.0f MiB", $1 / 1024}' "$W/kiln-4.rss")
    fi
    "${b}_cold" 4 >/dev/null 2>&1 || true
  fi
done

# ---------------------------------------------------------------------------------------------
ratio() { # kiln / peer
  local k=${R[kiln.$1]:-} p=${R[$2.$1]:-}
  [[ -z $k || -z $p || $k == fail || $p == fail ]] && { echo "–"; return; }
  awk -v a="$k" -v b="$p" 'BEGIN {printf "%.2f", a / b}'
}
cell() { local v=${R[$1.$2]:-}; [[ -z $v ]] && echo "–" || echo "$v"; }
rows=("1cold|multi-stage, cold" "1fresh|multi-stage, cold, fresh root (kiln pulls its base)" "1noop|multi-stage, no-op rebuild" "2cold|3 × \`sleep 2\` stages, cold"
      "2nc|3 × \`sleep 2\` stages, --no-cache (warm store)"
      "3cold|5,000 files, cold" "3noop|5,000 files, no-op rebuild" "3one|5,000 files, one file changed")
rows+=("4cold|1 GiB COPY, cold (gzip)" "4zstd|1 GiB COPY, cold, compression=zstd" "4noop|1 GiB COPY, no-op rebuild")
echo
echo "| workload | kiln (s) | BuildKit (s) | buildah (s) | kiln / BuildKit | kiln / buildah |"
echo "|---|---:|---:|---:|---:|---:|"
for r in "${rows[@]}"; do
  k=${r%%|*}; name=${r#*|}
  [[ " $WORKLOADS " == *" ${k:0:1} "* ]] || continue
  printf '| %s | %s | %s | %s | %s | %s |\n' "$name" "$(cell kiln "$k")" "$(cell buildkit "$k")" \
    "$(cell buildah "$k")" "$(ratio "$k" buildkit)" "$(ratio "$k" buildah)"
done
[[ -n ${R[kiln.4rss]:-} ]] && echo "kiln's peak memory building and exporting the 1 GiB COPY (gzip): ${R[kiln.4rss]} (max RSS)"
echo
echo "$(date -u '+%F %H:%M UTC'), $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg);" \
  "kiln at $(git -C "$repo" describe --always --dirty 2>/dev/null || echo '?')"
echo "median of $RUNS runs (1 GiB: $BIG_RUNS); kiln $("$KILN" --version | awk '{print $2}') default --jobs," \
  "-o type=oci,tar=false; BuildKit: Docker ${BK_VERSION:-–}, --network host, image store;" \
  "buildah ${BUILDAH_VERSION:-–} --isolation=chroot --layers --jobs $JOBS, overlay"
echo
echo "every run (s):"
for b in "${builders[@]}"; do
  for r in "${rows[@]}"; do
    k=${r%%|*}
    if [[ " $WORKLOADS " == *" ${k:0:1} "* ]]; then echo "  $b.$k: ${ALL[$b.$k]:-–}"; fi
  done
done
