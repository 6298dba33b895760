package migrate_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cargo-migrate/cargo/tests/harness"
)

// statusRows is `docker migrate status CONTAINER --format json` on h.
func statusRows(t *testing.T, h *harness.Host, ctr string) []map[string]any {
	t.Helper()
	r := migrateOn(t, h, "status", ctr, "--format", "json")
	rows, err := jsonLines(r.Stdout)
	if err != nil || r.Err != nil {
		t.Fatalf("status on %s: %v %v: %s", h.Name, r.Err, err, r.Combined())
	}
	return rows
}

// waitComplete waits until every moved volume of ctr on h is copied.
func waitComplete(t *testing.T, h *harness.Host, ctr string, n int) {
	t.Helper()
	harness.Eventually(t, 3*time.Minute, "the copy to "+h.Name+" completes", func() error {
		rows := statusRows(t, h, ctr)
		if len(rows) != n {
			return fmt.Errorf("%d rows, want %d: %v", len(rows), n, rows)
		}
		for _, r := range rows {
			if r["state"] != "complete" {
				return fmt.Errorf("%v", r)
			}
		}
		return nil
	})
}

// lsRow finds ctr on context in `docker migrate ls --format json`.
func lsRow(t *testing.T, context, ctr string) map[string]any {
	t.Helper()
	r := migrate(t, "ls", "--format", "json")
	rows, err := jsonLines(r.Stdout)
	if err != nil || r.Err != nil {
		t.Fatalf("ls: %v %v: %s", r.Err, err, r.Combined())
	}
	for _, row := range rows {
		if row["context"] == context && row["container"] == ctr {
			return row
		}
	}
	t.Fatalf("ls lacks %s on %s: %v", ctr, context, rows)
	return nil
}

