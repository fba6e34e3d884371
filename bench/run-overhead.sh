#!/usr/bin/env bash
# Per-RUN overhead of `RUN true` for each of kiln's runtimes (builtin, runc, crun when it works):
# a build FROM a busybox base with N distinct `RUN true && echo i > /dev/null` steps, --no-cache,
# minus a baseline build of the same base with no RUN step, divided by N; median of RUNS runs.
# Prints a markdown table. Optional: PEER=1 also measures BuildKit (Docker 20.10's builder).
#
#   bench/run-overhead.sh            # N=20 RUNS=3
#   N=50 RUNS=5 PEER=1 bench/run-overhead.sh
set -euo pipefail

N=${N:-20}
RUNS=${RUNS:-3}
PEER=${PEER:-0}
repo=$(cd "$(dirname "$0")/.." && pwd)
conformance=${CONFORMANCE:-$repo/../shared/conformance}
W=$(mktemp -d /tmp/kiln-bench.XXXXXX)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Fixtures: a registry with the busybox base (the conformance suite's setup.sh).
REG=127.0.0.1:$(free_port)
HTTP=127.0.0.1:$(free_port)
BASE=$REG/busybox:1.35
export CONF_BASE=$W/base
here=$conformance   # setup.sh serves $here/http
# shellcheck source=/dev/null
source "$conformance/setup.sh"
trap 'cleanup; rm -rf "$W"' EXIT
start_fixtures "$W" >&2

# kiln, release build.
(cd "$repo" && cargo build --release -q) >&2
target=$(cd "$repo" && cargo metadata --format-version 1 --no-deps | jq -r .target_directory)
KILN=$target/release/kiln

# Build contexts: the baseline (FROM only) and N distinct RUN steps.
mkdir -p "$W/ctx0" "$W/ctxN"
echo "FROM $BASE" > "$W/ctx0/Dockerfile"
{ echo "FROM $BASE"; for i in $(seq 1 "$N"); do echo "RUN true && echo $i > /dev/null"; done; } > "$W/ctxN/Dockerfile"

have_hyperfine=0
command -v hyperfine >/dev/null || apt-get install -y -qq hyperfine >/dev/null 2>&1 || true
command -v hyperfine >/dev/null && have_hyperfine=1

# median_ms NAME CMD : median wall time of CMD in ms over $RUNS runs (after one warm-up run).
median_ms() {
  local name=$1 cmd=$2
  if ((have_hyperfine)); then
    hyperfine -N --style none --warmup 1 --runs "$RUNS" --export-json "$W/$name.json" "$cmd" >/dev/null 2>&1 \
      || hyperfine --style none --warmup 1 --runs "$RUNS" --export-json "$W/$name.json" "$cmd" >/dev/null
    jq '.results[0].median * 1000' "$W/$name.json"
  else
    bash -c "$cmd" >/dev/null 2>&1
    local i t0 t1 times=()
    for i in $(seq 1 "$RUNS"); do
      t0=$(date +%s%N); bash -c "$cmd" >/dev/null 2>&1; t1=$(date +%s%N)
      times+=($(( (t1 - t0) / 1000 )))
    done
    printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]/1000}'
  fi
}

rows=()
for rt in builtin runc crun; do
  root=$W/root-$rt
  # Does this runtime work here? (crun refuses hybrid cgroup hosts.)
  mkdir -p "$W/probe"; printf 'FROM %s\nRUN true\n' "$BASE" > "$W/probe/Dockerfile"
  if ! "$KILN" --root "$root" build --runtime "$rt" --progress plain -o "type=oci,dest=$W/probe-out,tar=false" "$W/probe" > "$W/probe-$rt.log" 2>&1; then
    reason=$(grep -m1 -iE 'cgroup|error' "$W/probe-$rt.log" | sed 's/^#[0-9]* //' || true)
    echo "skipping $rt: $reason" >&2
    rows+=("| kiln --runtime $rt | – | – | – | skipped: ${reason//|/\\|} |")
    continue
  fi
  b="$KILN --root $root build --runtime $rt --no-cache --progress quiet"
  t0=$(median_ms "$rt-0" "$b -o type=oci,dest=$W/out0-$rt,tar=false $W/ctx0")
  tn=$(median_ms "$rt-n" "$b -o type=oci,dest=$W/outn-$rt,tar=false $W/ctxN")
  per=$(awk -v a="$t0" -v b="$tn" -v n="$N" 'BEGIN {printf "%.1f", (b - a) / n}')
  rows+=("$(printf '| kiln --runtime %s | %.0f | %.0f | **%s** | |' "$rt" "$t0" "$tn" "$per")")
done

if [[ $PEER == 1 ]]; then
  # BuildKit as built into Docker 20.10, FROM the same busybox imported into its image store.
  peer_sock=${KILN_PEER_DOCKER:-/tmp/kiln-peer-docker}/docker.sock
  started_peer=0
  DOCKER_HOST=unix://$peer_sock /usr/bin/docker info >/dev/null 2>&1 || started_peer=1
  eval "$("$conformance/../peers/dockerd.sh")"
  tar -C "$W/base.bundle/rootfs" -c . | /usr/bin/docker import - kiln-bench-busybox:1.35 >/dev/null
  sed "s#^FROM .*#FROM kiln-bench-busybox:1.35#" "$W/ctx0/Dockerfile" > "$W/ctx0/Dockerfile.docker"
  sed "s#^FROM .*#FROM kiln-bench-busybox:1.35#" "$W/ctxN/Dockerfile" > "$W/ctxN/Dockerfile.docker"
  d="env DOCKER_BUILDKIT=1 DOCKER_HOST=$DOCKER_HOST /usr/bin/docker build -q --network host --no-cache"
  t0=$(median_ms docker-0 "$d -f $W/ctx0/Dockerfile.docker -t kiln-bench:0 $W/ctx0")
  tn=$(median_ms docker-n "$d -f $W/ctxN/Dockerfile.docker -t kiln-bench:n $W/ctxN")
  per=$(awk -v a="$t0" -v b="$tn" -v n="$N" 'BEGIN {printf "%.1f", (b - a) / n}')
  rows+=("$(printf '| BuildKit (Docker %s, runc) | %.0f | %.0f | **%s** | peer |' \
    "$(/usr/bin/docker version -f '{{.Server.Version}}')" "$t0" "$tn" "$per")")
  # Leave the peer as it was found: stop it only if this script started it.
  ((started_peer)) && "$conformance/../peers/dockerd.sh" stop
fi

echo "| builder | build, 0 RUN (ms) | build, $N RUN (ms) | per RUN (ms) | note |"
echo "|---|---:|---:|---:|---|"
printf '%s\n' "${rows[@]}"
echo
echo "median of $RUNS runs each ($([[ $have_hyperfine == 1 ]] && echo hyperfine || echo 'date +%s%N')), --no-cache, N=$N"
