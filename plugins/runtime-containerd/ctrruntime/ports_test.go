package ctrruntime

import (
	"errors"
	"testing"

	"github.com/kigumi/kigumi/core/sdk/v2"
)

// TestAllocPorts checks that blocks are contiguous, lowest first, never
// overlap a used block, reuse freed gaps, and that a full pool says so.
func TestAllocPorts(t *testing.T) {
	pool := portBlock{100, 109}
	for _, tc := range []struct {
		name string
		used []portBlock
		n    int
		want portBlock
		full bool
	}{
		{"empty", nil, 3, portBlock{100, 102}, false},
		{"after", []portBlock{{100, 102}}, 2, portBlock{103, 104}, false},
		{"gap-reused", []portBlock{{100, 101}, {104, 109}}, 2, portBlock{102, 103}, false},
		{"gap-too-small", []portBlock{{100, 101}, {103, 105}}, 2, portBlock{106, 107}, false},
		{"unsorted", []portBlock{{106, 109}, {100, 103}}, 2, portBlock{104, 105}, false},
		{"last", []portBlock{{100, 108}}, 1, portBlock{109, 109}, false},
		{"whole", nil, 10, portBlock{100, 109}, false},
		{"full", []portBlock{{100, 109}}, 1, portBlock{}, true},
		{"too-big", nil, 11, portBlock{}, true},
		{"fragmented", []portBlock{{101, 101}, {104, 104}, {107, 107}}, 3, portBlock{}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := allocPorts(pool, tc.used, tc.n)
			if tc.full {
				if !errors.Is(err, sdk.ErrUnavailable) {
					t.Fatalf("got %v, %v; want unavailable", got, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %v, %v; want %v", got, err, tc.want)
			}
		})
	}
}

// TestParsePortBlock checks the label format both ways.
func TestParsePortBlock(t *testing.T) {
	for _, s := range []string{"20000-20000", "20000-20003"} {
		b, err := parsePortBlock(s)
		if err != nil || b.String() != s {
			t.Errorf("%q: got %v, %v", s, b, err)
		}
	}
	for _, s := range []string{"", "x", "3-2", "0-1", "1-70000"} {
		if _, err := parsePortBlock(s); err == nil {
			t.Errorf("%q: no error", s)
		}
	}
}

// TestParsePortMap checks the port map label both ways.
func TestParsePortMap(t *testing.T) {
	want := []portSpec{{container: 8080, protocol: "tcp"}, {container: 53, protocol: "udp"}}
	s := portMapLabel(want)
	got, err := parsePortMap(s)
	if err != nil || s != "8080/tcp,53/udp" || len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("%q: got %v, %v", s, got, err)
	}
	for _, s := range []string{"", "8080", "8080/sctp", "0/tcp", "70000/udp", "x/tcp", "80/tcp,"} {
		if _, err := parsePortMap(s); err == nil {
			t.Errorf("%q: no error", s)
		}
	}
}
