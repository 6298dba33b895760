#!/usr/bin/env bash
# Benchmarks cargo's federated volumes on two local engines against
# baselines run side by side on the same link and data:
#   1. background copy of many small files and of one large file, against
#      an rsync daemon;
#   2. time to first byte of a part of a 1 GiB file not copied yet;
#   3. reads of data already local through the federated mount, against
#      reading the same file natively.
# Prints a Markdown table of the figures and their ratios.
#
#   tests/bench/federation.sh [SMALL_FILES] [LARGE_MB]      (root; make plugin first)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
SMALL=${1:-20000}
LARGE_MB=${2:-1024}
P=cgbench
BASE=/var/tmp/$P
hosts() { "$top/tests/hosts.sh" "$@"; }

command -v rsync >/dev/null || { apt-get update -q >/dev/null; apt-get install -y -q rsync >/dev/null; }
trap 'hosts down -p $P >/dev/null 2>&1 || true' EXIT
hosts up -p $P -n 2 >&2
export DOCKER_CONFIG=$BASE/config
D1="docker --context $P-h1"
D2="docker --context $P-h2"
img=cargo-test/busybox
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
log() { printf '[bench] %s\n' "$*" >&2; }

# Data on h1: many small files (1-8 KiB) and one large file.
$D1 volume create -d cargo small >/dev/null
$D1 volume create -d cargo large >/dev/null
log "writing $SMALL small files and a $LARGE_MB MiB file"
$D1 run --rm -v small:/data $img sh -c "i=0; while [ \$i -lt $SMALL ]; do d=/data/d\$((i/1000)); mkdir -p \$d; head -c \$((1024 + (i*7919) % 7168)) /dev/urandom > \$d/f\$i; i=\$((i+1)); done"
$D1 run --rm -v large:/data $img sh -c "head -c $((LARGE_MB << 20)) /dev/urandom > /data/big"
voldir() { echo "$BASE/$1/docker/plugins/cargo/volumes/$2/data"; }
bytes_of() { du -sb --apparent-size "$(voldir h1 "$1")" | cut -f1; }

# Baseline: an rsync daemon on h1 serving the same directories, pulled
# from h2 (uncompressed, unencrypted: rsync's fastest mode).
cat >"$BASE/rsyncd.conf" <<EOF
uid = root
gid = root
use chroot = no
[small]
path = $(voldir h1 small)
read only = yes
[large]
path = $(voldir h1 large)
read only = yes
EOF
hosts exec -p $P h1 rsync --daemon --no-detach --address=198.18.0.1 --port=8730 --config="$BASE/rsyncd.conf" &
rsyncd=$!
for _ in $(seq 100); do hosts exec -p $P h2 rsync rsync://198.18.0.1:8730/ >/dev/null 2>&1 && break; sleep 0.1; done

# rsync_pull VOL [OPTIONS]: rsync's default writes each file to a temporary
# name and renames it, as cargo does; --inplace writes straight into place
# (faster, but a cut transfer leaves partial files that look whole).
rsync_pull() {
	local vol=$1 dst=$BASE/rsync-dst/$1; shift
	rm -rf "$dst"; mkdir -p "$dst"; sync; echo 3 >/proc/sys/vm/drop_caches
	local t0; t0=$(now)
	hosts exec -p $P h2 rsync -a --whole-file "$@" "rsync://198.18.0.1:8730/$vol/" "$dst/"
	secs "$t0" "$(now)"
}

# cargo: export on h1, federate on h2, and time the copy by the target's
# own completed_at, polling gently: a docker CLI call costs CPU the copy
# needs on a small machine.
cargo_pull() {
	local vol=$1
	$D2 volume rm -f "$vol" >/dev/null 2>&1 || true
	$D1 volume rm -f "$vol.x" >/dev/null 2>&1 || true
	$D1 volume create -d cargo -o export="$vol" -o to=h2 "$vol.x" >/dev/null
	local ticket; ticket=$($D1 volume inspect -f '{{.Status.ticket}}' "$vol.x")
	sync; echo 3 >/proc/sys/vm/drop_caches
	local t0; t0=$(now)
	$D2 volume create -d cargo -o from="$ticket" "$vol" >/dev/null
	until [ "$($D2 volume inspect -f '{{.Status.state}}' "$vol")" = complete ]; do sleep 0.5; done
	local done; done=$($D2 volume inspect -f '{{.Status.completed_at}}' "$vol")
	secs "$t0" "$(date -d "$done" +%s.%N)"
}

