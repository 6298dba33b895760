#!/usr/bin/env bash
# Benchmarks a move's downtime (from the source container's stop to the
# target container running) against baselines run side by side in the same
# invocation, on the same two local engines, link and data:
#   cargo     `docker migrate C --to h2` with a cargo volume;
#   naive     stop, an rsync daemon on h1 pulled from h2 (--whole-file), then
#             create and start of the same container on h2 with a local volume;
#   two-pass  as LXD does: one rsync pass while the container runs, then stop,
#             the delta pass, create and start;
#   floor     the engine's own create + start of the same container on h2
#             (image present), the least a move can cost.
# The container exits at once on SIGTERM, so the stop costs little and the
# floor is what an ideal move would add. Every case runs REPEAT times, each
# method in turn, with the page cache dropped before each run; figures are
# medians (min–max). Prints Markdown tables with the ratios and writes PNG
# charts (gnuplot) to CHARTS.
#
#   tests/bench/downtime.sh [SIZES_MIB...]   (root; make plugin cli first)
#   tests/bench/downtime.sh --report RESULTS (the tables and charts again from
#                                             a run's CHARTS/downtime-results.txt)
#
# Cases: one file of each size (default 1 16 256 1024 MiB, and 4096 when the
# disk has room for it), then 10 files against FILES small files of the same
# total size.
#   CARGO_BENCH_FILES   the many-files case (default 200000; the issue's goal is 1000000)
#   CARGO_BENCH_REPEAT  runs of each case and method (default 3)
#   CARGO_BENCH_CHARTS  where the PNGs go (default docs/perf); "" for none
#   CARGO_BENCH_PREFIX  host prefix for tests/hosts.sh (default cgdown)
#   CARGO_BUILD         the build holding plugin/ and docker-migrate (default build)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
P=${CARGO_BENCH_PREFIX:-cgdown}
BASE=/var/tmp/$P
FILES=${CARGO_BENCH_FILES:-200000}
REPEAT=${CARGO_BENCH_REPEAT:-3}
CHARTS=${CARGO_BENCH_CHARTS-$top/docs/perf}
REPORT=
if [ "${1:-}" = --report ]; then REPORT=$2; shift 2; fi
SIZES=("$@")
if [ ${#SIZES[@]} -eq 0 ]; then
	SIZES=(1 16 256 1024)
	# 4 GiB lives five times over at once: the source file, h1's cargo and
	# local volumes, h2's two copies.
	avail=$(df -k --output=avail /var/tmp | tail -1)
	[ "$avail" -gt $((6 * 4096 * 1024)) ] && SIZES+=(4096)
fi
hosts() { "$top/tests/hosts.sh" "$@"; }

for t in rsync jq gnuplot curl python3; do
	command -v $t >/dev/null && continue
	case $t in gnuplot) pkg=gnuplot-nox ;; *) pkg=$t ;; esac
	apt-get update -q >/dev/null; apt-get install -y -q $pkg >/dev/null
done
work=$(mktemp -d /tmp/cargo-downtime.XXXXXX)
log() { printf '[bench %s] %s\n' "$(date +%T)" "$*" >&2; }
label() {
	case $1 in
	size*) local m=${1#size}; [ "$m" -ge 1024 ] && echo "1 file, $((m / 1024)) GiB" || echo "1 file, $m MiB" ;;
	files*) printf "%'d files, %s MiB" "${1#files}" "$((many_bytes >> 20))" ;;
	esac
}
# Results: one line "CASE METHOD METRIC SECONDS" per run, and "meta - KEY
# VALUE..." for what the report needs besides.
if [ -n "$REPORT" ]; then
	trap 'rm -rf "$work"' EXIT
	res=$REPORT
	meta() { awk -v k="$1" '$1 == "meta" && $3 == k { $1 = $2 = $3 = ""; sub(/^ +/, ""); print }' "$res"; }
	read -r -a SIZES <<<"$(meta sizes)"
	FILES=$(meta files) REPEAT=$(meta repeat) many_bytes=$(meta bytes)
