package fusemount

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"golang.org/x/sys/unix"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []Mount
		wantErr bool
	}{
		{
			name: "fuse mount with optional fields",
			in:   "72 27 0:44 / /tmp/s/hung rw,nosuid,nodev,relatime shared:1 master:2 - fuse.kigumi kigumi-state rw,user_id=0\n",
			want: []Mount{{ID: 72, Parent: 27, Major: 0, Minor: 44, Point: "/tmp/s/hung", FSType: "fuse.kigumi", Source: "kigumi-state"}},
		},
		{
			name: "escaped point",
			in:   `30 1 8:1 / /mnt/a\040b\134c rw - ext4 /dev/sda1 rw` + "\n\n",
			want: []Mount{{ID: 30, Parent: 1, Major: 8, Minor: 1, Point: `/mnt/a b\c`, FSType: "ext4", Source: "/dev/sda1"}},
		},
		{name: "no separator", in: "30 1 8:1 / /mnt rw ext4 /dev/sda1 rw\n", wantErr: true},
		{name: "bad device", in: "30 1 81 / /mnt rw - ext4 /dev/sda1 rw\n", wantErr: true},
		{name: "bad id", in: "x 1 8:1 / /mnt rw - ext4 /dev/sda1 rw\n", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse([]byte(tt.in))
			if (err != nil) != tt.wantErr {
				t.Fatalf("Parse error %v, want error %v", err, tt.wantErr)
			}
			if !tt.wantErr && !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Parse = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestStackAndConn(t *testing.T) {
	all := []Mount{
		{ID: 90, Parent: 80, Point: "/s"}, // over 80
		{ID: 70, Parent: 1, Point: "/other"},
		{ID: 80, Parent: 60, Point: "/s"}, // over 60
		{ID: 60, Parent: 1, Point: "/s"},  // bottom
	}
	var ids []int
	for _, m := range stack(all, "/s") {
		ids = append(ids, m.ID)
	}
	if !reflect.DeepEqual(ids, []int{60, 80, 90}) {
		t.Errorf("stack = %v, want [60 80 90]", ids)
	}
	if c := (Mount{Major: 0, Minor: 44}).Conn(); c != 44 {
		t.Errorf("Conn of 0:44 = %d", c)
	}
	if c := (Mount{Major: 1, Minor: 2}).Conn(); c != 1<<20|2 {
		t.Errorf("Conn of 1:2 = %d", c)
	}
}

// TestClearAndList: List finds real mounts with the device stat reports,
// and Clear detaches every mount at and below a path, stacked ones
// included, leaving others alone.
func TestClearAndList(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root (mounts)")
	}
	base := t.TempDir()
	top, inner, keep := filepath.Join(base, "top"), filepath.Join(base, "top", "inner"), filepath.Join(base, "keep")
	for _, d := range []string{top, keep} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	mustMount := func(dir string) {
		t.Helper()
		if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=64k"); err != nil {
			t.Fatal(err)
		}
	}
	mustMount(top)
	mustMount(top) // stacked
	if err := os.Mkdir(inner, 0o755); err != nil {
		t.Fatal(err)
	}
	mustMount(inner)
	mustMount(keep)
	t.Cleanup(func() { _ = unix.Unmount(keep, unix.MNT_DETACH) })
	ms, err := At(top)
	if err != nil || len(ms) != 2 || ms[1].Parent != ms[0].ID {
		t.Fatalf("At(top) = %+v, %v; want two, stacked", ms, err)
	}
	var st unix.Stat_t
	if err := unix.Stat(top, &st); err != nil || st.Dev != ms[1].Dev() {
		t.Errorf("stat dev %d (%v), top mount's %d", st.Dev, err, ms[1].Dev())
	}
	if err := Clear(context.Background(), top); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{top, inner} {
		if ms, err := At(p); err != nil || len(ms) != 0 {
			t.Errorf("At(%s) after Clear = %+v, %v", p, ms, err)
		}
	}
	if ms, err := At(keep); err != nil || len(ms) != 1 {
		t.Errorf("Clear took a mount beside the path: At(keep) = %+v, %v", ms, err)
	}
}
