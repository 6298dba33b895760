#!/usr/bin/env bash
# Fetches another Docker Engine version beside the machine's, without
# installing it, and prints the directories to put first in PATH (give
# them to tests/hosts.sh as CARGO_ENGINE_PATH).
#
#   tests/engines.sh trixie [DIR]    Debian trixie's docker.io 26.1 and containerd 1.7
#   tests/engines.sh forky [DIR]     Debian forky's docker.io 28.5 and containerd 2.1
#
# Debian's bookworm machines run Engine 20.10; the newer suites' engine
# binaries run on bookworm too. Their runc needs a newer glibc than
# bookworm's, so the machine's runc is used. The packages come from the
# Debian mirror this machine's apt is configured with.
set -euo pipefail
suite=${1:?usage: $0 trixie|forky [DIR]}
case $suite in
trixie | forky) ;;
*) echo "$0: unknown suite $suite: want trixie or forky" >&2; exit 2 ;;
esac
dir=${2:-/var/tmp/cargo-engines/$suite}

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

if [ ! -x "$dir/root/usr/sbin/dockerd" ]; then
	mirror=$(debian_mirror)
	[ -n "$mirror" ] || { echo "$0: no Debian archive with suite main found in /etc/apt/sources.list{,.d}" >&2; exit 1; }
	mkdir -p "$dir/apt/lists/partial" "$dir/apt/cache/archives/partial"
	echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $suite main" >"$dir/sources.list"
	opts=(-o "Dir::Etc::sourcelist=$dir/sources.list" -o Dir::Etc::sourceparts=- -o "Dir::State::Lists=$dir/apt/lists"
		-o "Dir::Cache=$dir/apt/cache" -o APT::Sandbox::User=root)
	apt-get -qq "${opts[@]}" update >&2
	(cd "$dir" && apt-get -qq "${opts[@]}" download docker.io containerd tini >&2)
	for deb in "$dir"/*.deb; do dpkg -x "$deb" "$dir/root"; done
	rm -f "$dir/root/usr/sbin/runc" "$dir/root/usr/bin/runc" "$dir"/*.deb
fi
echo "$dir/root/usr/sbin:$dir/root/usr/bin"
