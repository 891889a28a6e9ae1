package xrplledger

import "fmt"

// leaseURI is the URI of a lease NFT: the lease terms, a period of ledgers
// at a price in drops.
func leaseURI(ledgers uint32, priceDrops uint64) string {
	return fmt.Sprintf("kigumi:lease:1?ledgers=%d&price=%d", ledgers, priceDrops)
}
