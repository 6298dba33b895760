package migrate_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cargo-migrate/cargo/internal/failpoint"
	"github.com/cargo-migrate/cargo/tests/harness"
)

// cleanupMove removes, when the test ends, what a move of web with vol
// from h1 to h2 leaves: the target's container and volume, the source's
// export volume.
func cleanupMove(t *testing.T, h1, h2 *harness.Host, web, vol string) {
	t.Cleanup(func() {
		h2.Docker(harness.Ctx(t), "rm", "-f", web)
		h2.Docker(harness.Ctx(t), "volume", "rm", "-f", vol)
		h1.Docker(harness.Ctx(t), "volume", "rm", "-f", vol+".cargo-export")
	})
}

// startApp runs a container on h1 with a cargo volume holding data, env,
// a label, a restart policy and a tmpfs, and returns the data's checksum.
func startApp(t *testing.T, h1 *harness.Host) (web, vol, sum string) {
	t.Helper()
	web, vol = h1.Unique(t, "web"), h1.Unique(t, "v")
	h1.MustDocker(t, "volume", "create", "-d", "cargo", vol)
	sum = h1.Run(t, "-v", vol+":/data", env.Image, "sh", "-c",
		"head -c 30000000 /dev/urandom > /data/blob; echo hello > /data/hello; md5sum < /data/blob")
	h1.MustDocker(t, "run", "-d", "--name", web, "--restart", "unless-stopped", "--stop-timeout", "1",
		"-e", "APP_MODE=prod", "-l", "tier=front", "--tmpfs", "/scratch", "-v", vol+":/data", env.Image,
		"sh", "-c", "while true; do date >> /data/log; sleep 0.2; done")
	return web, vol, sum
}

// A running container with a cargo volume moves to h2 in one command and
// runs there at once with its configuration and data; the source is
// stopped and released once the copy completes.
func TestMove(t *testing.T) {
	h1, h2 := env.Hosts[0], env.Hosts[1]
	web, vol, sum := startApp(t, h1)
	cleanupMove(t, h1, h2, web, vol)

	r := migrate(t, web, "--to", h2.Context, "--format", "json")
	if r.Err != nil {
		t.Fatalf("migrate: %v\n%s", r.Err, r.Combined())
	}
	var res struct {
		Container, Target string
		Phases            []struct{ Name string }
		Downtime          time.Duration `json:"downtime_ns"`
		Volumes           []string
	}
	if err := json.Unmarshal([]byte(r.Stdout), &res); err != nil {
		t.Fatalf("result: %v: %s", err, r.Stdout)
	}
	var phases []string
	for _, p := range res.Phases {
		phases = append(phases, p.Name)
	}
	if strings.Join(phases, ",") != "check,image,stop,layer,volumes,create,start" || res.Downtime <= 0 ||
		len(res.Volumes) != 1 || res.Volumes[0] != vol || res.Target != h2.Context {
		t.Fatalf("result %+v", res)
	}

	if got := h2.MustDocker(t, "inspect", "-f", "{{.State.Running}} {{.Config.Labels.tier}} {{.HostConfig.RestartPolicy.Name}} {{.HostConfig.Tmpfs}}", web); got != "true front unless-stopped map[/scratch:]" {
		t.Fatalf("on %s: %s", h2.Name, got)
	}
	if got := h2.MustDocker(t, "exec", web, "sh", "-c", "echo $APP_MODE; cat /data/hello; md5sum < /data/blob"); got != "prod\nhello\n"+sum {
		t.Fatalf("data on %s: %q", h2.Name, got)
	}
	if got := h1.MustDocker(t, "inspect", "-f", "{{.State.Running}}", web); got != "false" {
		t.Fatalf("the source still runs: %s", got)
	}
	// docker migrate status on the target shows the volume's copy.
	statusOf := func() []map[string]any {
		r := env.Docker(harness.Ctx(t), "--context", h2.Context, "migrate", "status", web, "--format", "json")
		rows, err := jsonLines(r.Stdout)
		if err != nil || r.Err != nil {
			t.Fatalf("status: %v %v: %s", r.Err, err, r.Combined())
		}
		return rows
	}
	rows := statusOf()
	if len(rows) != 1 || rows[0]["volume"] != vol || rows[0]["source"] != h1.Addr+":7450" ||
		(rows[0]["state"] != "copying" && rows[0]["state"] != "complete") {
		t.Fatalf("status rows %v", rows)
	}
	if r := env.Docker(harness.Ctx(t), "--context", h2.Context, "migrate", "status"); r.Err != nil ||
		!strings.Contains(r.Stdout, "CONTAINER") || !strings.Contains(r.Stdout, web) {
		t.Fatalf("status table: %v\n%s", r.Err, r.Stdout)
	}
	harness.Eventually(t, 2*time.Minute, "the copy completes and the source is released", func() error {
		st := h1.VolumeStatus(t, vol+".cargo-export")
		if st["state"] != "complete" {
			return fmt.Errorf("export %v", st)
		}
		return nil
	})
	harness.Eventually(t, time.Minute, "status shows the copy complete", func() error {
		if rows := statusOf(); rows[0]["state"] != "complete" || rows[0]["eta"] != "done" || rows[0]["bytes_copied"] != rows[0]["bytes_total"] {
			return fmt.Errorf("status %v", rows)
		}
		return nil
	})
	// The container keeps writing on h2.
	before := h2.MustDocker(t, "exec", web, "sh", "-c", "wc -l < /data/log")
	harness.Eventually(t, time.Minute, "the container writes on "+h2.Name, func() error {
		if now := h2.MustDocker(t, "exec", web, "sh", "-c", "wc -l < /data/log"); now == before {
			return fmt.Errorf("log stuck at %s lines", now)
		}
		return nil
	})
}

