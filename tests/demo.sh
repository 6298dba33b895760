#!/usr/bin/env bash
# The README's main command: two Docker engines on this machine, cargo on
# both, a container writing into a cargo volume on the first; then the
# volume moves to the second host and a container uses it there at once,
# while the copy's progress shows. (`docker migrate web --to demo-h2`
# will do the moving part in one command.)
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
show docker run -d --name web -v webdata:/data cargo-test/busybox \
	sh -c 'while true; do date >> /data/log; sleep 1; done'
# Wait for the container's first lines rather than sleeping a fixed time.
until [ "$(docker exec web sh -c 'wc -l < /data/log' 2>/dev/null || echo 0)" -ge 3 ]; do sleep 0.2; done
show docker exec web tail -n 3 /data/log
show docker volume inspect webdata

step "Moving the volume to $h2: stop the container, open an export, federate the volume there"
show docker run --rm -v webdata:/data cargo-test/busybox sh -c 'head -c 400000000 /dev/urandom > /data/big; md5sum /data/big'
show docker stop -t 1 web
show docker volume create -d cargo -o export=webdata -o to="$h2" webdata.cargo-export
ticket=$(docker volume inspect -f '{{.Status.ticket}}' webdata.cargo-export)
# Slow the link a little, so that the copy is still running when the
# container on the target starts.
"$here/hosts.sh" exec -p "$PREFIX" h1 tc qdisc replace dev eth0 root tbf rate 400mbit burst 256k latency 20ms
show docker --context "$h2" volume create -d cargo -o from="$ticket" webdata
show docker --context "$h2" run -d --name web -v webdata:/data cargo-test/busybox \
	sh -c 'tail -n 1 /data/log; while true; do date >> /data/log; sleep 1; done'
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

step "The docker migrate CLI plugin"
show docker migrate version

cat <<MSG

The engines keep running. Try them with:
  export DOCKER_CONFIG=$DOCKER_CONFIG
  docker context ls
  docker --context $h2 volume inspect webdata
Remove everything with: make demo-down
MSG
