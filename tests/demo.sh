#!/usr/bin/env bash
# The README's main command: two Docker engines on this machine, cargo on
# both, a container writing into a cargo volume on the first; then
# `docker migrate web --to demo-h2` moves it, it runs there at once, and
# the background copy's progress shows.
# The engines stay up for you to try things; `make demo-down` removes them.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
PREFIX=demo
BASE=/var/tmp/$PREFIX

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
show() { printf '$ %s\n' "$*"; "$@"; }

step "Starting two engines (host1 = 198.18.0.1, host2 = 198.18.0.2), each with the cargo plugin"
"$here/hosts.sh" up -p "$PREFIX" -n 2
export DOCKER_CONFIG=$BASE/config
h1=$PREFIX-h1 h2=$PREFIX-h2
docker context use "$h1" >/dev/null

step "The plugin on both hosts"
show docker --context "$h1" plugin ls
show docker --context "$h2" plugin ls

step "A cargo volume and a container writing into it on $h1"
show docker volume create -d cargo webdata
show docker run -d --name web --stop-timeout 1 -v webdata:/data cargo-test/busybox \
	sh -c 'while true; do date >> /data/log; sleep 1; done'
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
progress() {
	docker --context "$h2" volume inspect webdata -f \
		'{{.Status.state}}: {{.Status.files_copied}}/{{.Status.files_total}} files, {{printf "%.0f" .Status.bytes_copied}} of {{printf "%.0f" .Status.bytes_total}} bytes, {{printf "%.0f" .Status.rate}} bytes/s'
}
until [ "$(docker --context "$h2" volume inspect -f '{{.Status.state}}' webdata)" = complete ]; do
	progress
	sleep 1
done
progress
"$here/hosts.sh" exec -p "$PREFIX" h1 tc qdisc del dev eth0 root
show docker --context "$h2" exec web md5sum /data/big
show docker volume inspect -f '{{json .Status}}' webdata.cargo-export

cat <<MSG

The engines keep running. Try them with:
  export DOCKER_CONFIG=$DOCKER_CONFIG
  docker context ls
  docker --context $h2 volume inspect webdata
Remove everything with: make demo-down
MSG
