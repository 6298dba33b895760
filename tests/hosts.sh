#!/usr/bin/env bash
# Brings up N "hosts" on this machine, each a real dockerd in its own network
# and mount namespace, linked by a bridge on 198.18.0.0/26, with the cargo
# plugin built from the tree installed and a docker context per host.
#
#   tests/hosts.sh up   [-n N] [-p PREFIX] [--registry]   start (after cleaning leftovers)
#   tests/hosts.sh down [-p PREFIX]                       stop everything, remove all state
#   tests/hosts.sh exec [-p PREFIX] HOST CMD...           run CMD inside host HOST (h1, h2, ...)
#   tests/hosts.sh restart [-p PREFIX] HOST               stop HOST's engine cleanly and start it again
#   tests/hosts.sh stop [-p PREFIX] HOST                  stop HOST's engine for good (down still cleans up)
#   tests/hosts.sh start [-p PREFIX] HOST                 start HOST's engine again after stop
#   tests/hosts.sh env  [-p PREFIX]                       print the environment file
#
# Layout, with BASE=/var/tmp/PREFIX:
#   BASE/hI/run, BASE/hI/docker  bound onto /run and /var/lib/docker inside host I
#   BASE/hI/dockerd.log          the engine's log (the plugin logs there too)
#   BASE/config                  DOCKER_CONFIG: contexts PREFIX-h1.. and the CLI plugin
#   BASE/env                     shell-sourceable facts about the hosts
#   BASE/path                    what goes first on every engine's PATH
#   BASE/hI/path                 host I's own, instead, if a test writes it
#   BASE/hI/no-experimental      if a test makes it, host I runs with experimental off
#   BASE/containerd-store        "1" when engines run the containerd image store
#   BASE/hI/containerd-store     host I's own, instead, if present
#
# Engines run with experimental features on (checkpoints need them), the
# plugin with its metrics on 127.0.0.1:9450 inside each host.
# CARGO_ENGINE_PATH puts another engine's binaries first on their PATH
# (tests/engines.sh trixie|forky), CARGO_CRIU_PATH a directory holding a
# working criu (tests/engines.sh criu), which runc finds on the PATH it
# inherits from dockerd. `up` records both for restart and start.
# CARGO_H<I>_ENGINE_PATH, when set (empty: the machine's engine), gives
# host I its own engine instead of CARGO_ENGINE_PATH's, for moves between
# versions. CARGO_CONTAINERD_STORE=1 runs the engines with the containerd
# image store (Engine 24 and later), CARGO_H<I>_CONTAINERD_STORE=0|1 host
# I alone; `up` records these too.
# Addresses: host I is 198.18.0.I; the registry (--registry) 198.18.0.60:5000.
# docker0 in every host is 198.18.0.64/26 and user networks come from
# 198.18.0.128/25: those exist only inside each host's namespace.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
PREFIX=cargo
N=2
REGISTRY=0
BUILD=${CARGO_BUILD:-$top/build}
IMAGE=cargo-test/busybox:latest
REG_ADDR=198.18.0.60:5000

log() { printf '[hosts %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

cmd=${1:-}
[ -n "$cmd" ] || die "usage: $0 up|down|exec|restart|stop|start|env [-n N] [-p PREFIX] [--registry]"
shift
while [ $# -gt 0 ]; do
	case $1 in
	-n) N=$2; shift 2 ;;
	-p) PREFIX=$2; shift 2 ;;
	--registry) REGISTRY=1; shift ;;
	*) break ;;
	esac
done
# Interface names are at most 15 characters: PREFIX plus "h12sw".
[[ $PREFIX =~ ^[a-z][a-z0-9]{0,7}$ ]] || die "prefix must be 1-8 of [a-z0-9], starting with a letter"
[[ $N =~ ^[0-9]+$ ]] && [ "$N" -ge 1 ] && [ "$N" -le 9 ] || die "-n takes 1 to 9 hosts"
BASE=/var/tmp/$PREFIX
SW=$PREFIX-sw

[ "$(id -u)" = 0 ] || die "must run as root (namespaces, mounts, dockerd)"

# ---------------------------------------------------------------- setup ---

