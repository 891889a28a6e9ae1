package tenant

import (
	"context"
	"os/exec"
	"strconv"
	"testing"
)

func TestFreeUID(t *testing.T) {
	base := 400000 + randInt(t, 1e9)
	tests := []struct {
		name    string
		base    uint32
		taken   func(uint32) bool
		atLeast uint32
	}{
		{"skips nobody", 65534, nil, 65535},
		{"skips taken", base, func(id uint32) bool { return id < base+3 }, base + 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := FreeUID(tt.base, tt.taken)
			if err != nil {
				t.Fatal(err)
			}
			if id < tt.atLeast {
				t.Errorf("FreeUID = %d, want at least %d", id, tt.atLeast)
			}
			for _, db := range []string{"passwd", "group"} {
				if err := exec.Command("getent", db, strconv.Itoa(int(id))).Run(); err == nil {
					t.Errorf("FreeUID = %d, which is in %s", id, db)
				}
			}
		})
	}
}

func TestFreeSubIDs(t *testing.T) {
	m := newManager(t)
	s := newSpec(t, m)
	if _, err := m.Ensure(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	next := s.SubIDStart + s.SubIDCount
	tests := []struct {
		name        string
		base, count uint32
		taken       func(uint32) bool
		want        uint32
		wantErr     bool
	}{
		{"skips a used range", s.SubIDStart, s.SubIDCount, nil, next, false},
		{"skips taken", s.SubIDStart, s.SubIDCount, func(start uint32) bool { return start == next }, next + s.SubIDCount, false},
		{"zero base", 0, 65536, nil, 0, true},
		{"zero count", 100000, 0, nil, 0, true},
		{"no room", 1<<32 - 10, 65536, nil, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := FreeSubIDs(tt.base, tt.count, tt.taken)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("FreeSubIDs = %d, %v; want %d, error %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestIDRangeOverlaps(t *testing.T) {
	r := idRange{start: 100, count: 10}
	tests := []struct {
		start, count uint64
		want         bool
	}{
		{90, 10, false},
		{90, 11, true},
		{109, 1, true},
		{110, 5, false},
		{50, 100, true},
	}
	for _, tt := range tests {
		if got := r.overlaps(tt.start, tt.count); got != tt.want {
			t.Errorf("[100,110) overlaps [%d,+%d) = %v, want %v", tt.start, tt.count, got, tt.want)
		}
	}
}
