package tenant

import (
	"os"
	"path/filepath"
	"testing"
)

// TestCgroupV2Limits checks the v2 files written, on a fake cgroup2 tree:
// this host's cgroup2 mount has no controllers.
func TestCgroupV2Limits(t *testing.T) {
	tests := []struct {
		name string
		// rootSubtree is the root's cgroup.subtree_control before.
		rootSubtree string
		// swap says whether the tenant cgroup has memory.swap.max.
		swap   bool
		limits Limits
		want   map[string]string
	}{
		{
			name:   "limited",
			limits: Limits{MemoryBytes: 1 << 30, MilliCPU: 1500, Pids: 100},
			swap:   true,
			want: map[string]string{
				"cgroup.subtree_control":        "+cpu +io +memory +pids",
				"kigumi/cgroup.subtree_control": "+cpu +io +memory +pids",
				"kigumi/t/memory.max":           "1073741824",
				"kigumi/t/memory.swap.max":      "0",
				"kigumi/t/cpu.max":              "150000 100000",
				"kigumi/t/pids.max":             "100",
			},
		},
		{
			name:        "unlimited, controllers partly enabled",
			rootSubtree: "cpu pids",
			want: map[string]string{
				"cgroup.subtree_control": "+io +memory",
				"kigumi/t/memory.max":    "max",
				"kigumi/t/cpu.max":       "max 100000",
				"kigumi/t/pids.max":      "max",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			files := map[string]string{
				"cgroup.controllers":            "cpuset cpu io memory hugetlb pids",
				"cgroup.subtree_control":        tt.rootSubtree,
				"kigumi/cgroup.subtree_control": "",
			}
			if tt.swap {
				files["kigumi/t/memory.swap.max"] = "max"
			}
			for name, content := range files {
				path := filepath.Join(root, name)
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			c := detectCgroups(root, "")
			if !c.v2 {
				t.Fatal("fake cgroup2 tree not detected as v2")
			}
			if _, err := c.create("t"); err != nil {
				t.Fatal(err)
			}
			if err := c.setLimits("t", tt.limits); err != nil {
				t.Fatal(err)
			}
			for name, want := range tt.want {
				if got := readTrim(t, filepath.Join(root, name)); got != want {
					t.Errorf("%s = %q, want %q", name, got, want)
				}
			}
		})
	}
}

func TestProcMatches(t *testing.T) {
	const uid = 4242
	match := func(id uint64) bool { return id == uid }
	tests := []struct {
		name   string
		status string
		want   bool
	}{
		{"real uid", "Name:\tsleep\nState:\tS (sleeping)\nUid:\t4242\t4242\t4242\t4242\n", true},
		{"saved uid only", "State:\tR (running)\nUid:\t0\t0\t4242\t0\n", true},
		{"other user", "State:\tS (sleeping)\nUid:\t1000\t1000\t1000\t1000\n", false},
		{"zombie", "State:\tZ (zombie)\nUid:\t4242\t4242\t4242\t4242\n", false},
		{"dead", "State:\tX (dead)\nUid:\t4242\t4242\t4242\t4242\n", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := procMatches(tt.status, match); got != tt.want {
				t.Errorf("procMatches = %v, want %v", got, tt.want)
			}
		})
	}
}
