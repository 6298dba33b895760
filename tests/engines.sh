#!/usr/bin/env bash
# Fetches another Docker Engine version beside the machine's, without
# installing it, and prints the directories to put first in PATH (give
# them to tests/hosts.sh as CARGO_ENGINE_PATH).
#
#   tests/engines.sh trixie [DIR]    Debian trixie's docker.io 26.1 and containerd 1.7
#
# Debian's bookworm machines run Engine 20.10; trixie's engine binaries run
# on bookworm too. Its runc needs a newer glibc than bookworm's, so the
# machine's runc is used.
set -euo pipefail
suite=${1:?usage: $0 trixie [DIR]}
[ "$suite" = trixie ] || { echo "$0: only trixie is known" >&2; exit 2; }
dir=${2:-/var/tmp/cargo-engines/$suite}
if [ ! -x "$dir/root/usr/sbin/dockerd" ]; then
	mkdir -p "$dir/apt/lists/partial" "$dir/apt/cache/archives/partial"
	echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian $suite main" >"$dir/sources.list"
	opts=(-o "Dir::Etc::sourcelist=$dir/sources.list" -o Dir::Etc::sourceparts=- -o "Dir::State::Lists=$dir/apt/lists"
		-o "Dir::Cache=$dir/apt/cache" -o APT::Sandbox::User=root)
	apt-get -qq "${opts[@]}" update >&2
	(cd "$dir" && apt-get -qq "${opts[@]}" download docker.io containerd tini >&2)
	for deb in "$dir"/*.deb; do dpkg -x "$deb" "$dir/root"; done
	rm -f "$dir/root/usr/sbin/runc" "$dir/root/usr/bin/runc" "$dir"/*.deb
fi
echo "$dir/root/usr/sbin:$dir/root/usr/bin"
