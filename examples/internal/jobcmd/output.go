package jobcmd

import (
	"encoding/csv"
	"fmt"
	"io"
	"os"

	"github.com/vccl/vccl/collective"
)

// Failf returns the error constructor of a rank's run function: its
// errors begin "rank N: ", so that the launcher's merged output names the
// rank that failed.
func Failf(rank int) func(format string, args ...any) error {
	return func(format string, args ...any) error {
		return fmt.Errorf("rank %d: %s", rank, fmt.Sprintf(format, args...))
	}
}

// Banner prints the start of rank 0's first line, "name: 4 ranks, codec
// hevc at 1.40 bits/value (backend auto)" (the bits per value and backend
// only for the video codecs), without a newline: the caller ends the line
// with its own settings.
func Banner(w io.Writer, name string, world int, cfg collective.Config) {
	fmt.Fprintf(w, "%s: %d ranks, codec %s", name, world, cfg.Codec)
	if cfg.Codec == "h264" || cfg.Codec == "hevc" {
		fmt.Fprintf(w, " at %.2f bits/value (backend %s)", cfg.BitsPerValue, cfg.Backend)
	}
}

// BitsPerValue is the achieved bits per value of allreduces that sent wire
// payload bytes where fp32 would have sent raw: 32·wire/raw, 0 where raw is
// 0.
func BitsPerValue(wire, raw int64) float64 {
	if raw <= 0 {
		return 0
	}
	return 32 * float64(wire) / float64(raw)
}

// CSV is rank 0's CSV file of figures, a record per evaluation or epoch,
// flushed after each so that a run cut short keeps what it measured. A nil
// *CSV writes nothing.
type CSV struct {
	f *os.File
	w *csv.Writer
}

// CreateCSV creates the file at path and writes header. It returns nil (no
// file) where path is empty or rank is not 0.
func CreateCSV(path string, rank int, header []string) (*CSV, error) {
	if rank != 0 || path == "" {
		return nil, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	c := &CSV{f: f, w: csv.NewWriter(f)}
	if err := c.w.Write(header); err != nil { // flushed with the first record
		f.Close()
		return nil, err
	}
	return c, nil
}

// Write writes rec and flushes it to the file.
func (c *CSV) Write(rec []string) error {
	if c == nil {
		return nil
	}
	if err := c.w.Write(rec); err != nil {
		return err
	}
	c.w.Flush()
	return c.w.Error()
}

// Close closes the file.
func (c *CSV) Close() error {
	if c == nil {
		return nil
	}
	return c.f.Close()
}
