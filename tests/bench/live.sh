#!/usr/bin/env bash
# Benchmarks live moves (`docker migrate --live`) between two local engines
# with CRIU, for containers whose PID 1 holds SIZES MiB of resident memory,
# against copies of a checkpoint of the same container over the same link:
# an rsync daemon pull, and a raw TCP stream for the link's own rate (tar
# into bash's /dev/tcp, busybox nc into /dev/null on the other end). Prints two Markdown tables: the downtime and
# its parts, then the transfer against the baselines.
#
#   tests/bench/live.sh [SIZES_MIB...]      (root; make plugin cli first)
#
# CARGO_BENCH_RATE (a tc rate, e.g. 1gbit) holds h1's side of the link to
# that rate, for the move and the baselines alike: the checkpoint flows
# from h1 to h2.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
SIZES=("$@"); [ ${#SIZES[@]} -gt 0 ] || SIZES=(16 256 1024)
P=${CARGO_BENCH_PREFIX:-cgbl}
BASE=/var/tmp/$P
hosts() { "$top/tests/hosts.sh" "$@"; }

command -v rsync >/dev/null || { apt-get update -q >/dev/null; apt-get install -y -q rsync >/dev/null; }
command -v jq >/dev/null || { apt-get update -q >/dev/null; apt-get install -y -q jq >/dev/null; }
command -v busybox >/dev/null || { echo "busybox is needed (its nc)" >&2; exit 1; }
trap 'kill ${rsyncd:-} 2>/dev/null || true; hosts down -p $P >/dev/null 2>&1 || true' EXIT
CARGO_CRIU_PATH=$("$top/tests/engines.sh" criu) hosts up -p $P -n 2 >&2
export DOCKER_CONFIG=$BASE/config
D1="docker --context $P-h1"
D2="docker --context $P-h2"
img=cargo-test/busybox
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
log() { printf '[bench %s] %s\n' "$(date +%T)" "$*" >&2; }
ms() { awk -v n="$1" 'BEGIN { printf "%.0f ms", n / 1e6 }'; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
mbps() { awk -v b="$1" -v s="$2" 'BEGIN { printf "%.1f", b / 1048576 / s }'; }
# Bytes from go-units' BytesSize ("259.7MiB"), as the move's detail gives them.
bytesof() { awk 'match($0, /[0-9.]+ ?[KMG]?i?B/) { s = substr($0, RSTART, RLENGTH); n = s + 0
	m = s ~ /GiB/ ? 1073741824 : s ~ /MiB/ ? 1048576 : s ~ /KiB/ ? 1024 : 1; printf "%.0f", n * m; exit }'; }
dropcaches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
vmrss() { $1 exec "$2" awk '/^Name/ { n = $2 } /^VmRSS/ { printf "%.0f MiB (%s)", $2 / 1024, n }' /proc/1/status; }

if [ -n "${CARGO_BENCH_RATE:-}" ]; then
	hosts exec -p $P h1 tc qdisc replace dev eth0 root tbf rate "$CARGO_BENCH_RATE" burst 512k latency 5ms
	log "h1's side of the link held to $CARGO_BENCH_RATE"
fi

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

rsyncpull() { # SRC_DIR_UNDER_CONTAINERS -> seconds
	rm -rf "$BASE/copy-dst"; mkdir -p "$BASE/copy-dst"
	local t0; t0=$(now)
	hosts exec -p $P h2 rsync -a --whole-file "rsync://198.18.0.1:8731/ctr/$1/" "$BASE/copy-dst/"
	secs "$t0" "$(now)"; rm -rf "$BASE/copy-dst"
}
tcpcopy() { # DIR -> seconds: tar on h1 into a TCP connection, busybox nc on h2 into /dev/null
	hosts exec -p $P h2 sh -c "busybox nc -l -p 8732 >/dev/null" &
	local l=$! t0
	for _ in $(seq 100); do grep -q ':221C 00000000:0000 0A' <(hosts exec -p $P h2 cat /proc/net/tcp) && break; sleep 0.05; done
	t0=$(now)
	hosts exec -p $P h1 bash -c "tar -C '$1' -cf - . >/dev/tcp/198.18.0.2/8732"
	wait $l
	secs "$t0" "$(now)"
}

down=() thru=()
for mib in "${SIZES[@]}"; do
	c=mem$mib
	# PID 1, a shell, holds MIB MiB of incompressible text in a variable (3/4
	# of MIB MiB of random bytes, base64: MIB MiB plus a newline every 76
	# characters). The loop keeps the shell itself alive: busybox sh execs
	# the last command of -c, so a trailing `sleep` would replace it and drop
	# the variable.
	log "$mib MiB: filling"
	$D1 run -d --name $c $img sh -c "x=\$(head -c $((mib * 786432)) /dev/urandom | base64); echo ready >/tmp/ready; while :; do sleep 3600; done" >/dev/null
	until $D1 exec $c test -f /tmp/ready 2>/dev/null; do sleep 0.5; done
	rss=$(vmrss "$D1" $c)
	log "$mib MiB: resident $rss"

	# Baselines: a checkpoint of the same container, left running, copied
	# from h1 to h2. rsync warm: right after it was written, as the move's
	# transfer reads its checkpoint; cold: caches dropped first. Raw TCP:
	# the link's rate, the checkpoint in the cache (the cold pull read it),
	# nothing written on h2.
	id=$($D1 inspect -f '{{.Id}}' $c)
	t0=$(now); $D1 checkpoint create --leave-running $c base >/dev/null; tcp=$(secs "$t0" "$(now)")
	dir=$BASE/h1/docker/containers/$id/checkpoints/base
	bytes=$(du -sb "$dir" | cut -f1)
	trw=$(rsyncpull "$id/checkpoints/base")
	dropcaches; trs=$(rsyncpull "$id/checkpoints/base")
	tnc=$(tcpcopy "$dir")
	$D1 checkpoint rm $c base
	log "$mib MiB: checkpoint $(mib "$bytes") in $tcp s; rsync warm $trw s, cold $trs s; raw TCP $tnc s"

	log "$mib MiB: live move"
	t0=$(now)
	# --progress json puts one event per line on stderr: on a failure they
	# tell which phase failed and how long it had run.
	if j=$($D1 migrate $c --to $P-h2 --live --format json --progress json 2>"$BASE/move.err"); then
		wall=$(secs "$t0" "$(now)")
		ph() { jq -r --arg n "$1" ".phases[] | select(.name == \$n) | .$2 // empty" <<<"$j"; }
		ck=$(ph checkpoint duration_ns) tx=$(ph transfer duration_ns) rs=$(ph restore duration_ns)
		mid=$(jq -r '[.phases[] | select(.name == "layer" or .name == "volumes" or .name == "create") | .duration_ns] | add' <<<"$j")
		dt=$(jq -r .downtime_ns <<<"$j")
		cbytes=$(ph checkpoint detail | bytesof)
		# The CRIU part of the restore, from the log CRIU leaves in the
		# target task's directory; it also proves a restore happened (no
		# fresh start).
		nid=$($D2 inspect -f '{{.Id}}' $c)
		rlog=$BASE/h2/docker/containerd/daemon/io.containerd.runtime.v2.task/moby/$nid/restore.log
		criu="none: no restore.log"
		if grep -q 'Restore finished successfully' "$rlog" 2>/dev/null; then
			criu=$(awk -F'[()]' '/^\(/ { t = $2 } END { printf "%.0f ms", t * 1000 }' "$rlog")
		fi
		rss2=$(vmrss "$D2" $c)
		log "$mib MiB: moved in $wall s; on h2 PID 1 resident $rss2; CRIU restore $criu"
		down+=("| $mib MiB | $rss → $rss2 | $(ph checkpoint detail) | $(ms "$ck") | $(ms "$mid") | $(ms "$tx") | $(ms "$rs") ($criu CRIU) | $(ms "$dt") | $wall s |")
		txs=$(awk -v n="$tx" 'BEGIN { printf "%.3f", n / 1e9 }')
		thru+=("| $mib MiB | $(mib "$cbytes") in $(ms "$tx"): $(mbps "$cbytes" "$txs") | $(mib "$bytes") in ${trw} s: $(mbps "$bytes" "$trw") | ${trs} s: $(mbps "$bytes" "$trs") | ${tnc} s: $(mbps "$bytes" "$tnc") | $(awk -v a="$cbytes" -v t="$txs" -v b="$bytes" -v w="$trw" -v r="$trs" 'BEGIN { printf "%.2f (%.2f)", (a / t) / (b / r), (a / t) / (b / w) }') | $tcp s |")
	else
		wall=$(secs "$t0" "$(now)")
		err=$(grep -v '^{' "$BASE/move.err" | tr '\n' ' ')
		# Each phase done, then the one that failed: from its start to the
		# next event (the rollback's notice) or the end of the command.
		phases=$(jq -rs --arg fin "$(date -u +%Y-%m-%dT%H:%M:%S.%NZ)" '
			def t: sub("\\.[0-9]+"; "") | fromdateiso8601;
			def frac: (capture("\\.(?<f>[0-9]+)") // {f: "0"}).f | ("0." + .) | tonumber;
			def ts: (t + frac);
			. as $e | [range(0; length) as $i | $e[$i] |
				if .event == "done" then "\(.phase) \(.duration_ns / 1e6 | round) ms"
				elif .event == "start" and ([$e[$i + 1:][] | select(.event == "done" and .phase == $e[$i].phase)] | length) == 0
				then "\(.phase) failed after \(((($e[$i + 1].time // $fin) | ts) - (.time | ts)) * 1000 | round) ms"
				else empty end] | join(", ")' < <(grep '^{' "$BASE/move.err"))
		log "$mib MiB: the move failed after $wall s: $phases; $err"
		down+=("| $mib MiB | $rss | failed after $wall s ($phases): $(cut -c1-300 <<<"$err") | | | | | | |")
		thru+=("| $mib MiB | failed | $(mib "$bytes") in ${trw} s: $(mbps "$bytes" "$trw") | ${trs} s: $(mbps "$bytes" "$trs") | ${tnc} s: $(mbps "$bytes" "$tnc") | | $tcp s |")
	fi
	$D2 rm -f $c >/dev/null 2>&1 || true; $D1 rm -f $c >/dev/null 2>&1 || true
done

echo "| memory | PID 1 resident, h1 → h2 | checkpoint images | checkpoint | layer + volumes + create | transfer | restore | downtime | whole move |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
printf '%s\n' "${down[@]}"
echo
echo "| memory | move's transfer, MiB/s | rsync daemon, warm, MiB/s | rsync daemon, cold, MiB/s | raw TCP to /dev/null, cached, MiB/s | transfer / rsync cold (/ warm) | docker checkpoint create --leave-running |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
printf '%s\n' "${thru[@]}"
