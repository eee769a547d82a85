// Package hostlist expands Slurm's hostlist expressions, the compressed
// node lists Slurm puts in SLURM_JOB_NODELIST and SLURM_STEP_NODELIST:
//
//	gpu[01-04,07]       gpu01 gpu02 gpu03 gpu04 gpu07
//	a1,b[2-3]           a1 b2 b3
//	n[098-101]          n098 n099 n100 n101
//	rack[1-2]-n[1-2]    rack1-n1 rack1-n2 rack2-n1 rack2-n2
//
// Hosts are separated by commas (or white space) outside brackets. A
// bracket holds comma-separated numbers and ranges lo-hi; a number is
// zero-padded to the width of the range's low bound, as Slurm does
// (n[001-3] is n001 n002 n003, n[8-11] is n8 … n11). Several brackets in
// one host expand as their cartesian product, leftmost slowest. Order and
// duplicates are kept. The package imports the standard library only.
package hostlist

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// MaxHosts bounds an expansion: an expression that names more hosts is an
// error rather than an allocation its text alone can size.
const MaxHosts = 1 << 20

// ErrSyntax is wrapped by every error of Expand and First.
var ErrSyntax = errors.New("hostlist: invalid hostlist")

// span is one number or range of a bracket.
type span struct {
	lo, hi uint64
	width  int // zero-padding width: the digits of lo as written
}

// part is literal text or a bracket.
type part struct {
	lit   string
	spans []span // nil for literal text
}

func (p part) count() uint64 {
	if p.spans == nil {
		return 1
	}
	var n uint64
	for _, s := range p.spans {
		n += s.hi - s.lo + 1
	}
	return n
}

// host is one comma-separated item: literal text and brackets.
type host []part

func syntaxErr(expr string, format string, args ...any) error {
	return fmt.Errorf("%w %q: %s", ErrSyntax, expr, fmt.Sprintf(format, args...))
}

// parse splits expr into hosts and checks every bracket.
func parse(expr string) ([]host, error) {
	var hosts []host
	var cur host
	var lit strings.Builder
	flushLit := func() {
		if lit.Len() > 0 {
			cur = append(cur, part{lit: lit.String()})
			lit.Reset()
		}
	}
	flushHost := func() {
		flushLit()
		if len(cur) > 0 {
			hosts = append(hosts, cur)
			cur = nil
		}
	}
	for i := 0; i < len(expr); i++ {
		c := expr[i]
		switch {
		case c == ',' || c == ' ' || c == '\t' || c == '\n':
			flushHost()
		case c == '[':
			end := strings.IndexByte(expr[i+1:], ']')
			if end < 0 {
				return nil, syntaxErr(expr, "'[' at offset %d is not closed", i)
			}
			body := expr[i+1 : i+1+end]
			if strings.IndexByte(body, '[') >= 0 {
				return nil, syntaxErr(expr, "nested '[' at offset %d", i)
			}
			spans, err := parseBracket(body)
			if err != nil {
				return nil, syntaxErr(expr, "[%s]: %v", body, err)
			}
			flushLit()
			cur = append(cur, part{spans: spans})
			i += end + 1
		case c == ']':
			return nil, syntaxErr(expr, "']' at offset %d without '['", i)
		default:
			lit.WriteByte(c)
		}
	}
	flushHost()
	if len(hosts) == 0 {
		return nil, syntaxErr(expr, "no host")
	}
	return hosts, nil
}

// parseBracket parses the inside of a bracket: "01-04,07".
func parseBracket(body string) ([]span, error) {
	var spans []span
	for _, r := range strings.Split(body, ",") {
		r = strings.TrimSpace(r)
		if r == "" {
			return nil, errors.New("empty range")
		}
		loS, hiS, isRange := strings.Cut(r, "-")
		if !isRange {
			hiS = loS
		}
		lo, err := number(loS)
		if err != nil {
			return nil, err
		}
		hi, err := number(hiS)
		if err != nil {
			return nil, err
		}
		if hi < lo {
			return nil, fmt.Errorf("range %s goes down", r)
		}
		if hi-lo >= MaxHosts {
			return nil, fmt.Errorf("range %s names more than %d hosts", r, MaxHosts)
		}
		spans = append(spans, span{lo: lo, hi: hi, width: len(loS)})
	}
	return spans, nil
}

// number parses the decimal digits of a range bound.
func number(s string) (uint64, error) {
	if s == "" {
		return 0, errors.New("missing number")
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, fmt.Errorf("%q is not a number", s)
		}
	}
	if len(s) > 18 {
		return 0, fmt.Errorf("%q is too long", s)
	}
	return strconv.ParseUint(s, 10, 64)
}

func format(s span, v uint64) string {
	d := strconv.FormatUint(v, 10)
	if len(d) < s.width {
		d = strings.Repeat("0", s.width-len(d)) + d
	}
	return d
}

// expand appends every name of h to dst, leftmost bracket slowest.
func (h host) expand(dst []string) []string {
	names := []string{""}
	for _, p := range h {
		if p.spans == nil {
			for i := range names {
				names[i] += p.lit
			}
			continue
		}
		next := make([]string, 0, uint64(len(names))*p.count())
		for _, n := range names {
			for _, s := range p.spans {
				for v := s.lo; ; v++ {
					next = append(next, n+format(s, v))
					if v == s.hi {
						break
					}
				}
			}
		}
		names = next
	}
	return append(dst, names...)
}

// Expand returns every host name of expr in order. An empty or malformed
// expression, or one naming more than MaxHosts hosts, is an error wrapping
// ErrSyntax.
func Expand(expr string) ([]string, error) {
	hosts, err := parse(expr)
	if err != nil {
		return nil, err
	}
	var total uint64
	for _, h := range hosts {
		n := uint64(1)
		for _, p := range h {
			n *= p.count()
			if n > MaxHosts {
				break
			}
		}
		total += n
		if total > MaxHosts {
			return nil, syntaxErr(expr, "names more than %d hosts", MaxHosts)
		}
	}
	out := make([]string, 0, total)
	for _, h := range hosts {
		out = h.expand(out)
	}
	return out, nil
}

// First returns the first host name of expr (the node of Slurm's task 0
// for the nodelist of a step), checking the whole expression as Expand
// does but without expanding it.
func First(expr string) (string, error) {
	hosts, err := parse(expr)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	for _, p := range hosts[0] {
		if p.spans == nil {
			b.WriteString(p.lit)
		} else {
			b.WriteString(format(p.spans[0], p.spans[0].lo))
		}
	}
	return b.String(), nil
}