// The main case: a container with a cargo volume, a local-driver
// volume, an anonymous volume, env, labels, a restart policy, a published
// port and a user-defined network moves from h1 to h2. It runs there at
// once with the same configuration and data, the copy completes,
// failover cuts every tie to h1, and with h1's engine gone the container
// still runs with its data.
func TestMoveEverything(t *testing.T) {
	h1, h2 := env.Hosts[0], env.Hosts[1]
	web, cv, lv, net := h1.Unique(t, "web"), h1.Unique(t, "cv"), h1.Unique(t, "lv"), h1.Unique(t, "net")
	var anon string
	t.Cleanup(func() {
		h2.Docker(harness.Ctx(t), "rm", "-f", web)
		h2.Docker(harness.Ctx(t), "volume", "rm", "-f", cv, lv, anon)
		h2.Docker(harness.Ctx(t), "network", "rm", net)
	})
	h1.MustDocker(t, "volume", "create", "-d", "cargo", cv)
	h1.MustDocker(t, "volume", "create", lv)
	h1.MustDocker(t, "network", "create", net)
	h1.Run(t, "-v", cv+":/cargo", "-v", lv+":/local", env.Image, "sh", "-c",
		"head -c 20000000 /dev/urandom > /cargo/blob; head -c 20000000 /dev/urandom > /local/blob; mkdir -p /cargo/www; echo hello > /cargo/www/index.html")
	h1.MustDocker(t, "run", "-d", "--name", web, "--network", net, "--network-alias", "webalias", "-p", "18080:80",
		"-v", cv+":/cargo", "-v", lv+":/local", "-v", "/anon", "-e", "APP_MODE=prod", "-l", "tier=front",
		"--restart", "unless-stopped", "--stop-timeout", "1", env.Image,
		"sh", "-c", "echo anon > /anon/f; httpd -p 80 -h /cargo/www; while true; do date >> /cargo/log; sleep 0.2; done")
	// Written just before the move: it must be there on h2.
	h1.MustDocker(t, "exec", web, "sh", "-c", "echo before-stop > /local/marker")
	const sums = "md5sum /cargo/blob /local/blob /anon/f /local/marker"
	want := h1.MustDocker(t, "exec", web, "sh", "-c", sums)
	anon = h1.MustDocker(t, "inspect", "-f", `{{range .Mounts}}{{if eq .Destination "/anon"}}{{.Name}}{{end}}{{end}}`, web)

	r := migrate(t, web, "--to", h2.Context)
	if r.Err != nil {
		t.Fatalf("migrate: %v\n%s", r.Err, r.Combined())
	}
	if !strings.Contains(r.Stdout, "runs on "+h2.Context+"; downtime") {
		t.Errorf("no downtime in:\n%s", r.Stdout)
	}

	// The same configuration, the volumes as cargo volumes of the same names.
	got := h2.MustDocker(t, "inspect", "-f", `{{.State.Running}} {{.Config.Labels.tier}} {{.HostConfig.RestartPolicy.Name}} `+
		`{{range $p, $b := .HostConfig.PortBindings}}{{$p}}->{{(index $b 0).HostPort}}{{end}} `+
		`{{range $n, $e := .NetworkSettings.Networks}}{{$n}}:{{join $e.Aliases ","}}{{end}}`, web)
	// Engines before API 1.45 add the container's own short ID as an alias.
	id := h2.MustDocker(t, "inspect", "-f", "{{.Id}}", web)
	got = strings.TrimSuffix(got, ","+id[:12])
	if want := fmt.Sprintf("true front unless-stopped 80/tcp->18080 %s:webalias", net); got != want {
		t.Fatalf("on %s: %q, want %q", h2.Name, got, want)
	}
	mounts := h2.MustDocker(t, "inspect", "-f", `{{range .Mounts}}{{.Name}}={{.Driver}} {{end}}`, web)
	for _, v := range []string{cv, lv, anon} {
		if !strings.Contains(mounts, v+"=cargo") {
			t.Errorf("volume %s is not a cargo volume on %s: %s", v, h2.Name, mounts)
		}
	}
	// The data reads the same at once, before the copy is done.
	if got := h2.MustDocker(t, "exec", web, "sh", "-c", "echo $APP_MODE; "+sums); got != "prod\n"+want {
		t.Fatalf("data on %s:\n%s\nwant:\n%s", h2.Name, got, want)
	}
	if got := h2.MustDocker(t, "exec", web, "wget", "-qO-", "http://webalias/index.html"); got != "hello" {
		t.Errorf("the network alias on %s: %q", h2.Name, got)
	}
	if r := h2.Exec(harness.Ctx(t), "curl", "-sf", "http://127.0.0.1:18080/index.html"); r.Err != nil || strings.TrimSpace(r.Stdout) != "hello" {
		t.Errorf("the published port on %s: %v %q", h2.Name, r.Err, r.Stdout)
	}

	waitComplete(t, h2, web, 3)
	if row := lsRow(t, h2.Context, web); row["migration"] != "moved in" || !strings.HasPrefix(row["progress"].(string), "complete") {
		t.Errorf("ls on %s: %v", h2.Name, row)
	}
	r = migrateOn(t, h2, "failover", web, "--remove-source", "--format", "json")
	if r.Err != nil {
		t.Fatalf("failover: %v\n%s", r.Err, r.Combined())
	}
	var res struct {
		Volumes, Released []string
		RemovedSource     bool `json:"removed_source"`
		Warnings          []string
	}
	if err := json.Unmarshal([]byte(r.Stdout), &res); err != nil {
		t.Fatal(err)
	}
	if len(res.Volumes) != 3 || len(res.Released) != 3 || !res.RemovedSource || len(res.Warnings) > 0 {
		t.Fatalf("failover result %+v", res)
	}
	for _, row := range statusRows(t, h2, web) {
		if row["settled"] != true {
			t.Errorf("not settled after failover: %v", row)
		}
	}
	if r := h1.Docker(harness.Ctx(t), "inspect", web); r.Err == nil {
		t.Error("the source container survived --remove-source")
	}
	vols := h1.MustDocker(t, "volume", "ls", "-q")
	for _, v := range []string{cv, lv, anon, cv + ".cargo-export"} {
		if slices.Contains(strings.Fields(vols), v) {
			t.Errorf("volume %s survived on %s", v, h1.Name)
		}
	}

	// h1 is gone for good: h2 runs on, and restarts, with all its data.
	h1.StopEngine(t)
	t.Cleanup(func() { h1.StartEngine(t) })
	h2.MustDocker(t, "restart", web)
	if got := h2.MustDocker(t, "exec", web, "sh", "-c", sums); got != want {
		t.Fatalf("data on %s with %s gone:\n%s", h2.Name, h1.Name, got)
	}
	before := h2.MustDocker(t, "exec", web, "sh", "-c", "wc -l < /cargo/log")
	harness.Eventually(t, time.Minute, "the container writes on "+h2.Name, func() error {
		if now := h2.MustDocker(t, "exec", web, "sh", "-c", "wc -l < /cargo/log"); now == before {
			return fmt.Errorf("log stuck at %s lines", now)
		}
		return nil
	})
}

