// Package xrpljs checks Kigumi's transaction signing against xrpl.js: the
// golden signing vectors of the ledger plugin's tests. It signs the same
// transactions with xrpl-go and with xrpl.js (node running sign.js in the
// test-local install that .ci/install-deps makes) and compares the blobs
// and hashes byte for byte.
package xrpljs

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/Peersyst/xrpl-go/xrpl/wallet"
)

// Vector is one transaction to sign with one seed.
type Vector struct {
	Name string
	Seed string
	Tx   map[string]any
}

// Check signs every vector with xrpl-go and with xrpl.js installed in dir
// (which holds sign.js and node_modules), and fails t, in a subtest per
// vector, where the signed blob or hash differ. A missing node or xrpl.js
// fails t: .ci/install-deps installs both.
func Check(t *testing.T, dir string, vectors []Vector) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "xrpl", "package.json")); err != nil {
		t.Fatalf("xrpl.js is not installed in %s (run .ci/install-deps): %v", dir, err)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node is not installed (run .ci/install-deps): %v", err)
	}
	type input struct {
		Seed string         `json:"seed"`
		Tx   map[string]any `json:"tx"`
	}
	in := make([]input, len(vectors))
	for i, v := range vectors {
		in[i] = input{v.Seed, v.Tx}
	}
	raw, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(node, "sign.js")
	cmd.Dir = dir
	cmd.Stdin = bytes.NewReader(raw)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("xrpl.js: %v: %s", err, stderr.String())
	}
	var js []struct {
		Blob string `json:"tx_blob"`
		Hash string `json:"hash"`
	}
	if err := json.Unmarshal(out, &js); err != nil {
		t.Fatalf("xrpl.js output: %v: %s", err, out)
	}
	if len(js) != len(vectors) {
		t.Fatalf("xrpl.js signed %d transactions, want %d", len(js), len(vectors))
	}
	for i, v := range vectors {
		t.Run(v.Name, func(t *testing.T) {
			w, err := wallet.FromSeed(v.Seed, "")
			if err != nil {
				t.Fatal(err)
			}
			blob, hash, err := w.Sign(v.Tx)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.EqualFold(blob, js[i].Blob) {
				t.Errorf("blobs differ:\nxrpl-go %s\nxrpl.js %s", blob, js[i].Blob)
			}
			if !strings.EqualFold(hash, js[i].Hash) {
				t.Errorf("hashes differ: xrpl-go %s, xrpl.js %s", hash, js[i].Hash)
			}
		})
	}
}
