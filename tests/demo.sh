#!/usr/bin/env bash
# The README's main command: two Docker engines on this machine, cargo on
# both, a container writing into a cargo volume on the first; then
# `docker migrate web --to demo-h2` moves it, it runs there at once, the
# background copy's progress shows, and failover cuts the tie to host1.
# Then a live move: a counter held only in memory goes on on host2.
# The engines stay up for you to try things; `make demo-down` removes them.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
PREFIX=demo
BASE=/var/tmp/$PREFIX

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
show() { printf '$ %s\n' "$*"; "$@"; }

step "Starting two engines (host1 = 198.18.0.1, host2 = 198.18.0.2), each with the cargo plugin and CRIU"
# Debian forky's CRIU, fetched and unpacked, not installed: what live
# moves need (docs/migrate.md).
CARGO_CRIU_PATH=$("$here/engines.sh" criu) "$here/hosts.sh" up -p "$PREFIX" -n 2
export DOCKER_CONFIG=$BASE/config
h1=$PREFIX-h1 h2=$PREFIX-h2
docker context use "$h1" >/dev/null

step "The plugin on both hosts"
show docker --context "$h1" plugin ls
show docker --context "$h2" plugin ls

step "A cargo volume and a container writing into it on $h1 (with a local volume, a network and a port)"
show docker volume create -d cargo webdata
show docker volume create cache
show docker network create front
show docker run -d --name web --stop-timeout 1 --network front -p 8080:80 -v webdata:/data -v cache:/cache \
	cargo-test/busybox sh -c 'echo warm > /cache/state; while true; do date >> /data/log; sleep 1; done'
# Wait for the container's first lines rather than sleeping a fixed time.
until [ "$(docker exec web sh -c 'wc -l < /data/log' 2>/dev/null || echo 0)" -ge 3 ]; do sleep 0.2; done
show docker exec web tail -n 3 /data/log
show docker volume inspect webdata

step "Moving web to $h2 with docker migrate"
show docker run --rm -v webdata:/data cargo-test/busybox sh -c 'head -c 400000000 /dev/urandom > /data/big; md5sum /data/big'
show docker migrate check web --to "$h2"
# Slow the link a little, so that the copy is still running while the
# container already runs on the target.
"$here/hosts.sh" exec -p "$PREFIX" h1 tc qdisc replace dev eth0 root tbf rate 400mbit burst 256k latency 20ms
show docker migrate web --to "$h2"
show docker --context "$h2" ps
show docker --context "$h2" exec web tail -n 2 /data/log

step "Progress of the background copy on $h2"
show docker migrate ls
show docker --context "$h2" migrate status --watch
"$here/hosts.sh" exec -p "$PREFIX" h1 tc qdisc del dev eth0 root
show docker --context "$h2" exec web md5sum /data/big

step "Failover: $h2 no longer needs $h1"
show docker --context "$h2" migrate failover web --remove-source
show docker migrate ls
show docker --context "$h2" exec web sh -c 'cat /cache/state; tail -n 1 /data/log'

step "A live move: the processes too, with their memory"
show docker run -d --name counter cargo-test/busybox sh -c 'i=0; while true; do i=$((i+1)); echo $i > /tmp/n; sleep 0.1; done'
until [ "$(docker exec counter cat /tmp/n 2>/dev/null || echo 0)" -ge 20 ]; do sleep 0.2; done
show docker exec counter cat /tmp/n
show docker migrate counter --to "$h2" --live
# The count goes on from where it was: the process was not started again.
show docker --context "$h2" exec counter cat /tmp/n

cat <<MSG

The engines keep running. Try them with:
  export DOCKER_CONFIG=$DOCKER_CONFIG
  docker context ls
  docker migrate ls
  docker --context $h2 migrate status
Remove everything with: make demo-down
MSG