else
trap 'kill ${rsyncd:-} 2>/dev/null || true; hosts down -p $P >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
hosts up -p $P -n 2 >&2
export DOCKER_CONFIG=$BASE/config
D1="docker --context $P-h1"
D2="docker --context $P-h2"
img=cargo-test/busybox
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.4f", b - a }'; }
dropcaches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
# The engines' API straight, not the CLI: the baselines then pay for the
# engine's work only, as the move does inside one process.
api() { # HOST METHOD PATH [JSON]
	local s=$BASE/$1/run/docker.sock
	if [ $# -gt 3 ]; then
		curl -sSf --unix-socket "$s" -X "$2" -H 'Content-Type: application/json' -d "$4" "http://engine$3" >/dev/null
	else
		curl -sSf --unix-socket "$s" -X "$2" "http://engine$3" >/dev/null
	fi
}
# PID 1 runs `sleep` in the background and waits, so SIGTERM ends it at
# once (a foreground sleep would hold the trap back for up to a second).
cmd='trap "exit 0" TERM; while :; do sleep 1 & wait $!; done'
spec() { # VOLUME -> the container's create body
	jq -cn --arg img $img --arg cmd "$cmd" --arg bind "$1:/data" \
		'{Image: $img, Cmd: ["sh", "-c", $cmd], HostConfig: {Binds: [$bind]}}'
}
createstart() { api "$1" POST "/containers/create?name=$2" "$(spec "$3")"; api "$1" POST "/containers/$2/start"; }
stop() { api "$1" POST "/containers/$2/stop?t=10"; }

# ------------------------------------------------------------------ data ---
# Sources on the host, bind-mounted read-only into the containers that fill
# the volumes: one random file of the largest size (each case takes its
# head), and a tar of FILES small files (512 B to 2 KiB) with one of 10
# files of the same total size.
src=$BASE/src
mkdir -p "$src"
max=$(printf '%s\n' "${SIZES[@]}" | sort -n | tail -1)
log "writing a $max MiB source file and $FILES small files"
head -c $((max << 20)) /dev/urandom >"$src/big"
python3 - "$src" "$FILES" <<'EOF'
import io, os, sys, tarfile
dst, n = sys.argv[1], int(sys.argv[2])
sizes = [512 + (i * 7919) % 1536 for i in range(n)]
def write(path, sizes, per_dir):
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as t:
        for i, s in enumerate(sizes):
            if i % per_dir == 0:
                d = tarfile.TarInfo(f"d{i // per_dir}"); d.type = tarfile.DIRTYPE; d.mode = 0o755
                t.addfile(d)
            f = tarfile.TarInfo(f"d{i // per_dir}/f{i}"); f.size = s; f.mode = 0o644
            t.addfile(f, io.BytesIO(os.urandom(s)))
write(f"{dst}/many.tar", sizes, 1000)
total = sum(sizes)
write(f"{dst}/ten.tar", [total // 10] * 10, 10)
print(total, file=open(f"{dst}/many.bytes", "w"))
EOF
many_bytes=$(cat "$src/many.bytes")

CASES=()
for s in "${SIZES[@]}"; do CASES+=("size$s"); done
CASES+=(files10 "files$FILES")
fill() { # HOST VOLUME CASE: write the case's data through a container
	local d="docker --context $P-$1" sh
	case $3 in
	size*) sh="head -c $((${3#size} << 20)) /src/big >/data/big" ;;
	files10) sh="tar -xf /src/ten.tar -C /data" ;;
	files*) sh="tar -xf /src/many.tar -C /data" ;;
	esac
	$d run --rm -v "$2:/data" -v "$src:/src:ro" $img sh -c "$sh"
	sync
}

