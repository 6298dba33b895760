// Command cargo-volume-plugin is the `cargo` managed volume plugin. It runs
// inside the plugin container the engine starts (see config.json) and
// serves the volume plugin protocol on a unix socket.
//
// It runs as two processes: the one the engine starts only holds the
// FUSE connections of federated volumes' views and starts the other, the
// worker, which does everything, again when it dies (internal/fusekeep),
// so a crash of the worker is a pause for the containers reading a view.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/docker/go-plugins-helpers/volume"

	"github.com/cargo-migrate/cargo/internal/driver"
	"github.com/cargo-migrate/cargo/internal/export"
	"github.com/cargo-migrate/cargo/internal/failpoint"
	"github.com/cargo-migrate/cargo/internal/fusekeep"
	"github.com/cargo-migrate/cargo/internal/metrics"
	"github.com/cargo-migrate/cargo/internal/peer"
	"github.com/cargo-migrate/cargo/internal/pluginenv"
	"github.com/cargo-migrate/cargo/internal/state"
	"github.com/cargo-migrate/cargo/internal/version"
)

func main() {
	if len(os.Args) > 1 && (os.Args[1] == "--version" || os.Args[1] == "version") {
		fmt.Printf("cargo volume plugin %s (%s)\n", version.Version, version.Revision)
		return
	}
	if !fusekeep.InWorker() {
		// The engine copies the plugin's stdout into its log at level
		// info (stderr at level error).
		os.Exit(fusekeep.Hold(slog.New(slog.NewTextHandler(os.Stdout, nil))))
	}
	if err := run(); err != nil {
		slog.Error("cargo plugin stopped", "error", err)
		os.Exit(1)
	}
}

func run() error {
	cfg, err := pluginenv.FromEnv(os.Getenv)
	if err != nil {
		return err
	}
	level := slog.LevelInfo
	if cfg.Debug {
		level = slog.LevelDebug
	}
	// The engine copies the plugin's stdout into its log at level info
	// (stderr at level error).
	log := slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{Level: level}))
	slog.SetDefault(log)
	log.Info("starting cargo volume plugin", "version", version.Version,
		"listen", cfg.ListenAddr, "advertise", cfg.AdvertiseAddr, "advertise_from", cfg.AdvertiseSource)
	if cfg.LegacyState {
		log.Warn("the state mount is the host's whole plugins directory, which shows this plugin every other plugin's files; "+
			"mount only cargo's: docker plugin disable cargo; docker plugin set cargo state.source=<the current source>/cargo; docker plugin enable cargo",
			"state", cfg.StateDir)
	}
	// Tests arm failpoints of the running plugin by writing this file on
	// the host; a release build has no failpoints and ignores it.
	failpoint.UseFile(filepath.Join(cfg.StateDir, "failpoints"))
	keep, err := fusekeep.Connect()
	if err != nil {
		return err
	}

	store, err := state.Open(cfg.StateDir)
	if err != nil {
		return err
	}
	// The peer identity outlives restarts and upgrades: targets pinned
	// its fingerprint.
	id, err := peer.LoadOrCreateIdentity(filepath.Join(cfg.StateDir, "identity"))
	if err != nil {
		return err
	}
	exports := export.NewRegistry()
	// New returns at once and recovers the volumes in the background: the
	// engine gives a restarted plugin only a few seconds to open its
	// socket, and disables it after.
	d, err := driver.New(driver.Config{
		Store: store, MountDir: cfg.MountDir, RunDir: cfg.RunDir, Mounter: driver.HostMounter{}, Log: log,
		Exports: exports, Advertise: cfg.AdvertiseAddr, Fingerprint: id.Fingerprint(), Passthrough: true,
		EngineVolumes: cfg.EngineVolumes, EngineContainers: cfg.EngineContainers, Keeper: keep,
	})
	if err != nil {
		return err
	}
	defer d.Close()
	go dropUnclaimed(d.Recovered(), keep, log)
	l, err := listenUnix(cfg.Socket)
	if err != nil {
		return err
	}
	h := volume.NewHandler(d)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	errc := make(chan error, 3)
	go func() { errc <- h.Serve(l) }()
	log.Info("serving the volume plugin API", "socket", cfg.Socket)

	// The peer service listens once the open exports are served again: a
	// target asking for one before would be told it is gone, which ends
	// its copy; refused connections it retries.
	var peerOpts peer.ServerOptions
	if cfg.MetricsAddr != "" {
		m := metrics.New(d)
		peerOpts.Observe = m.ObservePeerRequest
		ml, err := net.Listen("tcp", cfg.MetricsAddr)
		if err != nil {
			return fmt.Errorf("the metrics cannot be served on METRICS_ADDR=%s: %w", cfg.MetricsAddr, err)
		}
		msrv := &http.Server{Handler: m.Handler(), ReadHeaderTimeout: 10 * time.Second}
		defer msrv.Close()
		go func() {
			if err := msrv.Serve(ml); !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("metrics: %w", err)
			}
		}()
		log.Info("serving metrics", "metrics", cfg.MetricsAddr)
	}
	srv := peer.NewServer(exports, id, peerOpts, log)
	go func() {
		select {
		case <-d.ExportsServed():
		case <-ctx.Done():
			return
		}
		peerL, err := net.Listen("tcp", cfg.ListenAddr)
		if err != nil {
			errc <- fmt.Errorf("the peer service cannot listen on LISTEN_ADDR=%s: %w", cfg.ListenAddr, err)
			return
		}
		log.Info("serving the peer service", "peer", cfg.ListenAddr, "fingerprint", id.Fingerprint())
		errc <- fmt.Errorf("peer service: %w", srv.Serve(peerL))
	}()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	// Volumes stay mounted across a plugin stop: every change was on disk
	// before it was acknowledged, and the next start reconciles.
	l.Close()
	srv.Close()
	log.Info("stopped")
	return nil
}

// dropUnclaimed lets go of the views the previous worker kept that no
// volume served again once every volume is recovered (the volume is gone,
// failed, or its copy completed meanwhile): their readers then get
// "transport endpoint is not connected", as they would without a keeper.
func dropUnclaimed(recovered <-chan struct{}, keep *fusekeep.Client, log *slog.Logger) {
	<-recovered
	for _, name := range keep.Unclaimed() {
		log.Warn("a view of a source kept across the restart is not served again; its readers get errors until restarted", "view", name)
		if err := keep.Drop(name); err != nil {
			log.Error("letting go of a kept view", "view", name, "error", err)
		}
	}
}

func listenUnix(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("creating socket directory: %w", err)
	}
	// A socket left by a killed predecessor would make Listen fail.
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("removing stale socket: %w", err)
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", path, err)
	}
	return l, nil
}