// rolledBack asserts that a move of startApp's container from h1 to h2
// was undone: the source runs again with its data and is not frozen, and
// the target keeps nothing.
func rolledBack(t *testing.T, h1, h2 *harness.Host, web, vol, sum string) {
	t.Helper()
	harness.Eventually(t, time.Minute, "the source runs again", func() error {
		if got := h1.MustDocker(t, "inspect", "-f", "{{.State.Running}}", web); got != "true" {
			return fmt.Errorf("running=%s", got)
		}
		return nil
	})
	if got := h1.MustDocker(t, "exec", web, "sh", "-c", "cat /data/hello; md5sum < /data/blob"); got != "hello\n"+sum {
		t.Fatalf("source data after rollback: %q", got)
	}
	if st := h1.VolumeStatus(t, vol); st["state"] != "local" {
		t.Fatalf("source volume still frozen: %v", st)
	}
	for _, args := range [][]string{{"inspect", web}, {"volume", "inspect", vol}} {
		if r := h2.Docker(harness.Ctx(t), args...); r.Err == nil {
			t.Errorf("%v exists on %s after the rollback", args, h2.Name)
		}
	}
}

// A failure after the source stopped rolls everything back: the source
// runs again with its data and is not frozen, and the target keeps
// nothing.
func TestMoveRollsBack(t *testing.T) {
	h1, h2 := env.Hosts[0], env.Hosts[1]
	web, vol, sum := startApp(t, h1)
	t.Setenv(failpoint.Env, "migrate.after-create=error")
	r := migrate(t, web, "--to", h2.Context)
	if r.Err == nil || !strings.Contains(r.Combined(), "create: failure injected at migrate.after-create") || !strings.Contains(r.Combined(), "rolled back: "+web+" runs on "+h1.Context+" again") {
		t.Fatalf("migrate: %v\n%s", r.Err, r.Combined())
	}
	rolledBack(t, h1, h2, web, vol, sum)
	if r := h1.Docker(harness.Ctx(t), "volume", "inspect", vol+".cargo-export"); r.Err == nil {
		t.Error("the export volume survived the rollback")
	}
}

// The container's own changes outside its volumes arrive: added,
// changed and deleted paths with their modes and owners, on an image the
// target never had.
func TestMoveCarriesWritableLayer(t *testing.T) {
	h1, h2 := env.Hosts[0], env.Hosts[1]
	web, base := h1.Unique(t, "web"), h1.Unique(t, "base")
	img := "cargo-test/" + h1.Unique(t, "img") + ":v1"
	// An image only h1 has: a commit of a container that added a file.
	h1.MustDocker(t, "run", "--name", base, env.Image, "sh", "-c", "echo from-image > /etc/img-file; echo keep > /etc/img-keep")
	h1.MustDocker(t, "commit", base, img)
	h1.MustDocker(t, "rm", base)
	h1.MustDocker(t, "run", "-d", "--name", web, "--stop-timeout", "1", img, "sleep", "3600")
	t.Cleanup(func() { h2.Docker(harness.Ctx(t), "rm", "-f", web) })
	h1.MustDocker(t, "exec", web, "sh", "-c", `set -e
		mkdir -p /srv/app/sub && echo added > /srv/app/sub/f && chown 1234:5678 /srv/app/sub/f && chmod 0640 /srv/app/sub/f
		ln -s /srv/app/sub/f /srv/link
		echo changed > /etc/img-keep && chmod 0600 /etc/img-keep
		rm /etc/img-file /bin/vi`)
	if r := h2.Docker(harness.Ctx(t), "image", "inspect", img); r.Err == nil {
		t.Fatalf("%s already has %s", h2.Name, img)
	}

	r := migrate(t, web, "--to", h2.Context, "--format", "json")
	if r.Err != nil {
		t.Fatalf("migrate: %v\n%s", r.Err, r.Combined())
	}
	var res struct {
		Phases []struct{ Name, Detail string }
	}
	if err := json.Unmarshal([]byte(r.Stdout), &res); err != nil {
		t.Fatal(err)
	}
	details := map[string]string{}
	for _, p := range res.Phases {
		details[p.Name] = p.Detail
	}
	// h2 has the busybox layer below the commit: only the commit is sent.
	if !strings.HasPrefix(details["image"], "copied "+img) || !strings.Contains(details["image"], "1 of 2 layers sent") ||
		!strings.Contains(details["layer"], "2 deleted") {
		t.Fatalf("phases %+v", res.Phases)
	}
	if got := h2.MustDocker(t, "inspect", "-f", "{{.Config.Image}} {{.State.Running}}", web); got != img+" true" {
		t.Fatalf("on %s: %s", h2.Name, got)
	}
	got := h2.MustDocker(t, "exec", web, "sh", "-c", `stat -c '%u:%g %a %s' /srv/app/sub/f; cat /srv/link /etc/img-keep
		stat -c %a /etc/img-keep; ls /etc/img-file /bin/vi 2>&1; true`)
	want := "1234:5678 640 6\nadded\nchanged\n600\n" +
		"ls: /etc/img-file: No such file or directory\nls: /bin/vi: No such file or directory"
	if got != want {
		t.Fatalf("%s's files on %s:\n%s\nwant:\n%s", web, h2.Name, got, want)
	}
}