ensure_packages() {
	local missing=()
	command -v dockerd >/dev/null || missing+=(docker.io)
	command -v busybox >/dev/null || [ -x /bin/busybox ] || missing+=(busybox-static)
	command -v ip >/dev/null || missing+=(iproute2)
	command -v nsenter >/dev/null || missing+=(util-linux)
	# The federation tests probe the peer service and capture the link.
	command -v curl >/dev/null || missing+=(curl)
	command -v tcpdump >/dev/null || missing+=(tcpdump)
	command -v tc >/dev/null || missing+=(iproute2)
	# tests/migrate reaches an engine over ssh, as `docker context create
	# --docker host=ssh://...` does.
	command -v sshd >/dev/null || [ -x /usr/sbin/sshd ] || missing+=(openssh-server)
	command -v ssh >/dev/null || missing+=(openssh-client)
	if [ "$REGISTRY" = 1 ] && ! command -v docker-registry >/dev/null; then
		missing+=(docker-registry)
	fi
	[ ${#missing[@]} -eq 0 ] && return
	log "installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q >/dev/null
	apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
	# Debian's package may start a dockerd of its own where an init system
	# runs; these hosts must not share one.
	if command -v systemctl >/dev/null && systemctl is-active -q docker 2>/dev/null; then
		systemctl stop docker docker.socket containerd || true
	fi
	# Nor should the tests leave an ssh server listening on the machine:
	# they start their own, inside a host.
	if [[ " ${missing[*]} " == *" openssh-server "* ]] && command -v systemctl >/dev/null; then
		systemctl disable --now ssh 2>/dev/null || true
	fi
}

netns_add() {
	ip netns add "$1"
	ip -n "$1" link set lo up
}

setup_network() {
	netns_add "$SW"
	ip -n "$SW" link add br0 type bridge
	ip -n "$SW" link set br0 up
	for i in $(seq 1 "$N"); do
		local ns=$PREFIX-h$i
		netns_add "$ns"
		link "$ns" "${PREFIX}h$i" "198.18.0.$i/26"
	done
	if [ "$REGISTRY" = 1 ]; then
		netns_add "$PREFIX-reg"
		link "$PREFIX-reg" "${PREFIX}reg" "${REG_ADDR%:*}/26"
	fi
}

# link NS NAME ADDR: a veth from netns NS (as eth0, with ADDR) to the bridge.
link() {
	local ns=$1 name=$2 addr=$3
	ip link add "$name" type veth peer name "${name}sw"
	ip link set "$name" netns "$ns"
	ip link set "${name}sw" netns "$SW"
	ip -n "$ns" link set "$name" name eth0
	ip -n "$ns" addr add "$addr" dev eth0
	ip -n "$ns" link set eth0 up
	ip -n "$SW" link set "${name}sw" master br0 up
}

start_engine() {
	local i=$1
	local dir=$BASE/h$i ns=$PREFIX-h$i
	mkdir -p "$dir/run" "$dir/docker"
	# A test may turn experimental features off for one host.
	local experimental=true
	[ ! -e "$dir/no-experimental" ] || experimental=false
	local c8d
	c8d=$(cat "$dir/containerd-store" 2>/dev/null || cat "$BASE/containerd-store" 2>/dev/null || echo 0)
	# The containerd image store names its own snapshotter (overlayfs).
	local driver=overlay2 features=""
	[ "$c8d" != 1 ] || driver=overlayfs features=',
	  "features": {"containerd-snapshotter": true}'
	cat >"$dir/daemon.json" <<-EOF
	{
	  "data-root": "/var/lib/docker",
	  "exec-root": "/run/docker",
	  "pidfile": "/run/docker.pid",
	  "hosts": ["unix:///run/docker.sock"],
	  "bip": "198.18.0.65/26",
	  "default-address-pools": [{"base": "198.18.0.128/25", "size": 28}],
	  "cgroup-parent": "/$ns",
	  "insecure-registries": ["$REG_ADDR"],
	  "storage-driver": "$driver",
	  "experimental": $experimental$features
	}
	EOF
	# Own pids cgroup, so teardown finds every process of this host even
	# when the engine is gone.
	mkdir -p "/sys/fs/cgroup/pids/$ns"
	# The mountpoint must exist; the per-host directory is bound over it.
	mkdir -p /var/lib/docker
	# nsenter, not `ip netns exec`: the latter remounts /sys and hides the
	# cgroup mounts dockerd needs.
	# BASE/path puts another engine's binaries (dockerd, containerd,
	# docker-proxy, docker-init) and criu first: see record_path. A
	# test may give one host its own, BASE/hI/path (a host without criu).
	local first
	first=$(cat "$dir/path" 2>/dev/null || cat "$BASE/path" 2>/dev/null || true)
	PATH=${first:+$first:}$PATH \
		setsid nsenter --net="/var/run/netns/$ns" \
		unshare --mount --propagation private \
		sh -c '
			set -e
			echo $$ > /sys/fs/cgroup/pids/'"$ns"'/cgroup.procs
			mount --bind "$1/run" /run
			mount --bind "$1/docker" /var/lib/docker
			mount --make-rshared /
			exec dockerd --config-file "$1/daemon.json"
		' sh "$dir" >"$dir/dockerd.log" 2>&1 </dev/null &
	echo $! >"$dir/dockerd.pid"
}

# wait_for DESC TIMEOUT CMD...: poll CMD until it succeeds.
wait_for() {
	local desc=$1 timeout=$2; shift 2
	local deadline=$((SECONDS + timeout))
	until "$@" >/dev/null 2>&1; do
		[ $SECONDS -lt $deadline ] || return 1
		sleep 0.2
	done
}

# record_path writes BASE/path from CARGO_CRIU_PATH and CARGO_ENGINE_PATH,
# so that an engine restarted later (restart, start, by hand or by a
# test) runs the same binaries as at up.
record_path() {
	if [ -n "${CARGO_CRIU_PATH:-}" ]; then
		[ -x "$CARGO_CRIU_PATH/criu" ] || die "CARGO_CRIU_PATH=$CARGO_CRIU_PATH holds no criu: run tests/engines.sh criu"
	fi
	local first=${CARGO_CRIU_PATH:-}
	first=$first${first:+${CARGO_ENGINE_PATH:+:}}${CARGO_ENGINE_PATH:-}
	echo "$first" >"$BASE/path"
	echo "${CARGO_CONTAINERD_STORE:-0}" >"$BASE/containerd-store"
	local i own store
	for i in $(seq 1 "$N"); do
		mkdir -p "$BASE/h$i"
		own=CARGO_H${i}_ENGINE_PATH store=CARGO_H${i}_CONTAINERD_STORE
		if [ -n "${!own+set}" ]; then
			first=${CARGO_CRIU_PATH:-}
			echo "$first${first:+${!own:+:}}${!own}" >"$BASE/h$i/path"
		fi
		[ -z "${!store:-}" ] || echo "${!store}" >"$BASE/h$i/containerd-store"
	done
}

dk() { local i=$1; shift; docker -H "unix://$BASE/h$i/run/docker.sock" "$@"; }

build_image_tar() {
	local tar=$BASE/busybox.tar rootfs=$BASE/busybox-rootfs
	[ -f "$tar" ] && return
	rm -rf "$rootfs"
	mkdir -p "$rootfs"/{bin,etc,tmp,root,home/app,data}
	cp /bin/busybox "$rootfs/bin/busybox"
	for a in $("$rootfs/bin/busybox" --list); do
		[ "$a" = busybox ] || ln -s busybox "$rootfs/bin/$a"
	done
	printf 'root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$rootfs/etc/passwd"
	printf 'root:x:0:\napp:x:1000:\nnogroup:x:65534:\n' >"$rootfs/etc/group"
	chmod 1777 "$rootfs/tmp"
	chown 1000:1000 "$rootfs/home/app"
	tar -C "$rootfs" -cf "$tar" .
}

setup_host() {
	local i=$1 dir=$BASE/h$i
	if ! wait_for "engine h$i" 90 dk "$i" version; then
		tail -30 "$dir/dockerd.log" >&2
		die "engine h$i did not answer within 90s (log: $dir/dockerd.log)"
	fi
	dk "$i" import -c 'CMD ["sh"]' "$BASE/busybox.tar" "$IMAGE" >/dev/null
	# The plugin's state mount must exist: engines do not create it.
	mkdir -p -m 0700 "$dir/docker/plugins/cargo"
	dk "$i" plugin create cargo:latest "$BUILD/plugin" >/dev/null
	# Metrics on, inside the host's own network namespace only.
	dk "$i" plugin set cargo:latest METRICS_ADDR=127.0.0.1:9450 >/dev/null
	dk "$i" plugin enable cargo:latest >/dev/null
	DOCKER_CONFIG=$BASE/config docker context create "$PREFIX-h$i" \
		--description "cargo test host $i (198.18.0.$i)" \
		--docker "host=unix://$dir/run/docker.sock" >/dev/null
	log "h$i ready: engine $(dk "$i" version -f '{{.Server.Version}}'), cargo plugin enabled, context $PREFIX-h$i"
}

start_registry() {
	local dir=$BASE/registry
	mkdir -p "$dir/data"
	cat >"$dir/config.yml" <<-EOF
	version: 0.1
	log: {level: warn}
	storage: {filesystem: {rootdirectory: $dir/data}, delete: {enabled: true}}
	http: {addr: $REG_ADDR}
	EOF
	setsid nsenter --net="/var/run/netns/$PREFIX-reg" \
		docker-registry serve "$dir/config.yml" >"$dir/registry.log" 2>&1 </dev/null &
	echo $! >"$dir/registry.pid"
	wait_for registry 30 nsenter --net="/var/run/netns/$PREFIX-h1" \
		bash -c "exec 3<>/dev/tcp/${REG_ADDR%:*}/${REG_ADDR#*:}" ||
		die "registry did not listen on $REG_ADDR (log: $dir/registry.log)"
}

up() {
	[ -f "$BUILD/plugin/config.json" ] || die "no plugin in $BUILD/plugin: run 'make plugin' first"
	ensure_packages
	down_quiet
	mkdir -p "$BASE/config/cli-plugins"
	record_path
	if [ -x "$BUILD/docker-migrate" ]; then
		ln -sf "$BUILD/docker-migrate" "$BASE/config/cli-plugins/docker-migrate"
	fi
	log "starting $N engine(s) under $BASE"
	setup_network
	build_image_tar
	local i pids=()
	for i in $(seq 1 "$N"); do start_engine "$i"; done
	[ "$REGISTRY" = 1 ] && start_registry
	for i in $(seq 1 "$N"); do
		setup_host "$i" &
		pids+=($!)
	done
	local failed=0
	for p in "${pids[@]}"; do wait "$p" || failed=1; done
	[ $failed = 0 ] || die "a host failed to come up"
	write_env
}

write_env() {
	{
		echo "CARGO_PREFIX=$PREFIX"
		echo "CARGO_BASE=$BASE"
		echo "CARGO_HOSTS=$N"
		echo "DOCKER_CONFIG=$BASE/config"
		echo "CARGO_IMAGE=$IMAGE"
		[ "$REGISTRY" = 1 ] && echo "CARGO_REGISTRY=$REG_ADDR"
		[ -n "${CARGO_CRIU_PATH:-}" ] && echo "CARGO_CRIU_PATH=$CARGO_CRIU_PATH"
		for i in $(seq 1 "$N"); do
			echo "CARGO_H${i}_CONTEXT=$PREFIX-h$i"
			echo "CARGO_H${i}_HOST=unix://$BASE/h$i/run/docker.sock"
			echo "CARGO_H${i}_ADDR=198.18.0.$i"
		done
	} >"$BASE/env"
}

# -------------------------------------------------------------- teardown ---

# pids_of HOST_NS: every process of one host: in its network namespace
# (engine, containerd, shims, host-network plugins) or in its pids cgroup
# (containers).
pids_of() {
	local ns=$1
	{
		ip netns pids "$ns" 2>/dev/null || true
		find "/sys/fs/cgroup/pids/$ns" -name cgroup.procs -exec cat {} + 2>/dev/null || true
	} | sort -u
}

stop_host() {
	local ns=$1 dir=$2 sock=$2/run/docker.sock
	if [ -S "$sock" ] && timeout 5 docker -H "unix://$sock" version >/dev/null 2>&1; then
		local ids
		ids=$(timeout 20 docker -H "unix://$sock" ps -q 2>/dev/null || true)
		[ -z "$ids" ] || timeout 30 docker -H "unix://$sock" kill $ids >/dev/null 2>&1 || true
	fi
	local pid
	pid=$(cat "$dir/dockerd.pid" 2>/dev/null || true)
	if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid" 2>/dev/null || true
		local deadline=$((SECONDS + 25))
		while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
	fi
	local round
	for round in 1 2 3 4 5 6 7 8 9 10; do
		local left
		left=$(pids_of "$ns")
		[ -n "$left" ] || break
		kill -9 $left 2>/dev/null || true
		sleep 0.3
	done
	find "/sys/fs/cgroup" -maxdepth 2 -type d -name "$ns" 2>/dev/null | while read -r cg; do
		find "$cg" -depth -type d -exec rmdir {} \; 2>/dev/null || true
	done
}

down_quiet() {
	local dirs=() ns
	for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^$PREFIX-h[0-9]+$" || true); do
		dirs+=("$ns")
	done
	for d in "$BASE"/h[0-9]*; do
		[ -d "$d" ] || continue
		ns=$PREFIX-$(basename "$d")
		[[ " ${dirs[*]} " == *" $ns "* ]] || dirs+=("$ns")
	done
	local pids=()
	for ns in "${dirs[@]}"; do
		stop_host "$ns" "$BASE/${ns#"$PREFIX"-}" &
		pids+=($!)
	done
	for p in "${pids[@]}"; do wait "$p" || true; done
	if [ -f "$BASE/registry/registry.pid" ]; then
		kill -9 "$(cat "$BASE/registry/registry.pid")" 2>/dev/null || true
	fi
	for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^$PREFIX-(h[0-9]+|sw|reg)$" || true); do
		ip netns del "$ns" 2>/dev/null || true
	done
	if [ -d "$BASE" ]; then
		# Mounts of a dead host's namespace are gone with it; anything still
		# mounted here was mounted from outside and is detached, not deleted.
		{ grep -o " $BASE/[^ ]*" /proc/self/mountinfo || true; } | sort -r | while read -r m; do
			umount -l "$m" 2>/dev/null || true
		done
		rm -rf "$BASE"
	fi
}

down() {
	log "stopping hosts under $BASE"
	down_quiet
	log "all clean"
}

stop_engine() {
	local h=$1 pid
	[ -f "$BASE/$h/dockerd.pid" ] || die "no such host: $h"
	pid=$(cat "$BASE/$h/dockerd.pid")
	kill -TERM "$pid" 2>/dev/null || true
	wait_for "engine $h to stop" 60 bash -c "! kill -0 $pid" || die "engine $h did not stop"
}

restart_engine() {
	local h=$1 i=${1#h}
	stop_engine "$h"
	start_engine "$i"
	wait_for "engine $h" 90 dk "$i" version || die "engine $h did not come back (log: $BASE/$h/dockerd.log)"
	log "$h restarted"
}

case $cmd in
up) up ;;
restart) restart_engine "${1:?usage: $0 restart [-p PREFIX] HOST}" ;;
stop) stop_engine "${1:?usage: $0 stop [-p PREFIX] HOST}"; log "$1 stopped" ;;
start)
	h=${1:?usage: $0 start [-p PREFIX] HOST}
	[ -d "$BASE/$h" ] || die "no such host: $h"
	start_engine "${h#h}"
	wait_for "engine $h" 90 dk "${h#h}" version || die "engine $h did not come back (log: $BASE/$h/dockerd.log)"
	log "$h started"
	;;
down) down ;;
env) cat "$BASE/env" ;;
exec)
	[ $# -ge 2 ] || die "usage: $0 exec [-p PREFIX] HOST CMD..."
	h=$1; shift
	# setsid, nsenter, unshare and sh all exec: the recorded pid is dockerd.
	pid=$(cat "$BASE/$h/dockerd.pid" 2>/dev/null) || die "no such host: $h"
	exec nsenter -t "$pid" -n -m -- "$@"
	;;
*) die "unknown command $cmd" ;;
esac
