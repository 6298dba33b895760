package migrate_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cargo-migrate/cargo/tests/harness"
)

// sshTarget runs an ssh server inside h, reachable from the other hosts
// as root with a key of the test's own, and returns a docker context
// reaching h's engine through it (`docker context create --docker
// host=ssh://...`, as users make them) and a PATH whose ssh uses that key.
func sshTarget(t *testing.T, h *harness.Host) (context, path string) {
	t.Helper()
	dir := t.TempDir()
	keygen := func(name string) {
		if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", filepath.Join(dir, name)).CombinedOutput(); err != nil {
			t.Fatalf("ssh-keygen: %v: %s", err, out)
		}
	}
	keygen("host_key")
	keygen("id")
	pub, err := os.ReadFile(filepath.Join(dir, "id.pub"))
	if err != nil {
		t.Fatal(err)
	}
	write := func(name, text string, mode os.FileMode) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), mode); err != nil {
			t.Fatal(err)
		}
	}
	write("authorized_keys", string(pub), 0o600)
	write("sshd_config", fmt.Sprintf(`ListenAddress %s:22
HostKey %s/host_key
AuthorizedKeysFile %s/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PidFile %s/sshd.pid
`, h.Addr, dir, dir, dir), 0o600)
	// The client side: a wrapper first in PATH, since ssh reads its
	// configuration from the user's real home, not from $HOME.
	write("ssh_config", fmt.Sprintf(`Host %s
	User root
	IdentityFile %s/id
	StrictHostKeyChecking no
	UserKnownHostsFile /dev/null
	LogLevel ERROR
`, h.Addr, dir), 0o600)
	if err := os.Mkdir(filepath.Join(dir, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	write("bin/ssh", fmt.Sprintf("#!/bin/sh\nexec /usr/bin/ssh -F %s/ssh_config \"$@\"\n", dir), 0o755)

	// sshd inside h's namespaces: its sessions see h's /run, hence h's
	// engine on the default socket, which `docker system dial-stdio` uses.
	if r := h.Exec(harness.Ctx(t), "mkdir", "-p", "/run/sshd"); r.Err != nil {
		t.Fatal(r.Err)
	}
	sshd := h.Command("/usr/sbin/sshd", "-D", "-e", "-f", filepath.Join(dir, "sshd_config"))
	var log strings.Builder
	sshd.Stdout, sshd.Stderr = &log, &log
	if err := sshd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = sshd.Process.Kill()
		_ = sshd.Wait() // killed: its error says so
	})

	context = env.Prefix + "-" + h.Name + "-ssh"
	if r := env.Docker(harness.Ctx(t), "context", "create", context, "--docker", "host=ssh://root@"+h.Addr); r.Err != nil {
		t.Fatal(r.Err)
	}
	t.Cleanup(func() { env.Docker(harness.Ctx(t), "context", "rm", "-f", context) })
	return context, filepath.Join(dir, "bin") + ":" + os.Getenv("PATH")
}

// The issue's own words: the target is a docker context over ssh. The
// CLI runs on h1 (inside its network), the source is h1's engine and the
// target h2's engine, reached through ssh.
func TestMoveOverSSH(t *testing.T) {
	h1, h2 := env.Hosts[0], env.Hosts[1]
	web, vol, sum := startApp(t, h1)
	cleanupMove(t, h1, h2, web, vol)
	target, path := sshTarget(t, h2)
	// docker on h1, with h1's engine the current context.
	onH1 := func(args ...string) harness.Result {
		cmd := append([]string{"env", "PATH=" + path, "DOCKER_CONFIG=" + env.DockerConfig, "DOCKER_CLI_HINTS=false",
			"DOCKER_CONTEXT=" + h1.Context, "docker"}, args...)
		return h1.Exec(harness.Ctx(t), cmd...)
	}
	harness.Eventually(t, 30*time.Second, "h2's engine answers over ssh", func() error {
		if r := onH1("--context", target, "version", "-f", "{{.Server.Version}}"); r.Err != nil {
			return fmt.Errorf("%w: %s", r.Err, r.Stderr)
		}
		return nil
	})

	if r := onH1("migrate", "check", web, "--to", target); r.Err != nil {
		t.Fatalf("check over ssh: %v\n%s", r.Err, r.Stdout+r.Stderr)
	}
	r := onH1("migrate", web, "--to", target)
	if r.Err != nil || !strings.Contains(r.Stdout, web+" runs on "+target) {
		t.Fatalf("migrate over ssh: %v\n%s", r.Err, r.Stdout+r.Stderr)
	}
	if got := h2.MustDocker(t, "exec", web, "sh", "-c", "cat /data/hello; md5sum < /data/blob"); got != "hello\n"+sum {
		t.Fatalf("data on %s: %q", h2.Name, got)
	}
	// The status on the target, asked over ssh, names the source context.
	r = onH1("--context", target, "migrate", "status", web, "--format", "{{.Volume}} {{.SourceContext}}")
	if r.Err != nil || strings.TrimSpace(r.Stdout) != vol+" "+h1.Context {
		t.Fatalf("status over ssh: %v %q %s", r.Err, r.Stdout, r.Stderr)
	}
}