row() { printf '| %s | %s | %s | %s |\n' "$@"; }
mbps() { awk -v b="$1" -v s="$2" 'BEGIN { printf "%.1f", b / 1048576 / s }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

declare -A R I C
for vol in small large; do
	log "rsync daemon: $vol"; R[$vol]=$(rsync_pull $vol)
	log "rsync daemon --inplace: $vol"; I[$vol]=$(rsync_pull $vol --inplace)
	log "cargo: $vol"; C[$vol]=$(cargo_pull $vol)
done
kill $rsyncd 2>/dev/null || true

# Time to first byte of a part of the large file not copied yet: a new
# export, a container holding the volume, and reads of the file's last
# chunks (the background copy goes front to back) through the mount as
# the engine sees it. The link is held to 1 Gbit/s with a shallow queue
# (5 ms), so the copy lasts past the container's start and bulk traffic
# does not queue far ahead of the reads.
log "time to first byte"
$D2 volume rm -f large >/dev/null; $D1 volume rm -f large.x >/dev/null
hosts exec -p $P h1 tc qdisc replace dev eth0 root tbf rate 1gbit burst 512k latency 5ms
$D1 volume create -d cargo -o export=large -o to=h2 large.x >/dev/null
$D2 volume create -d cargo -o from="$($D1 volume inspect -f '{{.Status.ticket}}' large.x)" large >/dev/null
$D2 run -d --name holder -v large:/data $img sleep 3600 >/dev/null
mp=$(hosts exec -p $P h2 sh -c 'ls -d /var/lib/docker/plugins/*/propagated-mount/large')
ttfb=$(hosts exec -p $P h2 python3 - "$mp/big" "$LARGE_MB" <<'EOF'
import os, statistics, sys, time
path, mb = sys.argv[1], int(sys.argv[2])
samples = []
for k in range(5):
    off = (mb - 1 - 4 * k) << 20   # the last five 4 MiB chunks
    fd = os.open(path, os.O_RDONLY)
    t = time.perf_counter()
    os.pread(fd, 1, off)
    samples.append((time.perf_counter() - t) * 1000)
    os.close(fd)
print(f"{statistics.median(samples):.1f} {min(samples):.1f} {max(samples):.1f}")
EOF
)
copied_then=$($D2 volume inspect -f '{{.Status.bytes_copied}}' large)
hosts exec -p $P h1 tc qdisc del dev eth0 root
until [ "$($D2 volume inspect -f '{{.Status.state}}' large)" = complete ]; do sleep 0.5; done

# Reads of local data through the federated mount (overlay over the FUSE
# view, kernel passthrough) against the same file read natively.
log "local reads"
read_mbs() {
	hosts exec -p $P h2 python3 - "$1" <<'EOF'
import os, sys, time
path = sys.argv[1]
with open("/proc/sys/vm/drop_caches", "w") as f:
    f.write("3")
fd = os.open(path, os.O_RDONLY)
buf = bytearray(1 << 20)
t, n = time.perf_counter(), 0
while True:
    k = os.readv(fd, [buf])
    if k == 0:
        break
    n += k
print(f"{n / (time.perf_counter() - t) / 1048576:.0f}")
EOF
}
replica=/var/lib/docker/plugins/cargo/volumes/large/data/big
native=$(read_mbs $replica)
fed=$(read_mbs "$mp/big")
native2=$(read_mbs $replica)
fed2=$(read_mbs "$mp/big")
$D2 rm -f holder >/dev/null

sb=$(bytes_of small); lb=$(bytes_of large)
echo
echo "Two engines on one machine ($(nproc) cores), linked by a veth bridge; $(date -u +%F)."
echo
row5() { printf '| %s | %s | %s | %s | %s |\n' "$@"; }
row5 "copy" "rsync daemon" "rsync daemon --inplace" "cargo" "cargo speed / rsync (/ --inplace)"
row5 "---" "---" "---" "---" "---"
for vol in small large; do
	b=$sb; what="$SMALL small files ($(mbps "$sb" 1) MiB)"
	[ $vol = large ] && { b=$lb; what="one $LARGE_MB MiB file"; }
	row5 "$what" "$(printf %.2f "${R[$vol]}") s, $(mbps "$b" "${R[$vol]}") MiB/s" \
		"$(printf %.2f "${I[$vol]}") s, $(mbps "$b" "${I[$vol]}") MiB/s" \
		"$(printf %.2f "${C[$vol]}") s, $(mbps "$b" "${C[$vol]}") MiB/s" \
		"$(ratio "${R[$vol]}" "${C[$vol]}") ($(ratio "${I[$vol]}" "${C[$vol]}"))"
done
echo
read -r med lo hi <<<"$ttfb"
echo "Time to first byte of the last chunks of a $LARGE_MB MiB file not copied yet, link held to 1 Gbit/s (the copy had $(mbps "$(printf %.0f "$copied_then")" 1) MiB when asked): median $med ms (min $lo, max $hi, 5 reads)."
echo
row "read of local data, cold cache" "native" "federated mount" "federated / native"
row "---" "---" "---" "---"
row "$LARGE_MB MiB file, run 1" "$native MiB/s" "$fed MiB/s" "$(ratio "$fed" "$native")"
row "$LARGE_MB MiB file, run 2" "$native2 MiB/s" "$fed2 MiB/s" "$(ratio "$fed2" "$native2")"
