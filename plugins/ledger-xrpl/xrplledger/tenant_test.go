package xrplledger

import "testing"

// TestParseLeaseURI reads back the terms leaseURI writes, and refuses
// URIs that are not a lease's.
func TestParseLeaseURI(t *testing.T) {
	l, p, err := ParseLeaseURI(leaseURI(900, 1_000_000))
	if err != nil || l != 900 || p != 1_000_000 {
		t.Fatalf("ParseLeaseURI(leaseURI(900, 1000000)) = %d, %d, %v", l, p, err)
	}
	for _, uri := range []string{
		"", "https://example.com/", "kigumi:lease:2?ledgers=1&price=1", "kigumi:lease:1?ledgers=0&price=1",
		"kigumi:lease:1?ledgers=1", "kigumi:lease:1?ledgers=99999999999&price=1", "kigumi:lease:1?ledgers=1&price=-1",
	} {
		if _, _, err := ParseLeaseURI(uri); err == nil {
			t.Errorf("ParseLeaseURI(%q) accepted it", uri)
		}
	}
}
