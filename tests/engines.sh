#!/usr/bin/env bash
# Fetches another Docker Engine version beside the machine's, or a CRIU
# that works on this kernel, without installing either, and prints the
# directories to put first in PATH (give them to tests/hosts.sh as
# CARGO_ENGINE_PATH, or CARGO_CRIU_PATH for CRIU).
#
#   tests/engines.sh trixie [DIR]    Debian trixie's docker.io 26.1 and containerd 1.7
#   tests/engines.sh forky [DIR]     Debian forky's docker.io 28.5 and containerd 2.1
#   tests/engines.sh criu [DIR]      Debian forky's criu 4.2, run through forky's own loader
#
# Debian's bookworm machines run Engine 20.10; the newer suites' engine
# binaries run on bookworm too. Their runc needs a newer glibc than
# bookworm's, so the machine's runc is used. Bookworm's CRIU 3.17 fails
# `criu check` on current kernels and forky's needs forky's glibc, so the
# criu command is a wrapper that runs forky's binary with forky's loader
# and libraries. The packages come from the Debian mirror this machine's
# apt is configured with.
set -euo pipefail
what=${1:?usage: $0 trixie|forky|criu [DIR]}
case $what in
trixie | forky) suite=$what ;;
criu) suite=forky ;;
*) echo "$0: unknown suite $what: want trixie, forky or criu" >&2; exit 2 ;;
esac
dir=${2:-/var/tmp/cargo-engines/$what}

# debian_mirror prints the URI of the machine's configured Debian archive:
# the first source that carries this release's own suite with the main
# component, in deb822 (.sources) or one-line (.list) form.
debian_mirror() {
	local codename
	codename=$(. /etc/os-release && echo "${VERSION_CODENAME:?}")
	{
		for f in /etc/apt/sources.list.d/*.sources; do
			[ -f "$f" ] || continue
			awk -v want="$codename" '
				function flush() { if (uris != "" && suites ~ ("(^| )" want "( |$)") && comps ~ /(^| )main( |$)/) { split(uris, u, " "); print u[1] }; uris = suites = comps = "" }
				/^[ \t]*$/ { flush(); next }
				/^URIs:/       { sub(/^URIs:[ \t]*/, ""); uris = $0 }
				/^Suites:/     { sub(/^Suites:[ \t]*/, ""); suites = $0 }
				/^Components:/ { sub(/^Components:[ \t]*/, ""); comps = $0 }
				END { flush() }' "$f"
		done
		for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
			[ -f "$f" ] || continue
			# deb [options] URI SUITE COMPONENT...
			sed -E 's/\[[^]]*\]//' "$f" | awk -v want="$codename" \
				'$1 == "deb" && $3 == want { for (i = 4; i <= NF; i++) if ($i == "main") { print $2; break } }'
		done
	} | head -n 1
}

# apt_setup points apt, through the array opts, at $suite's main component
# alone, with its lists and cache under $dir: the machine's own apt state
# is neither read nor changed.
apt_setup() {
	local mirror
	mirror=$(debian_mirror)
	[ -n "$mirror" ] || { echo "$0: no Debian archive with suite main found in /etc/apt/sources.list{,.d}" >&2; exit 1; }
	mkdir -p "$dir/apt/lists/partial" "$dir/apt/cache/archives/partial"
	echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $suite main" >"$dir/sources.list"
	opts=(-o "Dir::Etc::sourcelist=$dir/sources.list" -o Dir::Etc::sourceparts=- -o "Dir::State::Lists=$dir/apt/lists"
		-o "Dir::Cache=$dir/apt/cache" -o APT::Sandbox::User=root)
	apt-get -qq "${opts[@]}" update >&2
}

# unpack extracts every downloaded package in $dir into $dir/root.
unpack() {
	local deb
	for deb in "$dir"/*.deb; do dpkg -x "$deb" "$dir/root"; done
	rm -f "$dir"/*.deb
}

engine() {
	if [ ! -x "$dir/root/usr/sbin/dockerd" ]; then
		apt_setup
		(cd "$dir" && apt-get -qq "${opts[@]}" download docker.io containerd tini >&2)
		unpack
		rm -f "$dir/root/usr/sbin/runc" "$dir/root/usr/bin/runc"
	fi
	echo "$dir/root/usr/sbin:$dir/root/usr/bin"
}

# criu fetches criu with everything it links against, down to forky's
# libc6 and loader, and writes DIR/bin/criu, which runs it with them.
criu() {
	local root=$dir/root
	if [ ! -x "$dir/bin/criu" ]; then
		apt_setup
		# The packages criu needs to run, recursively: every line naming
		# a real package (virtual ones come as <name>, alternatives as
		# |Depends and are resolved by the next line).
		local pkgs
		pkgs=$(apt-cache "${opts[@]}" depends --recurse --no-recommends --no-suggests --no-conflicts \
			--no-breaks --no-replaces --no-enhances criu | grep -E '^[a-z0-9]' | sort -u)
		# shellcheck disable=SC2086 # one package a word
		(cd "$dir" && apt-get -qq "${opts[@]}" download $pkgs >&2)
		unpack
		local loader=$root/usr/lib64/ld-linux-x86-64.so.2
		[ -e "$loader" ] || loader=$root/lib64/ld-linux-x86-64.so.2
		[ -x "$root/usr/sbin/criu" ] && [ -e "$loader" ] ||
			{ echo "$0: criu or forky's loader missing under $root" >&2; exit 1; }
		mkdir -p "$dir/bin"
		# The absolute paths stay: runc runs criu as a child of the
		# engine, whose PATH and working directory are not ours.
		cat >"$dir/bin/criu.tmp" <<-WRAP
		#!/bin/sh
		# Debian forky's criu with forky's glibc, on a machine whose own is older.
		exec $loader --library-path $root/usr/lib/x86_64-linux-gnu:$root/lib/x86_64-linux-gnu $root/usr/sbin/criu "\$@"
		WRAP
		chmod 0755 "$dir/bin/criu.tmp"
		mv "$dir/bin/criu.tmp" "$dir/bin/criu"
	fi
	echo "$dir/bin"
}

# Test packages may fetch at once: one fetches, the others wait and take
# its result.
mkdir -p "$dir"
exec 9>"$dir/.lock"
flock 9
case $what in
criu) criu ;;
*) engine ;;
esac