// A container moves on (h1 → h2 → h3) before its first copy completed;
// failover refuses until the copy is complete, then succeeds.
func TestMoveChain(t *testing.T) {
	h1, h2, h3 := env.Hosts[0], env.Hosts[1], env.Hosts[2]
	env.PluginLogOnFailure(t)
	web, vol := h1.Unique(t, "web"), h1.Unique(t, "v")
	t.Cleanup(func() {
		for _, h := range []*harness.Host{h2, h3} {
			h.Docker(harness.Ctx(t), "rm", "-f", web)
			h.Docker(harness.Ctx(t), "volume", "rm", "-f", vol+".cargo-export")
			h.Docker(harness.Ctx(t), "volume", "rm", "-f", vol)
		}
	})
	h1.MustDocker(t, "volume", "create", "-d", "cargo", vol)
	sum := h1.Run(t, "-v", vol+":/data", env.Image, "sh", "-c", "head -c 100000000 /dev/urandom > /data/blob; md5sum < /data/blob")
	h1.MustDocker(t, "run", "-d", "--name", web, "--stop-timeout", "1", "-v", vol+":/data", env.Image, "sleep", "3600")
	h1.Throttle(t, "50mbit") // about 16 s for the blob

	if r := migrate(t, web, "--to", h2.Context); r.Err != nil {
		t.Fatalf("h1 → h2: %v\n%s", r.Err, r.Combined())
	}
	if st := h2.VolumeStatus(t, vol); st["state"] != "copying" {
		t.Fatalf("the first copy is not under way: %v", st)
	}
	if row := lsRow(t, h1.Context, web); row["migration"] != "moved out" || row["to"] != h2.Context {
		t.Errorf("ls on %s: %v", h1.Name, row)
	}
	if r := migrateOn(t, h2, web, "--to", h3.Context); r.Err != nil {
		t.Fatalf("h2 → h3: %v\n%s", r.Err, r.Combined())
	}
	// Not complete yet (the blob crawls from h1): failover refuses and
	// says how far the copy is.
	r := migrateOn(t, h3, "failover", web)
	if r.Err == nil || !strings.Contains(r.Stderr, "is not complete") || !strings.Contains(r.Stderr, "--wait") {
		t.Fatalf("failover before the copy completed: %v\n%s", r.Err, r.Combined())
	}
	if got := h3.MustDocker(t, "exec", web, "sh", "-c", "md5sum < /data/blob"); got != sum {
		// Tell a wrong read from wrong data: read again, now and once
		// the copy is complete, through a fresh container too.
		again := h3.MustDocker(t, "exec", web, "sh", "-c", "stat -c %s /data/blob; md5sum < /data/blob")
		waitComplete(t, h3, web, 1)
		after := h3.MustDocker(t, "exec", web, "sh", "-c", "md5sum < /data/blob")
		t.Fatalf("data on %s: %s, want %s; read again: %s; after the copy: %s", h3.Name, got, sum, again, after)
	}
	r = migrateOn(t, h3, "failover", "--wait", web)
	if r.Err != nil || !strings.Contains(r.Stdout, "no longer depends") {
		t.Fatalf("failover --wait: %v\n%s", r.Err, r.Combined())
	}
	if got := h3.MustDocker(t, "exec", web, "sh", "-c", "md5sum < /data/blob"); got != sum {
		t.Fatalf("data on %s after failover: %s", h3.Name, got)
	}
	if st := h3.VolumeStatus(t, vol); st["settled"] != true {
		t.Fatalf("%s after failover: %v", h3.Name, st)
	}
}

