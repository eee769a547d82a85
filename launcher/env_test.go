package main

import (
	"go/ast"
	"go/parser"
	"go/token"
	"strconv"
	"strings"
	"testing"
)

// TestEnvNamesMatchWorker checks that the launcher's variable names are
// the worker package's Env* constants, read from its source.
func TestEnvNamesMatchWorker(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "../worker/env.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, d := range f.Decls {
		gd, ok := d.(*ast.GenDecl)
		if !ok || gd.Tok != token.CONST {
			continue
		}
		for _, spec := range gd.Specs {
			vs := spec.(*ast.ValueSpec)
			for i, name := range vs.Names {
				if !strings.HasPrefix(name.Name, "Env") || i >= len(vs.Values) {
					continue
				}
				lit, ok := vs.Values[i].(*ast.BasicLit)
				if !ok {
					t.Errorf("worker.%s is not a string literal", name.Name)
					continue
				}
				val, _ := strconv.Unquote(lit.Value)
				seen[name.Name] = true
				if got, ok := workerEnv[name.Name]; !ok {
					t.Errorf("worker.%s (%s) has no launcher copy", name.Name, val)
				} else if got != val {
					t.Errorf("worker.%s = %q, launcher has %q", name.Name, val, got)
				}
			}
		}
	}
	for name := range workerEnv {
		if !seen[name] {
			t.Errorf("launcher copies worker.%s, which worker/env.go no longer defines", name)
		}
	}
}
