#!/usr/bin/env bash
# The README's main command: two Docker engines on this machine, cargo on
# both, a container writing into a cargo volume on the first.
# They stay up for you to try things; `make demo-down` removes them.
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

step "The docker migrate CLI plugin"
show docker migrate version

cat <<MSG

The engines keep running. Try them with:
  export DOCKER_CONFIG=$DOCKER_CONFIG
  docker context ls
  docker --context $h2 volume create -d cargo other
Remove everything with: make demo-down
MSG
