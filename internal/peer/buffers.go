package peer

import (
	"bufio"
	"io"
	"sync"
)

// Buffer pools: batch responses are assembled in a large bufio.Writer so many
// small files become few large writes, and read back through a bufio.Reader
// of the same size; file content moves through a pooled copy buffer so no
// request allocates per file.
const (
	bufioSize   = 256 << 10
	copyBufSize = 256 << 10
)

var (
	bufioWriterPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, bufioSize) }}
	copyBufPool     = sync.Pool{New: func() any { b := make([]byte, copyBufSize); return &b }}
	bufioReaderPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, bufioSize) }}
)

func getBufioWriter(w io.Writer) *bufio.Writer {
	bw := bufioWriterPool.Get().(*bufio.Writer)
	bw.Reset(w)
	return bw
}

func putBufioWriter(bw *bufio.Writer) {
	bw.Reset(nil) // drop the reference to the response
	bufioWriterPool.Put(bw)
}

func getCopyBuf() *[]byte  { return copyBufPool.Get().(*[]byte) }
func putCopyBuf(b *[]byte) { copyBufPool.Put(b) }

func getBufioReader(r io.Reader) *bufio.Reader {
	br := bufioReaderPool.Get().(*bufio.Reader)
	br.Reset(r)
	return br
}

func putBufioReader(br *bufio.Reader) {
	br.Reset(nil)
	bufioReaderPool.Put(br)
}
