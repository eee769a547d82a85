package jobcmd

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// Bar is rank 0's progress bar over training steps. W is where it draws:
// write a newline there before printing a line of your own.
type Bar struct {
	*progressbar.ProgressBar
	W io.Writer
}

// NewBar returns a progress bar of steps steps described by desc, or nil
// where none is shown (ranks other than 0, mode "off"). On a terminal the
// bar redraws in place; elsewhere (under the launcher, whose output is line
// by line) it prints a line at most every lineEvery.
func NewBar(mode string, rank, steps int, desc string, lineEvery time.Duration, stderr io.Writer) *Bar {
	if rank != 0 || mode == "off" {
		return nil
	}
	tty := false
	if f, ok := stderr.(*os.File); ok {
		tty = term.IsTerminal(int(f.Fd()))
	}
	w := stderr
	throttle := 100 * time.Millisecond
	if !tty {
		w = &lineWriter{w: stderr}
		throttle = lineEvery
	}
	pb := progressbar.NewOptions(steps,
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetDescription(desc),
		progressbar.OptionSetWidth(30),
		progressbar.OptionShowCount(),
		progressbar.OptionShowIts(),
		progressbar.OptionSetItsString("steps"),
		progressbar.OptionThrottle(throttle),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionUseANSICodes(tty),
	)
	return &Bar{ProgressBar: pb, W: w}
}

// lineWriter turns the bar's carriage-return redraws into whole lines, for
// output that is read line by line (the launcher prefixes every line with
// the rank).
type lineWriter struct{ w io.Writer }

func (l *lineWriter) Write(p []byte) (int, error) {
	s := strings.TrimSpace(strings.ReplaceAll(string(p), "\r", ""))
	if s == "" {
		return len(p), nil
	}
	if _, err := io.WriteString(l.w, s+"\n"); err != nil {
		return 0, fmt.Errorf("progress bar: %w", err)
	}
	return len(p), nil
}

// Megabytes formats a byte count for the examples' progress lines: "4.21MB",
// "42.1MB", "421MB".
func Megabytes(n int64) string {
	mb := float64(n) / 1e6
	if mb < 10 {
		return fmt.Sprintf("%.2fMB", mb)
	}
	if mb < 100 {
		return fmt.Sprintf("%.1fMB", mb)
	}
	return fmt.Sprintf("%.0fMB", mb)
}
