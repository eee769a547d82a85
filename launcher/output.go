package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"sync"
)

// maxLine is the longest line the launcher forwards in one piece; longer
// lines are cut into pieces of this size, each with its own prefix.
const maxLine = 1 << 20

// output serialises whole lines from many ranks onto the launcher's stdout
// and stderr. One mutex covers both streams, so that two streams that end
// on the same terminal never mix inside a line either.
type output struct {
	mu     sync.Mutex
	stdout io.Writer
	stderr io.Writer
}

func newOutput(stdout, stderr io.Writer) *output {
	return &output{stdout: stdout, stderr: stderr}
}

// writeLine writes prefix+line+"\n" to w in one Write under the lock.
func (o *output) writeLine(w io.Writer, buf []byte) {
	o.mu.Lock()
	defer o.mu.Unlock()
	// A failed write to our own stdout (a closed pipe) is not a reason to
	// stop the ranks; the bytes are dropped.
	_, _ = w.Write(buf)
}

// logf writes one launcher message line to stderr.
func (o *output) logf(format string, args ...any) {
	msg := fmt.Sprintf("launcher: "+format, args...)
	if len(msg) == 0 || msg[len(msg)-1] != '\n' {
		msg += "\n"
	}
	o.writeLine(o.stderr, []byte(msg))
}

// copyLines reads r until EOF and writes each line to w with prefix. A last
// line without a newline gets one. It returns the read error other than EOF.
func (o *output) copyLines(w io.Writer, prefix string, r io.Reader) error {
	br := bufio.NewReaderSize(r, 64<<10)
	buf := make([]byte, 0, 64<<10)
	buf = append(buf, prefix...)
	flush := func() {
		if buf[len(buf)-1] != '\n' {
			buf = append(buf, '\n')
		}
		o.writeLine(w, buf)
		buf = append(buf[:0], prefix...)
	}
	for {
		chunk, err := br.ReadSlice('\n')
		buf = append(buf, chunk...)
		switch {
		case err == nil:
			flush()
		case errors.Is(err, bufio.ErrBufferFull):
			if len(buf)-len(prefix) >= maxLine {
				flush()
			}
		default:
			if len(buf) > len(prefix) {
				flush()
			}
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if len(buf) == len(prefix) && cap(buf) > 256<<10 {
			// Do not keep a huge buffer after one long line.
			buf = append(make([]byte, 0, 64<<10), prefix...)
		}
	}
}
