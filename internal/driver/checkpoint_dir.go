package driver

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// The plugin reaches into the engine's containers directory only for a
// checkpoint: ID/checkpoints/NAME, ID/checkpoints itself when the target
// container has none yet, and, beside NAME, the temporary directory a
// fetch fills (fetchPrefix+NAME). Every path below the containers
// directory is resolved by openat2 beneath it and through no symlink at
// all, so neither a hostile name (refused before, by checkpointRef) nor a
// symlink inside can lead anywhere else. What takes a path (the export's
// walk, the replica) is given the directory opened so, as
// /proc/self/fd/N, and never resolves the path again.

// fetchPrefix names the directory a fetch of checkpoint NAME fills before
// it is renamed to NAME.
const fetchPrefix = ".cargo-fetch-"

// openBeneath opens directory rel below dir, refusing to leave dir and to
// follow any symlink.
func openBeneath(dir *os.File, rel string) (*os.File, error) {
	how := unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	}
	for {
		fd, err := unix.Openat2(int(dir.Fd()), rel, &how)
		// EAGAIN: a rename or mount raced the lookup; look again.
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, &os.PathError{Op: "open", Path: filepath.Join(dir.Name(), rel), Err: err}
		}
		return os.NewFile(uintptr(fd), filepath.Join(dir.Name(), rel)), nil
	}
}

// fdPath names an open directory for code that takes a path, without
// resolving its name again.
func fdPath(f *os.File) string { return "/proc/self/fd/" + strconv.Itoa(int(f.Fd())) }

// containersDir opens the engine's containers directory.
func (d *Driver) containersDir() (*os.File, error) {
	if d.cfg.EngineContainers == "" {
		return nil, errors.New("this plugin has no view of the engine's containers directory")
	}
	f, err := os.OpenFile(d.cfg.EngineContainers, os.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return nil, fmt.Errorf("the engine's containers directory is not mounted in the plugin (%w); "+
			"if the engine's data root is not /var/lib/docker, run `docker plugin set cargo engine-containers.source=DATA-ROOT/containers`", err)
	}
	return f, nil
}

// beneathError says in the user's terms why rel, below the containers
// directory, could not be opened.
func beneathError(rel string, err error) error {
	switch {
	case errors.Is(err, unix.ENOENT):
		return fmt.Errorf("the engine's containers directory has no %s", rel)
	case errors.Is(err, unix.ELOOP), errors.Is(err, unix.EXDEV):
		return fmt.Errorf("%s in the engine's containers directory: refused, its path goes through a symlink", rel)
	case errors.Is(err, unix.ENOTDIR):
		return fmt.Errorf("%s in the engine's containers directory is not a directory", rel)
	}
	return fmt.Errorf("%s in the engine's containers directory: %w", rel, err)
}

// openCheckpoint opens the checkpoint's directory on the source.
func (d *Driver) openCheckpoint(ref checkpointRef) (*os.File, error) {
	root, err := d.containersDir()
	if err != nil {
		return nil, err
	}
	defer root.Close()
	dir, err := openBeneath(root, ref.path())
	if err != nil {
		return nil, beneathError(ref.path(), err)
	}
	return dir, nil
}

// checkpointsDir opens the target container's checkpoints directory,
// creating it (0700, owned by the plugin's root) when the container has
// none yet. The container must exist.
func (d *Driver) checkpointsDir(id string) (*os.File, error) {
	root, err := d.containersDir()
	if err != nil {
		return nil, err
	}
	defer root.Close()
	ctr, err := openBeneath(root, id)
	if errors.Is(err, unix.ENOENT) {
		return nil, fmt.Errorf("the engine has no container %s; create it first", id)
	}
	if err != nil {
		return nil, beneathError(id, err)
	}
	defer ctr.Close()
	if err := unix.Mkdirat(int(ctr.Fd()), "checkpoints", 0o700); err != nil && !errors.Is(err, unix.EEXIST) {
		return nil, fmt.Errorf("creating %s/checkpoints: %w", id, err)
	}
	cps, err := openBeneath(ctr, "checkpoints")
	if err != nil {
		return nil, beneathError(id+"/checkpoints", err)
	}
	return cps, nil
}

// placeCheckpoint renames the fetched tree, from/data, to name in the
// checkpoints directory cps, in one step that replaces nothing, and makes
// the rename durable.
func placeCheckpoint(cps, from *os.File, name string) error {
	err := unix.Renameat2(int(from.Fd()), "data", int(cps.Fd()), name, unix.RENAME_NOREPLACE)
	if errors.Is(err, unix.EEXIST) {
		return errCheckpointExists(name)
	}
	if err != nil {
		return fmt.Errorf("placing the checkpoint: %w", err)
	}
	return cps.Sync()
}

func errCheckpointExists(name string) error {
	return fmt.Errorf("the container already has a checkpoint named %q; remove it first (docker checkpoint rm)", name)
}

// removeBeneath removes name, and all it holds, from directory dir, through
// an os.Root, which no symlink leaves.
func removeBeneath(dir *os.File, name string) error {
	root, err := os.OpenRoot(fdPath(dir))
	if err != nil {
		return err
	}
	defer root.Close()
	return root.RemoveAll(name)
}
