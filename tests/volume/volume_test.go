package volume_test

import (
	"strings"
	"testing"

	"github.com/cargo-migrate/cargo/tests/harness"
)

// A container writes into a cargo volume; another reads it back byte for
// byte; the engine describes the volume; removal deletes it.
func TestCreateWriteReadRemove(t *testing.T) {
	h := env.Hosts[0]
	vol := name(t, h, "v")
	if out := h.MustDocker(t, "volume", "create", "-d", "cargo", vol); out != vol {
		t.Fatalf("volume create printed %q", out)
	}
	sums := run(t, h, "-v", vol+":/data", env.Image, "sh", "-c",
		`set -e; mkdir -p /data/sub/deeper; echo hello > /data/hello.txt
		 head -c 3000000 /dev/urandom > /data/sub/deeper/blob; ln -s hello.txt /data/link
		 cd /data && md5sum hello.txt sub/deeper/blob`)
	got := run(t, h, "-v", vol+":/mnt/other:ro", env.Image, "sh", "-c",
		`cd /mnt/other && md5sum hello.txt sub/deeper/blob && readlink link`)
	if got != sums+"\nhello.txt" {
		t.Fatalf("second container read\n%s\nwant\n%s", got, sums)
	}

	v := inspectVolume(t, h, vol)
	if v.Driver != "cargo:latest" || v.Scope != "local" || v.Status["state"] != "local" || v.Mountpoint == "" || v.CreatedAt == "" {
		t.Fatalf("volume inspect: %+v", v)
	}
	if !contains(volumeNames(t, h), vol) {
		t.Fatalf("volume ls lacks %s", vol)
	}
	if n := mounts(t, h, vol); n != 0 {
		t.Fatalf("%d mounts left after the containers exited", n)
	}
	h.MustDocker(t, "volume", "rm", vol)
	if r := h.Docker(harness.Ctx(t), "volume", "inspect", vol); r.Err == nil {
		t.Fatal("volume still there after rm")
	}
	// The name is free again and a new volume starts empty.
	h.MustDocker(t, "volume", "create", "-d", "cargo", vol)
	if out := run(t, h, "-v", vol+":/data", env.Image, "ls", "-A", "/data"); out != "" {
		t.Fatalf("re-created volume not empty: %q", out)
	}
}

// Two containers share one volume; the mount is shared and released with
// the last one.
func TestSharedMountIsReferenceCounted(t *testing.T) {
	h := env.Hosts[0]
	vol := name(t, h, "v")
	a, b := name(t, h, "a"), name(t, h, "b")
	h.MustDocker(t, "volume", "create", "-d", "cargo", vol)
	for _, c := range []string{a, b} {
		h.MustDocker(t, "run", "-d", "--name", c, "-v", vol+":/data", env.Image, "sleep", "600")
	}
	h.MustDocker(t, "exec", a, "sh", "-c", "echo from-a > /data/a")
	if got := h.MustDocker(t, "exec", b, "cat", "/data/a"); got != "from-a" {
		t.Fatalf("b reads %q", got)
	}
	h.MustDocker(t, "rm", "-f", a)
	if got := h.MustDocker(t, "exec", b, "cat", "/data/a"); got != "from-a" {
		t.Fatalf("after a left, b reads %q", got)
	}
	if n := mounts(t, h, vol); n == 0 {
		t.Fatal("volume not mounted while b runs")
	}
	h.MustDocker(t, "rm", "-f", b)
	if n := mounts(t, h, vol); n != 0 {
		t.Fatalf("%d mounts after both left", n)
	}
}

// Removing a volume a running container uses fails and loses nothing.
func TestRemoveWhileInUse(t *testing.T) {
	h := env.Hosts[0]
	vol, ctr := name(t, h, "v"), name(t, h, "c")
	h.MustDocker(t, "volume", "create", "-d", "cargo", vol)
	h.MustDocker(t, "run", "-d", "--name", ctr, "-v", vol+":/data", env.Image, "sh", "-c", "echo keep > /data/f; sleep 600")
	waitFile(t, h, ctr, "/data/f")
	for _, args := range [][]string{{"volume", "rm", vol}, {"volume", "rm", "-f", vol}} {
		r := h.Docker(harness.Ctx(t), args...)
		if r.Err == nil || !strings.Contains(r.Combined(), "in use") {
			t.Fatalf("%v while in use: err=%v out=%s", args, r.Err, r.Combined())
		}
	}
	if got := h.MustDocker(t, "exec", ctr, "cat", "/data/f"); got != "keep" {
		t.Fatalf("data after refused rm: %q", got)
	}
	h.MustDocker(t, "rm", "-f", ctr)
	h.MustDocker(t, "volume", "rm", vol)
	if contains(volumeNames(t, h), vol) {
		t.Fatal("volume listed after rm")
	}
}

