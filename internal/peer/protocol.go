// Package peer is the network protocol between the cargo volume plugin on a
// source host (which serves frozen volumes, "exports") and the plugin on a
// target host (which copies them lazily). It holds both ends: the Server
// and the Export interfaces it serves, the Client a target reads with, and
// the Identity and Ticket that connect them.
//
// Transport: HTTP/2 (HTTP/1.1 also works) over TLS 1.3. The server presents a
// self-signed certificate (Identity) that the client pins by its SHA-256
// fingerprint; each export has its own bearer credential, of which the server
// only knows the hash. Both travel to the target inside a Ticket. Anyone
// can connect and complete a handshake, so the server bounds the
// connections it holds and closes those without a valid credential soon
// (ServerOptions); the client bounds every body by what it asked for.
//
// Routes, all below /v1/exports/{id}/ and all requiring
// "Authorization: Bearer <token>":
//
//	GET  manifest         the export's manifest, opaque bytes
//	GET  files/{index}    one file's content; single "Range: bytes=" supported
//	POST batch            {"files":[i, ...]} -> frames, in request order
//	POST complete         {"report":"..."}   -> 204
//
// Files are addressed only by the integer index the exporter assigned in its
// manifest. The target never sends a path, so path traversal, symlink games
// and name-encoding tricks are impossible at the protocol level: the worst a
// client can do is name an index the exporter refuses to open.
//
// Batch response framing, repeated once per requested index, in order:
//
//	index uint32 big-endian
//	flags uint8            bit 0: error
//	size  uint64 big-endian
//	size bytes             file content, or a short UTF-8 error message
//
// size is the file's size when the server opened it. If the file then turns
// out shorter (it changed although the export is supposed to be frozen), the
// server aborts the response instead of padding or lying, and the client sees
// a broken stream (io.ErrUnexpectedEOF).
package peer

import (
	"encoding/binary"
	"fmt"
)

const (
	// DefaultPort is the conventional port of the peer server.
	DefaultPort = 7450

	// DefaultMaxBatchFiles is the server's default limit of indexes per batch
	// request; the client splits larger batches accordingly.
	DefaultMaxBatchFiles = 4096

	// frameHeaderLen is index(4) + flags(1) + size(8).
	frameHeaderLen = 13

	// frameFlagError marks a frame whose payload is an error message.
	frameFlagError = 1 << 0

	// maxErrorMessage bounds the error payload of a frame, both when the server
	// writes it and when the client accepts it.
	maxErrorMessage = 1024

	// maxIndex is the largest index the frame header can carry.
	maxIndex = 1<<32 - 1

	// headerError is set on responses whose error concerns one file (as
	// opposed to the export or the request), so the client can tell "this file
	// is unavailable" from "this export is gone".
	headerError = "Cargo-Error"
	// errFileUnavailable is the headerError value for a file that could not
	// be opened on the source.
	errFileUnavailable = "file-unavailable"

	contentTypeBatch = "application/vnd.cargo.batch"
)

type frameHeader struct {
	index uint32
	flags uint8
	size  uint64
}

func (h frameHeader) put(b *[frameHeaderLen]byte) {
	binary.BigEndian.PutUint32(b[0:4], h.index)
	b[4] = h.flags
	binary.BigEndian.PutUint64(b[5:13], h.size)
}

func parseFrameHeader(b *[frameHeaderLen]byte) (frameHeader, error) {
	h := frameHeader{
		index: binary.BigEndian.Uint32(b[0:4]),
		flags: b[4],
		size:  binary.BigEndian.Uint64(b[5:13]),
	}
	if h.flags&^frameFlagError != 0 {
		return h, fmt.Errorf("unknown frame flags %#x", h.flags)
	}
	if h.flags&frameFlagError != 0 && h.size > maxErrorMessage {
		return h, fmt.Errorf("error frame of %d bytes exceeds the %d byte limit", h.size, maxErrorMessage)
	}
	if h.size > 1<<62 {
		return h, fmt.Errorf("frame size %d is not plausible", h.size)
	}
	return h, nil
}

// batchRequest is the JSON body of POST .../batch.
type batchRequest struct {
	Files []int `json:"files"`
}

// completeRequest is the JSON body of POST .../complete.
type completeRequest struct {
	Report string `json:"report"`
}