// A stopped container moves and stays stopped; a failed move of one
// still removes what it made.
func TestMoveStopped(t *testing.T) {
	h1, h2 := env.Hosts[0], env.Hosts[1]
	web, vol := h1.Unique(t, "web"), h1.Unique(t, "v")
	cleanupMove(t, h1, h2, web, vol)
	h1.MustDocker(t, "volume", "create", "-d", "cargo", vol)
	h1.MustDocker(t, "create", "--name", web, "-v", vol+":/data", env.Image, "sleep", "3600")

	t.Setenv(failpoint.Env, "migrate.after-create=error")
	r := migrate(t, web, "--to", h2.Context)
	if r.Err == nil || !strings.Contains(r.Combined(), "is left on "+h1.Context+" as it was") {
		t.Fatalf("failed move: %v\n%s", r.Err, r.Combined())
	}
	for _, args := range [][]string{{"inspect", web}, {"volume", "inspect", vol}} {
		if r := h2.Docker(harness.Ctx(t), args...); r.Err == nil {
			t.Errorf("%v exists on %s after the rollback", args, h2.Name)
		}
	}
	if st := h1.VolumeStatus(t, vol); st["state"] != "local" {
		t.Fatalf("source volume still frozen: %v", st)
	}

	t.Setenv(failpoint.Env, "")
	r = migrate(t, web, "--to", h2.Context)
	if r.Err != nil || !strings.Contains(r.Stdout, "stopped as it was") {
		t.Fatalf("move: %v\n%s", r.Err, r.Combined())
	}
	if got := h2.MustDocker(t, "inspect", "-f", "{{.State.Status}}", web); got != "created" {
		t.Fatalf("on %s the container is %s", h2.Name, got)
	}
}

// The target container has the source's configuration, setting by setting.
func TestMoveKeepsConfig(t *testing.T) {
	h1, h2 := env.Hosts[0], env.Hosts[1]
	web := h1.Unique(t, "web")
	t.Cleanup(func() { h2.Docker(harness.Ctx(t), "rm", "-f", web) })
	h1.MustDocker(t, "run", "-d", "--name", web, "--user", "1000:1000", "-w", "/home/app", "--memory", "64m", "--cpu-shares", "512",
		"--health-cmd", "true", "--health-interval", "5s", "--log-opt", "max-size=1m", "--stop-signal", "SIGUSR1", "--stop-timeout", "1",
		"--hostname", "myhost", "-e", "A=1", "-l", "L=1", "--restart", "on-failure:3", "--cap-add", "NET_ADMIN", "--read-only",
		"--tmpfs", "/tmp:size=1m", "--entrypoint", "/bin/sh", env.Image, "-c", "sleep 3600")
	const tmpl = `{{.Config.User}}|{{.Config.WorkingDir}}|{{.HostConfig.Memory}}|{{.HostConfig.CpuShares}}|{{json .Config.Healthcheck}}|` +
		`{{json .HostConfig.LogConfig}}|{{.Config.StopSignal}}|{{.Config.StopTimeout}}|{{.Config.Hostname}}|{{json .Config.Env}}|` +
		`{{json .Config.Labels}}|{{json .HostConfig.RestartPolicy}}|{{.HostConfig.CapAdd}}|{{.HostConfig.ReadonlyRootfs}}|` +
		`{{json .HostConfig.Tmpfs}}|{{json .Config.Entrypoint}}|{{json .Config.Cmd}}`
	want := h1.MustDocker(t, "inspect", "-f", tmpl, web)
	if r := migrate(t, web, "--to", h2.Context); r.Err != nil {
		t.Fatalf("migrate: %v\n%s", r.Err, r.Combined())
	}
	if got := h2.MustDocker(t, "inspect", "-f", tmpl, web); got != want {
		t.Fatalf("on %s:\n%s\nwant (as on %s):\n%s", h2.Name, got, h1.Name, want)
	}
	if got := h2.MustDocker(t, "exec", web, "id", "-u"); got != "1000" {
		t.Errorf("runs as %s on %s", got, h2.Name)
	}
}