// ls lists every context at once; one whose engine is gone is a row of
// its own, not a failure.
func TestLsUnreachable(t *testing.T) {
	h1 := env.Hosts[0]
	web := h1.Unique(t, "web")
	h1.MustDocker(t, "run", "-d", "--name", web, env.Image, "sleep", "3600")
	gone := env.Prefix + "-gone"
	if r := env.Docker(harness.Ctx(t), "context", "create", gone, "--docker", "host=unix://"+env.Base+"/gone.sock"); r.Err != nil {
		t.Fatal(r.Err)
	}
	t.Cleanup(func() { env.Docker(harness.Ctx(t), "context", "rm", "-f", gone) })

	if row := lsRow(t, h1.Context, web); row["state"] != "running" || row["migration"] != "-" || row["current"] != true {
		t.Errorf("ls row of %s: %v", web, row)
	}
	if row := lsRow(t, gone, ""); row["state"] != "unreachable" || !strings.Contains(row["error"].(string), gone) {
		t.Errorf("ls row of the dead context: %v", row)
	}
	r := migrate(t, "ls")
	table, notes, _ := strings.Cut(r.Stdout, "\n\n")
	if r.Err != nil || !strings.Contains(table, h1.Context+" *") || !strings.Contains(table, "unreachable") {
		t.Fatalf("ls table: %v\n%s", r.Err, r.Combined())
	}
	// The dead context is one short row; why, under the table.
	if strings.Contains(table, "cannot reach") || !strings.Contains(notes, gone+": cannot reach the engine of docker context") {
		t.Fatalf("ls does not say under its table why %s is unreachable:\n%s", gone, r.Stdout)
	}
}

// A round trip, as for host maintenance: h1 → h2, failover, then back to
// h1. Before the failover the way back is refused up front, naming the
// volume left on h1.
func TestMoveBack(t *testing.T) {
	h1, h2 := env.Hosts[0], env.Hosts[1]
	web, vol, sum := startApp(t, h1)
	cleanupMove(t, h1, h2, web, vol)
	if r := migrate(t, web, "--to", h2.Context); r.Err != nil {
		t.Fatalf("h1 → h2: %v\n%s", r.Err, r.Combined())
	}
	// h1 still has the stopped container and its volume.
	r := migrateOn(t, h2, "check", web, "--to", h1.Context)
	if r.Err == nil || !strings.Contains(r.Stdout, "already has volume(s) "+vol) || !strings.Contains(r.Stdout, "already has a container named") {
		t.Fatalf("check of the way back before failover: %v\n%s", r.Err, r.Combined())
	}
	waitComplete(t, h2, web, 1)
	if r := migrateOn(t, h2, "failover", web, "--remove-source"); r.Err != nil {
		t.Fatalf("failover: %v\n%s", r.Err, r.Combined())
	}
	h2.MustDocker(t, "exec", web, "sh", "-c", "echo from-h2 > /data/h2")
	if r := migrateOn(t, h2, web, "--to", h1.Context); r.Err != nil {
		t.Fatalf("h2 → h1: %v\n%s", r.Err, r.Combined())
	}
	if got := h1.MustDocker(t, "exec", web, "sh", "-c", "cat /data/hello /data/h2; md5sum < /data/blob"); got != "hello\nfrom-h2\n"+sum {
		t.Fatalf("data back on %s: %q", h1.Name, got)
	}
	t.Cleanup(func() {
		h1.Docker(harness.Ctx(t), "rm", "-f", web)
		h1.Docker(harness.Ctx(t), "volume", "rm", "-f", vol)
		h2.Docker(harness.Ctx(t), "volume", "rm", "-f", vol+".cargo-export")
	})
}