// Bad names and options get clear errors and create nothing.
func TestBadInput(t *testing.T) {
	h := env.Hosts[0]
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"slash in name", []string{"a/b"}, "invalid volume name"},
		{"single character", []string{"x"}, "invalid volume name"},
		{"leading dot", []string{".hidden"}, "invalid volume name"},
		{"unknown option", []string{"-o", "size=1G", "t-badopt"}, `unknown option "size" (valid options: gid, mode, uid)`},
		{"non-numeric uid", []string{"-o", "uid=bob", "t-baduid"}, "want a numeric id"},
		{"bad mode", []string{"-o", "mode=rwx", "t-badmode"}, "want octal permissions"},
	}
	before := volumeNames(t, h)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := h.Docker(harness.Ctx(t), append([]string{"volume", "create", "-d", "cargo"}, tt.args...)...)
			if r.Err == nil || !strings.Contains(r.Combined(), tt.want) {
				t.Fatalf("err=%v output=%q, want %q", r.Err, r.Combined(), tt.want)
			}
		})
	}
	if after := volumeNames(t, h); strings.Join(after, ",") != strings.Join(before, ",") {
		t.Fatalf("bad input changed the volume list: %v -> %v", before, after)
	}
}

// Containers running as a non-root user can use cargo volumes: through
// the uid/gid/mode options, and through the engine's copy of the image
// directory's ownership into a fresh volume.
func TestNonRootUser(t *testing.T) {
	h := env.Hosts[1]
	owned, plain, copied := name(t, h, "owned"), name(t, h, "plain"), name(t, h, "copied")
	h.MustDocker(t, "volume", "create", "-d", "cargo", "-o", "uid=1000", "-o", "gid=1000", "-o", "mode=0750", owned)
	run(t, h, "--user", "1000:1000", "-v", owned+":/srv/data", env.Image, "sh", "-c", "umask 022; echo mine > /srv/data/f && mkdir /srv/data/d")
	if got := run(t, h, "-v", owned+":/srv/data", env.Image, "stat", "-c", "%u:%g %a %n", "/srv/data", "/srv/data/f", "/srv/data/d"); got !=
		"1000:1000 750 /srv/data\n1000:1000 644 /srv/data/f\n1000:1000 755 /srv/data/d" {
		t.Fatalf("ownership:\n%s", got)
	}
	// Another non-root user is kept out by mode 0750.
	r := h.Docker(harness.Ctx(t), "run", "--rm", "--user", "2000:2000", "-v", owned+":/srv/data", env.Image, "cat", "/srv/data/f")
	if r.Err == nil || !strings.Contains(r.Combined(), "Permission denied") {
		t.Fatalf("user 2000 read a 0750 volume: %v %s", r.Err, r.Combined())
	}

	h.MustDocker(t, "volume", "create", "-d", "cargo", plain)
	r = h.Docker(harness.Ctx(t), "run", "--rm", "--user", "1000:1000", "-v", plain+":/srv/data", env.Image, "touch", "/srv/data/x")
	if r.Err == nil || !strings.Contains(r.Combined(), "Permission denied") {
		t.Fatalf("non-root wrote into a root-owned 0755 volume: %v %s", r.Err, r.Combined())
	}

	// /home/app belongs to uid 1000 in the image.
	h.MustDocker(t, "volume", "create", "-d", "cargo", copied)
	run(t, h, "--user", "1000:1000", "-v", copied+":/home/app", env.Image, "sh", "-c", "echo ok > /home/app/x")
	if got := run(t, h, "-v", copied+":/v", env.Image, "stat", "-c", "%u:%g", "/v", "/v/x"); got != "1000:1000\n1000:1000" {
		t.Fatalf("copied ownership: %q", got)
	}
}
