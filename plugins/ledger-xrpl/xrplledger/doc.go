// Package xrplledger is the XRP Ledger lease plugin (sdk.Ledger): a host
// registers and sends heartbeats to a registry account, offers each free
// slot as an NFT for sale, reads tenants' acquires from validated
// NFTokenAcceptOffer transactions, and replies with Payments, all through
// rippled's WebSocket API with github.com/Peersyst/xrpl-go. It refunds a
// purchase whose acquire it cannot read, frees the slot of every lease
// that ends (burns its NFT, offers a new one), and reports the validated
// ledger as progress events: the lease clock. The protocol is
// docs/ledger-protocol.md.
package xrplledger