# The rsync daemon on h1 serves h1's local volumes; h2 pulls from it.
cat >"$BASE/rsyncd.conf" <<CONF
uid = root
gid = root
use chroot = no
[vol]
path = $BASE/h1/docker/volumes
read only = yes
CONF
hosts exec -p $P h1 rsync --daemon --no-detach --address=198.18.0.1 --port=8733 --config="$BASE/rsyncd.conf" &
rsyncd=$!
for _ in $(seq 100); do hosts exec -p $P h2 rsync rsync://198.18.0.1:8733/ >/dev/null 2>&1 && break; sleep 0.1; done
pull() { hosts exec -p $P h2 rsync -a --whole-file rsync://198.18.0.1:8733/vol/vr/_data/ /var/lib/docker/volumes/vr/_data/; }

res=$work/results
{
	echo "meta - sizes ${SIZES[*]}"
	echo "meta - files $FILES"
	echo "meta - repeat $REPEAT"
	echo "meta - bytes $many_bytes"
	echo "meta - engine $($D1 version -f '{{.Server.Version}}')"
	echo "meta - date $(date -u +%F)"
	echo "meta - cores $(nproc)"
} >"$res"
put() { echo "$1 $2 $3 $4" >>"$res"; }

run_cargo() { # CASE REP
	$D1 volume create -d cargo vg >/dev/null
	fill h1 vg "$1"
	$D1 run -d --name cg -v vg:/data $img sh -c "$cmd" >/dev/null
	dropcaches
	local j t0; t0=$(now)
	if ! j=$($D1 migrate cg --to $P-h2 --format json --progress json 2>"$work/move.err"); then
		log "$1: the move failed after $(secs "$t0" "$(now)") s: $(grep -v '^{' "$work/move.err" | tr '\n' ' ')"
		$D2 rm -f cg >/dev/null 2>&1 || true; $D1 rm -f cg >/dev/null 2>&1 || true
		$D2 volume rm -f vg >/dev/null 2>&1 || true; $D1 volume rm -f vg.cargo-export vg >/dev/null 2>&1 || true
		return 0
	fi
	put "$1" cargo wall "$(secs "$t0" "$(now)")"
	put "$1" cargo down "$(jq -r '.downtime_ns / 1e9' <<<"$j")"
	for ph in stop layer volumes create start; do
		put "$1" cargo $ph "$(jq -r --arg n $ph '[.phases[] | select(.name == $n) | .duration_ns] | add // 0 | . / 1e9' <<<"$j")"
	done
	jq -r '.phases[] | select(.name == "volumes") | .detail // ""' <<<"$j" >"$work/detail"
	# The background copy must end before the next run, or it competes with it.
	local st
	for _ in $(seq 2400); do
		st=$($D2 volume inspect -f '{{.Status.state}}' vg)
		[ "$st" = complete ] && break
		sleep 0.5
	done
	if [ "$st" = complete ]; then
		put "$1" cargo copy "$(secs "$(date -d "$($D2 volume inspect -f '{{.Status.started_at}}' vg)" +%s.%N)" \
			"$(date -d "$($D2 volume inspect -f '{{.Status.completed_at}}' vg)" +%s.%N)")"
	else
		log "$1: the background copy is $st after 20 minutes"
	fi
	$D2 rm -f cg >/dev/null; $D2 volume rm -f vg >/dev/null
	$D1 rm -f cg >/dev/null
	$D1 volume rm -f vg.cargo-export >/dev/null 2>&1 || true
	$D1 volume rm -f vg $($D1 volume ls -q --filter name=cargo-move-) >/dev/null
}

# naive and two-pass share h1's local volume vr and container rs, made once
# per case; each run starts from an empty volume vr on h2.
run_rsync() { # CASE REP two-pass?
	local m=naive t0 t1 t2 t3
	$D2 volume create vr >/dev/null
	dropcaches
	if [ "$3" = 1 ]; then
		m=twopass
		t0=$(now); pull; put "$1" $m pass1 "$(secs "$t0" "$(now)")"
	fi
	t0=$(now); stop h1 rs
	t1=$(now); pull
	t2=$(now); createstart h2 rs vr
	t3=$(now)
	put "$1" $m down "$(secs "$t0" "$t3")"
	put "$1" $m stop "$(secs "$t0" "$t1")"
	put "$1" $m copy "$(secs "$t1" "$t2")"
	put "$1" $m cs "$(secs "$t2" "$t3")"
	$D2 rm -f rs >/dev/null; $D2 volume rm vr >/dev/null
	api h1 POST /containers/rs/start
}

run_floor() { # CASE REP
	$D2 volume create vf >/dev/null
	dropcaches
	local t0; t0=$(now)
	createstart h2 fl vf
	put "$1" floor cs "$(secs "$t0" "$(now)")"
	$D2 rm -f fl >/dev/null; $D2 volume rm vf >/dev/null
}

for c in "${CASES[@]}"; do
	log "$(label "$c"): filling h1's local volume"
	$D1 volume create vr >/dev/null
	fill h1 vr "$c"
	$D1 run -d --name rs -v vr:/data $img sh -c "$cmd" >/dev/null
	for r in $(seq "$REPEAT"); do
		log "$(label "$c"), run $r: cargo"; run_cargo "$c" "$r"
		log "$(label "$c"), run $r: naive rsync"; run_rsync "$c" "$r" 0
		log "$(label "$c"), run $r: two-pass rsync"; run_rsync "$c" "$r" 1
		log "$(label "$c"), run $r: floor"; run_floor "$c" "$r"
		log "$(label "$c"), run $r: $(awk -v c="$c" -v r="$r" '$1 == c && $3 == "down" || $1 == c && $2 == "floor" { a[$2] = $4 } END { for (m in a) printf "%s %.3f s  ", m, a[m] }' "$res")"
	done
	[ -s "$work/detail" ] && log "$(label "$c"): cargo's volumes phase: $(cat "$work/detail")"
	$D1 rm -f rs >/dev/null; $D1 volume rm vr >/dev/null
done
kill $rsyncd 2>/dev/null || true
echo "meta - load $(cut -d' ' -f1-3 /proc/loadavg)" >>"$res"
if [ -n "$CHARTS" ]; then mkdir -p "$CHARTS"; cp "$res" "$CHARTS/downtime-results.txt"; fi
fi
meta() { awk -v k="$1" '$1 == "meta" && $3 == k { $1 = $2 = $3 = ""; sub(/^ +/, ""); print }' "$res"; }
max=$(printf '%s\n' "${SIZES[@]}" | sort -n | tail -1)
CASES=()
for s in "${SIZES[@]}"; do CASES+=("size$s"); done
CASES+=(files10 "files$FILES")

# ----------------------------------------------------------------- report ---
# st CASE METHOD METRIC -> "median min max" (seconds), empty without runs.
st() {
	awk -v c="$1" -v m="$2" -v k="$3" '$1 == c && $2 == m && $3 == k { print $4 }' "$res" | sort -g |
		awk '{ v[NR] = $1 } END { if (NR) printf "%.4f %.4f %.4f\n", (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2), v[1], v[NR] }'
}
med() { local a; a=$(st "$@"); echo "${a%% *}"; }
# fmt "median min max" -> "1.234 s (1.100–1.300)"
fmt() { [ -n "$1" ] && awk -v s="$1" 'BEGIN { split(s, a, " "); printf "%.3f s (%.3f–%.3f)", a[1], a[2], a[3] }' || echo "—"; }
fmtms() { [ -n "$1" ] && awk -v s="$1" 'BEGIN { split(s, a, " "); printf "%.0f ms", a[1] * 1000 }' || echo "—"; }
ratio() { [ -n "$1" ] && [ -n "$2" ] && awk -v a="$1" -v b="$2" -v p="${3:-0}" 'BEGIN { printf "%.2f", a / (b + p) }' || echo "—"; }
verdict() { [ "$1" = — ] && echo "not measured" || awk -v r="$1" -v g="$2" 'BEGIN { print (r <= g ? "met" : "not met") }'; }

echo
echo "Two engines ($(meta engine)) on one machine, $(meta cores) cores, linked by a veth bridge; $(meta date); $REPEAT runs of each, page cache dropped before each run; load average at the end $(meta load)."
echo "Downtime: from the source container's stop to the target's start returning. Median (min–max)."
echo
echo "| data | cargo | naive rsync | two-pass rsync | floor: create + start | cargo ÷ naive | cargo ÷ two-pass | cargo ÷ (floor + 0.2 s) |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
for c in "${CASES[@]}"; do
	g=$(med "$c" cargo down) n=$(med "$c" naive down) t=$(med "$c" twopass down) f=$(med "$c" floor cs)
	echo "| $(label "$c") | $(fmt "$(st "$c" cargo down)") | $(fmt "$(st "$c" naive down)") | $(fmt "$(st "$c" twopass down)") | $(fmt "$(st "$c" floor cs)") | $(ratio "$g" "$n") | $(ratio "$g" "$t") | $(ratio "$g" "$f" 0.2) |"
done
echo
echo "Where cargo's downtime goes (medians of each phase; the whole move's wall time includes the check and the image before the stop; the background copy runs after the start):"
echo
echo "| data | stop | layer | volumes | create | start | downtime | whole move | background copy |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
for c in "${CASES[@]}"; do
	row="| $(label "$c")"
	for k in stop layer volumes create start; do row+=" | $(fmtms "$(st "$c" cargo $k)")"; done
	echo "$row | $(fmtms "$(st "$c" cargo down)") | $(fmtms "$(st "$c" cargo wall)") | $(fmtms "$(st "$c" cargo copy)") |"
done
echo
echo "The baselines' split (medians):"
echo
echo "| data | naive: stop | rsync | create + start | two-pass: pass while running | stop | delta pass | create + start |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
for c in "${CASES[@]}"; do
	echo "| $(label "$c") | $(fmtms "$(st "$c" naive stop)") | $(fmtms "$(st "$c" naive copy)") | $(fmtms "$(st "$c" naive cs)") | $(fmtms "$(st "$c" twopass pass1)") | $(fmtms "$(st "$c" twopass stop)") | $(fmtms "$(st "$c" twopass copy)") | $(fmtms "$(st "$c" twopass cs)") |"
done
echo
# The goals (issue 11, goal 1), each a ratio of medians from this run.
# 1 GiB ÷ 16 MiB as the issue asks; without those sizes, the largest ÷ the smallest.
small=16; large=1024
printf '%s\n' "${SIZES[@]}" | grep -qx 16 || small=$(printf '%s\n' "${SIZES[@]}" | sort -n | head -1)
printf '%s\n' "${SIZES[@]}" | grep -qx 1024 || large=$(printf '%s\n' "${SIZES[@]}" | sort -n | tail -1)
[ "$large" != "$small" ] || small=$(printf '%s\n' "${SIZES[@]}" | sort -n | head -1)
rs=$(ratio "$(med size$large cargo down)" "$(med size$small cargo down)")
rf=$(ratio "$(med files$FILES cargo down)" "$(med files10 cargo down)")
worst=— wc=
for c in "${CASES[@]}"; do
	r=$(ratio "$(med "$c" cargo down)" "$(med "$c" floor cs)" 0.2)
	[ "$r" = — ] && continue
	if [ "$worst" = — ] || awk -v a="$r" -v b="$worst" 'BEGIN { exit !(a > b) }'; then worst=$r wc=$c; fi
done
vol=$(med files$FILES cargo volumes)
echo "| goal | measured | target | |"
echo "| --- | --- | --- | --- |"
echo "| cargo's downtime, $(label size$large) ÷ $(label size$small) | $rs | ≤ 1.1 | $(verdict "$rs" 1.1) |"
echo "| cargo's downtime, $(label files$FILES) ÷ $(label files10) | $rf | ≤ 1.2 | $(verdict "$rf" 1.2) |"
echo "| cargo's volumes phase, $(label files$FILES) | ${vol:+$(awk -v v="$vol" 'BEGIN { printf "%.3f s", v }')} | < 0.5 s | $( [ -n "$vol" ] && awk -v v="$vol" 'BEGIN { print (v < 0.5 ? "met" : "not met") }' || echo "not measured") |"
echo "| cargo's downtime ÷ (floor + 0.2 s), worst case ($( [ -n "$wc" ] && label "$wc")) | $worst | ≤ 1 | $(verdict "$worst" 1) |"

# ----------------------------------------------------------------- charts ---
[ -n "$CHARTS" ] || exit 0
mkdir -p "$CHARTS"
term=png; gnuplot -e 'set terminal' 2>&1 | grep -qw pngcairo && term=pngcairo
for c in "${CASES[@]}"; do
	case $c in size*) x=${c#size} ;; files*) x=${c#files} ;; esac
	row="$x"
	for m in cargo naive twopass floor; do
		k=down; [ $m = floor ] && k=cs
		a=$(st "$c" $m $k); row+=" ${a:-NaN NaN NaN}"
	done
	case $c in size*) echo "$row" >>"$work/size.dat" ;; *) echo "$row" >>"$work/files.dat" ;; esac
	p="\"$(label "$c")\""
	for k in stop layer volumes create start; do a=$(med "$c" cargo $k); p+=" ${a:-0}"; done
	echo "$p" >>"$work/phases.dat"
