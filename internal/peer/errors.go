package peer

import (
	"errors"
	"fmt"
	"sort"
	"strings"
)

// Sentinel errors for permanent failures; test with errors.Is. Requests that
// fail with them are never retried.
var (
	// ErrUnauthorized: the source refused the credential. The server cannot
	// tell (and does not say) whether the export was closed or the token is
	// wrong, so this is also what a closed export looks like.
	ErrUnauthorized = errors.New("credential refused by the source")
	// ErrExportGone: the source does not serve this export (404/410).
	ErrExportGone = errors.New("export not served by the source")
	// ErrFileUnavailable: one file could not be opened on the source; see
	// *FileError.
	ErrFileUnavailable = errors.New("file unavailable on the source")
	// ErrManifestTooLarge: the source's manifest is larger than
	// ClientOptions.MaxManifestBytes.
	ErrManifestTooLarge = errors.New("manifest larger than the client accepts")
)

// FileError reports a file the source could not open (vanished, unreadable,
// unknown index). It matches ErrFileUnavailable.
type FileError struct {
	Index   int
	Message string // from the source
}

func (e *FileError) Error() string {
	return fmt.Sprintf("file %d of the export is unavailable on the source: %s", e.Index, e.Message)
}

// Is makes errors.Is(err, ErrFileUnavailable) true.
func (e *FileError) Is(target error) bool { return target == ErrFileUnavailable }

// BatchError is returned by Client.Batch when not every file was delivered.
// fn was called (and returned nil) for exactly the requested indexes that
// are in neither Failed nor Missing.
type BatchError struct {
	// Failed maps indexes the source could not open to its message. Retry
	// them individually (ReadRange) to get a definite answer per file.
	Failed map[int]string
	// Missing lists, in request order, the indexes that were not delivered
	// because the stream broke or fn failed, including the one in progress.
	// Request them again.
	Missing []int
	// Err is why delivery stopped (nil if the only problem is Failed). A broken
	// stream matches io.ErrUnexpectedEOF; an error from fn is wrapped as is.
	Err error
}

func (e *BatchError) Error() string {
	var parts []string
	if e.Err != nil {
		parts = append(parts, fmt.Sprintf("%v (%d files not delivered)", e.Err, len(e.Missing)))
	}
	if len(e.Failed) > 0 {
		idx := make([]int, 0, len(e.Failed))
		for i := range e.Failed {
			idx = append(idx, i)
		}
		sort.Ints(idx)
		first := idx[0]
		more := ""
		if len(idx) > 1 {
			more = fmt.Sprintf(" and %d more", len(idx)-1)
		}
		parts = append(parts, fmt.Sprintf("%d files unavailable on the source (file %d: %s%s)",
			len(idx), first, e.Failed[first], more))
	}
	return "batch transfer incomplete: " + strings.Join(parts, "; ")
}

func (e *BatchError) Unwrap() error { return e.Err }
