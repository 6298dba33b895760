#!/usr/bin/env bash
# Benchmarks live moves (`docker migrate --live`) between two local engines
# with CRIU, for containers holding SIZES MiB of process memory (a shell
# variable), against an rsync daemon copying a checkpoint of the same
# container over the same link. Prints a Markdown table.
#
#   tests/bench/live.sh [SIZES_MIB...]      (root; make plugin cli first)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
SIZES=("$@"); [ ${#SIZES[@]} -gt 0 ] || SIZES=(16 256 1024)
P=${CARGO_BENCH_PREFIX:-cgbl}
BASE=/var/tmp/$P
hosts() { "$top/tests/hosts.sh" "$@"; }

command -v rsync >/dev/null || { apt-get update -q >/dev/null; apt-get install -y -q rsync >/dev/null; }
command -v jq >/dev/null || { apt-get update -q >/dev/null; apt-get install -y -q jq >/dev/null; }
trap 'kill ${rsyncd:-} 2>/dev/null || true; hosts down -p $P >/dev/null 2>&1 || true' EXIT
CARGO_CRIU_PATH=$("$top/tests/engines.sh" criu) hosts up -p $P -n 2 >&2
export DOCKER_CONFIG=$BASE/config
D1="docker --context $P-h1"
D2="docker --context $P-h2"
img=cargo-test/busybox
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
log() { printf '[bench] %s\n' "$*" >&2; }
ms() { awk -v n="$1" 'BEGIN { printf "%.0f ms", n / 1e6 }'; }
mbps() { awk -v b="$1" -v s="$2" 'BEGIN { printf "%.1f", b / 1048576 / s }'; }

# The rsync daemon on h1 serves h1's containers directory; h2 pulls from it.
cat >"$BASE/rsyncd.conf" <<CONF
uid = root
gid = root
use chroot = no
[ctr]
path = $BASE/h1/docker/containers
read only = yes
CONF
hosts exec -p $P h1 rsync --daemon --no-detach --address=198.18.0.1 --port=8731 --config="$BASE/rsyncd.conf" &
rsyncd=$!
for _ in $(seq 100); do hosts exec -p $P h2 rsync rsync://198.18.0.1:8731/ >/dev/null 2>&1 && break; sleep 0.1; done

echo "| memory | resident | checkpoint | transfer | restore | downtime | image size | transfer MiB/s | rsync MiB/s | ratio | docker checkpoint create |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
for mib in "${SIZES[@]}"; do
	c=mem$mib
	# The shell itself holds the memory: a variable of MIB MiB of 'a's.
	$D1 run -d --name $c $img sh -c "x=\$(head -c $((mib << 20)) /dev/zero | tr '\\0' a); echo ready > /tmp/ready; sleep 100000" >/dev/null
	until $D1 exec $c test -f /tmp/ready 2>/dev/null; do sleep 0.5; done
	rss=$($D1 exec $c awk '/VmRSS/ { printf "%.0f MiB", $2 / 1024 }' /proc/1/status)

	# Baseline: a checkpoint of the same container, left running, pulled by rsync.
	id=$($D1 inspect -f '{{.Id}}' $c)
	t0=$(now); $D1 checkpoint create --leave-running $c base >/dev/null; tcp=$(secs "$t0" "$(now)")
	bytes=$(du -sb "$BASE/h1/docker/containers/$id/checkpoints/base" | cut -f1)
	rm -rf "$BASE/rsync-dst"; mkdir -p "$BASE/rsync-dst"; sync; echo 3 >/proc/sys/vm/drop_caches
	t0=$(now)
	hosts exec -p $P h2 rsync -a --whole-file "rsync://198.18.0.1:8731/ctr/$id/checkpoints/base/" "$BASE/rsync-dst/"
	trs=$(secs "$t0" "$(now)")
	$D1 checkpoint rm $c base; rm -rf "$BASE/rsync-dst"

	log "live move of $mib MiB"
	j=$($D1 migrate $c --to $P-h2 --live --format json)
	ph() { jq -r --arg n "$1" ".phases[] | select(.name == \$n) | .$2" <<<"$j"; }
	tx=$(ph transfer duration_ns)
	txs=$(awk -v n="$tx" 'BEGIN { printf "%.3f", n / 1e9 }')
	printf '| %s MiB | %s | %s | %s | %s | %s | %s (%.1f MiB rsynced) | %s | %s | %s | %s s |\n' \
		"$mib" "$rss" "$(ms "$(ph checkpoint duration_ns)")" "$(ms "$tx")" "$(ms "$(ph restore duration_ns)")" \
		"$(ms "$(jq -r .downtime_ns <<<"$j")")" "$(ph checkpoint detail)" "$(awk -v b="$bytes" 'BEGIN { print b / 1048576 }')" \
		"$(ph transfer detail)" "$(mbps "$bytes" "$trs")" \
		"$(awk -v b="$bytes" -v r="$trs" -v t="$txs" 'BEGIN { printf "%.2f", (r) / t }')" "$tcp"
	$D2 rm -f $c >/dev/null; $D1 rm -f $c >/dev/null 2>&1 || true
done