done
plot='plot f u 1:2:3:4 w yerrorlines lw 2 pt 7 t "cargo", f u 1:5:6:7 w yerrorlines lw 2 pt 5 t "naive: stop, rsync, start", f u 1:8:9:10 w yerrorlines lw 2 pt 9 t "two-pass rsync (LXD)", f u 1:11:12:13 w yerrorlines lw 2 dt 2 pt 13 t "floor: create + start", f u 1:($11 + 0.2) w l lw 1 dt 3 lc rgb "black" t "goal: floor + 0.2 s"'
gnuplot <<GP
set terminal $term size 800,450 font "sans,10"
set grid
set key top left opaque box
set logscale xy
set ylabel "downtime, s (median; bars: min-max of $REPEAT)"
f = "$work/size.dat"
set output "$CHARTS/downtime-vs-size.png"
set title "Downtime against the volume's size (one file), $(meta date)"
set xlabel "volume size, MiB"
set xrange [0.7:$((max * 3 / 2))]
set xtics ($(IFS=,; echo "${SIZES[*]}"))
$plot
set output "$CHARTS/downtime-vs-files.png"
f = "$work/files.dat"
set title "Downtime against the number of files ($((many_bytes >> 20)) MiB in all), $(meta date)"
set xlabel "files"
set xrange [5:$((FILES * 2))]
set xtics (10, $FILES)
$plot
unset logscale
set xrange [*:*]
set output "$CHARTS/downtime-phases.png"
set title "Where cargo's downtime goes (medians), $(meta date)"
set xlabel ""
set ylabel "s"
set style data histograms
set style histogram rowstacked
set style fill solid 0.8 border -1
set boxwidth 0.6
set key outside right top vertical
set xtics autofreq rotate by -20
plot "$work/phases.dat" u 2:xtic(1) t "stop", "" u 3 t "layer", "" u 4 t "volumes", "" u 5 t "create", "" u 6 t "start"
GP
log "charts in $CHARTS: downtime-vs-size.png downtime-vs-files.png downtime-phases.png"
