package wasmruntime

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kigumi/kigumi/core/sdk/v2"
)

// slowModule returns a module whose _start is one function of locals i64
// locals and ops additions between them, eight to a loop: quick to scan,
// and its compile time grows faster than its size (1.2 MB, 120,000 ops,
// took wazero's compiler 3.6 s here).
func slowModule(locals, ops int) []byte {
	uleb := func(b *bytes.Buffer, v uint64) { b.Write(binary.AppendUvarint(nil, v)) }
	section := func(out *bytes.Buffer, id byte, body []byte) {
		out.WriteByte(id)
		uleb(out, uint64(len(body)))
		out.Write(body)
	}
	var fn bytes.Buffer
	fn.Write([]byte{0x01}) // one local declaration
	uleb(&fn, uint64(locals))
	fn.WriteByte(0x7e) // i64
	for i := range ops {
		if i%8 == 0 {
			fn.Write([]byte{0x03, 0x40}) // loop
		}
		a, b, c := i%locals, (i*7+1)%locals, (i*13+2)%locals
		fn.WriteByte(0x20) // local.get
		uleb(&fn, uint64(a))
		fn.WriteByte(0x20)
		uleb(&fn, uint64(b))
		fn.WriteByte(0x7c) // i64.add
		fn.WriteByte(0x21) // local.set
		uleb(&fn, uint64(c))
		if i%8 == 7 {
			fn.WriteByte(0x0b) // end
		}
	}
	if ops%8 != 0 {
		fn.WriteByte(0x0b)
	}
	fn.WriteByte(0x0b) // end
	var code bytes.Buffer
	code.WriteByte(0x01) // one body
	uleb(&code, uint64(fn.Len()))
	code.Write(fn.Bytes())

	var out bytes.Buffer
	out.Write([]byte{0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00})
	section(&out, 0x01, []byte{0x01, 0x60, 0x00, 0x00})                               // type: func() -> ()
	section(&out, 0x03, []byte{0x01, 0x00})                                           // function 0 has type 0
	section(&out, 0x07, []byte{0x01, 0x06, '_', 's', 't', 'a', 'r', 't', 0x00, 0x00}) // export _start
	section(&out, 0x0a, code.Bytes())                                                 // code
	return out.Bytes()
}

// TestCompileBudget starts a module that takes far more time and memory to
// compile than the compile budget: its sandbox is stopped at the budget and
// Start fails naming it, while another tenant's instance starts and runs
// meanwhile.
func TestCompileBudget(t *testing.T) {
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	slow := filepath.Join(dir, "slow.wasm")
	if err := os.WriteFile(slow, slowModule(500, 200_000), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		settings sdk.Config
		want     string
	}{
		{"time", sdk.Config{"compile_timeout": "1s"}, "compile budget (compile_timeout = 1s)"},
		{"memory", sdk.Config{"compile_timeout": "5m", "compile_memory": "32MiB"}, "compile budget (compile_memory = 32 MiB)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRuntime(t, tt.settings)
			req := request(t, "tiny")
			req.Artifact.Module = slow
			var wg sync.WaitGroup
			var startErr error
			var took time.Duration
			wg.Add(1)
			go func() {
				defer wg.Done()
				t0 := time.Now()
				_, startErr = r.Start(context.Background(), req)
				took = time.Since(t0)
			}()
			neighbour := request(t, "tiny")
			neighbour.Instance.Tenant = "bob"
			if st, _ := run(t, r, neighbour); st.State != sdk.StateExited || st.ExitCode != 0 {
				t.Errorf("neighbour: status = %+v", st)
			}
			wg.Wait()
			var e *sdk.Error
			if !errors.As(startErr, &e) || e.Code != sdk.CodeInvalid || e.Attribute != "module" || !strings.Contains(e.Message, tt.want) {
				t.Fatalf("Start = %v, want an invalid module over the %q", startErr, tt.want)
			}
			if took > 20*time.Second {
				t.Errorf("Start took %v", took)
			}
			// The sandbox is gone: its cgroup is empty.
			for _, p := range req.Cgroup.ProcsFiles {
				if b, err := os.ReadFile(p); err != nil || len(bytes.TrimSpace(b)) != 0 {
					t.Errorf("%s = %q (%v), want no process", p, b, err)
				}
			}
		})
	}
}
