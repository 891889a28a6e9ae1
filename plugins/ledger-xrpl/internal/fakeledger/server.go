package fakeledger

import (
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	binarycodec "github.com/Peersyst/xrpl-go/binary-codec"
	xrplhash "github.com/Peersyst/xrpl-go/xrpl/hash"
	"github.com/gorilla/websocket"
)

// Server is the TEST DOUBLE of a rippled WebSocket endpoint. It listens
// on 127.0.0.1 only.
type Server struct {
	ln   net.Listener
	http *http.Server
	stop chan struct{}
	done sync.WaitGroup

	mu         sync.Mutex
	chain      *chain
	conns      map[*conn]bool
	subscribes int

	// Fault hooks and observers, set by options before serving.
	dropEvery int // DropMidStream
	dropCount int // ledgers with transactions for a subscriber, counted
	hold      *hold
	onSubmit  func(hash string, tx map[string]any)
	onClose   func(index uint32, hashes []string)
}

// hold is the HoldSubmits fault: how many submits of transactions with a
// memo of memoType are still to hold, and whether they are applied.
type hold struct {
	memoType string // hex, as in the transaction
	n        int
	apply    bool
	onHold   func(hash string)
}

// conn is one client connection and its subscriptions.
type conn struct {
	ws       *websocket.Conn
	wmu      sync.Mutex
	accounts map[string]bool
	ledger   bool
}

func (c *conn) send(v any) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.ws.WriteJSON(v)
}

// Option configures a Server.
type Option func(*Server)

// AutoClose closes a ledger every interval, as a network does every few
// seconds; without it, ledgers close only on demand.
func AutoClose(interval time.Duration) Option {
	return func(s *Server) {
		s.done.Add(1)
		go func() {
			defer s.done.Done()
			t := time.NewTicker(interval)
			defer t.Stop()
			for {
				select {
				case <-s.stop:
					return
				case <-t.C:
					s.CloseLedger()
				}
			}
		}()
	}
}

// DropMidStream makes the server drop a subscriber's connection, as a
// lost network does, on every nth ledger that has transactions for it:
// after it has sent half of them (rounded down), so that the connection
// is lost while transactions arrive.
func DropMidStream(n int) Option {
	return func(s *Server) { s.dropEvery = n }
}

// HoldSubmits makes the server hold the first n submits of transactions
// carrying a memo of type memoType: it never answers them, as when a
// connection is lost with the answer in flight. With apply, each is
// applied as usual (it reaches the next ledger); without, it is dropped.
// onHold, if not nil, is called with each held transaction's hash.
func HoldSubmits(memoType string, n int, apply bool, onHold func(hash string)) Option {
	return func(s *Server) {
		s.hold = &hold{memoType: strings.ToUpper(hex.EncodeToString([]byte(memoType))), n: n, apply: apply, onHold: onHold}
	}
}

// OnSubmit calls fn with each transaction the server accepts into the
// next ledger, as it accepts it (with the server's lock held: fn must not
// call the server).
func OnSubmit(fn func(hash string, tx map[string]any)) Option {
	return func(s *Server) { s.onSubmit = fn }
}

// OnClose calls fn with each ledger closed and its transactions' hashes,
// before the ledger is published to subscribers.
func OnClose(fn func(index uint32, hashes []string)) Option {
	return func(s *Server) { s.onClose = fn }
}

// Start starts a test double server on a free port of 127.0.0.1.
func Start(opts ...Option) (*Server, error) {
	return Listen("127.0.0.1:0", opts...)
}

// Listen starts a test double server on addr, which must be a loopback
// address.
func Listen(addr string, opts ...Option) (*Server, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return nil, fmt.Errorf("fakeledger: the test double listens on loopback only, not %q", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("fakeledger: %w", err)
	}
	s := &Server{ln: ln, stop: make(chan struct{}), chain: newChain(), conns: map[*conn]bool{}}
	s.http = &http.Server{Handler: http.HandlerFunc(s.serveWS), ReadHeaderTimeout: 10 * time.Second}
	s.done.Add(1)
	go func() {
		defer s.done.Done()
		_ = s.http.Serve(ln)
	}()
	for _, o := range opts {
		o(s)
	}
	return s, nil
}

// URL is the server's WebSocket URL.
func (s *Server) URL() string { return "ws://" + s.ln.Addr().String() }

// Close stops the server and closes every connection.
func (s *Server) Close() {
	close(s.stop)
	_ = s.http.Close()
	s.DropConnections()
	s.done.Wait()
}

// DropConnections closes every client connection at once, without a
// close frame, as a lost network does; subscriptions are lost with them.
func (s *Server) DropConnections() {
	s.mu.Lock()
	conns := s.conns
	s.conns = map[*conn]bool{}
	s.mu.Unlock()
	for c := range conns {
		_ = c.ws.NetConn().Close()
	}
}

// Fund credits drops to an account, creating it.
func (s *Server) Fund(addr string, drops uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.chain.accounts[addr]
	if a == nil {
		a = &account{sequence: 1}
		s.chain.accounts[addr] = a
	}
	a.balance += drops
}

// Balance returns an account's balance in drops.
func (s *Server) Balance(addr string) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a := s.chain.accounts[addr]; a != nil {
		return a.balance
	}
	return 0
}

// Submitted counts the transactions ever submitted by account whose
// TransactionType is typ, pending or validated.
func (s *Server) Submitted(addr, typ string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, r := range s.chain.txs {
		if r.tx["Account"] == addr && r.tx["TransactionType"] == typ {
			n++
		}
	}
	return n
}

// Subscribes counts the subscribe requests served.
func (s *Server) Subscribes() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.subscribes
}

// SellOffers returns the IDs of owner's NFT sell offers, sorted.
func (s *Server) SellOffers(owner string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for id, o := range s.chain.offers {
		if o.owner == owner && o.sell {
			out = append(out, id)
		}
	}
	sort.Strings(out)
	return out
}

// SellOfferNFTs returns the NFTs owner offers for sale, sorted.
func (s *Server) SellOfferNFTs(owner string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, o := range s.chain.offers {
		if o.owner == owner && o.sell {
			out = append(out, o.nftID)
		}
	}
	sort.Strings(out)
	return out
}

// ValidatedIndex is the index of the last validated ledger.
func (s *Server) ValidatedIndex() uint32 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.chain.validated().index
}

// CloseLedger closes and validates a ledger with the pending
// transactions, publishes it to the subscribers, and returns its index.
func (s *Server) CloseLedger() uint32 {
	s.mu.Lock()
	l := s.chain.close()
	if s.onClose != nil {
		hashes := make([]string, len(l.txs))
		for i, r := range l.txs {
			hashes[i] = r.hash
		}
		s.onClose(l.index, hashes)
	}
	var msgs []struct {
		c *conn
		m any
	}
	var drops []*conn
	for c := range s.conns {
		before := len(msgs)
		for _, r := range l.txs {
			for a := range c.accounts {
				if r.affects(a) {
					m := s.txJSON(r)
					m["type"] = "transaction"
					m["engine_result"] = r.meta["TransactionResult"]
					m["engine_result_code"] = 0
					m["engine_result_message"] = ""
					msgs = append(msgs, struct {
						c *conn
						m any
					}{c, m})
					break
				}
			}
		}
		if n := len(msgs) - before; n > 0 && s.dropEvery > 0 {
			if s.dropCount++; s.dropCount%s.dropEvery == 0 {
				msgs = msgs[:before+n/2]
				drops = append(drops, c)
				delete(s.conns, c)
				continue
			}
		}
		if c.ledger {
			m := s.ledgerInfo()
			m["type"] = "ledgerClosed"
			m["txn_count"] = len(l.txs)
			msgs = append(msgs, struct {
				c *conn
				m any
			}{c, m})
		}
	}
	s.mu.Unlock()
	for _, m := range msgs {
		m.c.send(m.m)
	}
	for _, c := range drops {
		_ = c.ws.NetConn().Close()
	}
	return l.index
}

var upgrader = websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}

func (s *Server) serveWS(w http.ResponseWriter, r *http.Request) {
	ws, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	ws.SetReadLimit(1 << 20)
	c := &conn{ws: ws, accounts: map[string]bool{}}
	s.mu.Lock()
	s.conns[c] = true
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		_ = ws.Close()
	}()
	for {
		var req map[string]any
		if err := ws.ReadJSON(&req); err != nil {
			return
		}
		if res := s.handle(c, req); res != nil {
			c.send(res)
		}
	}
}

// rpcError is an error response of rippled.
type rpcError struct{ code, msg string }

func (e *rpcError) Error() string { return e.code }

// handle answers a request; nil is no answer (a held submit).
func (s *Server) handle(c *conn, req map[string]any) map[string]any {
	res, err := s.dispatch(c, req)
	if errors.Is(err, errHeld) {
		return nil
	}
	out := map[string]any{"id": req["id"], "type": "response", "api_version": 2}
	if err != nil {
		var re *rpcError
		if !errors.As(err, &re) {
			re = &rpcError{"internal", err.Error()}
		}
		out["status"] = "error"
		out["error"] = re.code
		out["error_message"] = re.msg
		out["request"] = req
		return out
	}
	out["status"] = "success"
	out["result"] = res
	return out
}

func (s *Server) dispatch(c *conn, req map[string]any) (map[string]any, error) {
	if v, ok := req["api_version"]; ok && fmt.Sprint(v) != "2" {
		return nil, &rpcError{"invalid_API_version", "the test double speaks API version 2 only"}
	}
	cmd, _ := req["command"].(string)
	if cmd == "ledger_accept" {
		return map[string]any{"ledger_current_index": s.CloseLedger() + 1}, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch cmd {
	case "server_info":
		return s.serverInfo(), nil
	case "ping":
		return map[string]any{}, nil
	case "account_info":
		return s.accountInfo(req)
	case "ledger":
		return s.ledger(req)
	case "submit":
		return s.submit(req)
	case "tx":
		return s.tx(req)
	case "account_tx":
		return s.accountTx(req)
	case "subscribe":
		return s.subscribe(c, req)
	case "account_nfts":
		return s.accountNFTs(req)
	case "account_objects":
		return s.accountObjects(req)
	}
	return nil, &rpcError{"unknownCmd", fmt.Sprintf("the test double does not serve %q", cmd)}
}

func (s *Server) ledgerInfo() map[string]any {
	v := s.chain.validated()
	return map[string]any{
		"fee_base": BaseFee, "ledger_hash": v.hash, "ledger_index": v.index, "ledger_time": 800000000 + 4*v.index,
		"reserve_base": 1000000, "reserve_inc": 200000,
		"validated_ledgers": fmt.Sprintf("%d-%d", firstLedger, v.index),
	}
}

func (s *Server) serverInfo() map[string]any {
	v := s.chain.validated()
	return map[string]any{"info": map[string]any{
		"build_version":     "2.4.0-fakeledger-test-double",
		"complete_ledgers":  fmt.Sprintf("%d-%d", firstLedger, v.index),
		"hostid":            "TEST-DOUBLE",
		"load_factor":       1,
		"network_id":        0,
		"server_state":      "full",
		"validation_quorum": 1,
		"validated_ledger": map[string]any{
			"age": 1, "base_fee_xrp": 0.00001, "hash": v.hash,
			"reserve_base_xrp": 1, "reserve_inc_xrp": 0.2, "seq": v.index,
		},
	}}
}

func str(req map[string]any, k string) string { s, _ := req[k].(string); return s }

func (s *Server) accountInfo(req map[string]any) (map[string]any, error) {
	addr := str(req, "account")
	a := s.chain.accounts[addr]
	if a == nil {
		return nil, &rpcError{"actNotFound", "Account not found."}
	}
	return map[string]any{
		"account_data": map[string]any{
			"Account": addr, "Balance": strconv.FormatUint(a.balance, 10), "Flags": 0,
			"LedgerEntryType": "AccountRoot", "OwnerCount": 0, "Sequence": a.sequence,
			"MintedNFTokens": a.minted,
		},
		"ledger_current_index": s.chain.validated().index + 1,
		"validated":            false,
	}, nil
}

func (s *Server) ledger(req map[string]any) (map[string]any, error) {
	v := s.chain.validated()
	if idx := req["ledger_index"]; idx != nil && idx != "validated" && idx != "closed" && idx != "current" {
		n, err := strconv.ParseUint(fmt.Sprint(idx), 10, 32)
		if err != nil || n < firstLedger || uint32(n) > v.index {
			return nil, &rpcError{"lgrNotFound", "ledgerNotFound"}
		}
		v = s.chain.ledgers[n-firstLedger]
	}
	return map[string]any{
		"ledger": map[string]any{
			"ledger_hash": v.hash, "ledger_index": v.index, "closed": true,
			"close_time": 800000000 + 4*v.index, "parent_hash": ledgerHash(v.index - 1),
		},
		"ledger_hash": v.hash, "ledger_index": v.index, "validated": true,
	}, nil
}

// errHeld is a submit held by HoldSubmits: never answered.
var errHeld = errors.New("fakeledger: submit held")

// hasMemoType reports whether a decoded transaction carries a memo whose
// MemoType is memoType (hex).
func hasMemoType(tx map[string]any, memoType string) bool {
	memos, _ := tx["Memos"].([]any)
	for _, m := range memos {
		mm, _ := m.(map[string]any)
		inner, _ := mm["Memo"].(map[string]any)
		if t, _ := inner["MemoType"].(string); strings.EqualFold(t, memoType) {
			return true
		}
	}
	return false
}

func (s *Server) submit(req map[string]any) (map[string]any, error) {
	blob := str(req, "tx_blob")
	if h := s.hold; h != nil && h.n > 0 && strings.Contains(strings.ToUpper(blob), h.memoType) {
		if tx, err := binarycodec.Decode(blob); err == nil && hasMemoType(tx, h.memoType) {
			h.n--
			hash, _ := xrplhash.SignTxBlob(blob)
			if h.apply {
				if _, err := s.chain.submit(blob); err == nil && s.onSubmit != nil {
					s.onSubmit(hash, tx)
				}
			}
			if h.onHold != nil {
				h.onHold(hash)
			}
			return nil, errHeld
		}
	}
	r, err := s.chain.submit(blob)
	if err == nil && s.onSubmit != nil {
		s.onSubmit(r.hash, r.tx)
	}
	result, msg := "tesSUCCESS", "The transaction was applied. Only final in a validated ledger."
	var se *submitError
	if errors.As(err, &se) {
		result, msg = se.code, se.msg
		if se.code == "invalidTransaction" {
			return nil, &rpcError{"invalidTransaction", se.msg}
		}
	}
	out := map[string]any{
		"engine_result": result, "engine_result_code": 0, "engine_result_message": msg,
		"tx_blob": blob, "accepted": err == nil, "applied": err == nil, "broadcast": err == nil,
		"kept": err == nil, "queued": false, "validated_ledger_index": s.chain.validated().index,
	}
	if r != nil {
		tx := map[string]any{"hash": r.hash}
		for k, v := range r.tx {
			tx[k] = v
		}
		out["tx_json"] = tx
	}
	return out, nil
}

// txJSON is a transaction in API version 2's shape: tx_json, meta, hash,
// ledger_index, ledger_hash, close_time_iso and validated side by side.
func (s *Server) txJSON(r *txRec) map[string]any {
	out := map[string]any{"tx_json": r.tx, "hash": r.hash, "validated": r.ledger != 0}
	if r.ledger != 0 {
		out["meta"] = r.meta
		out["ledger_index"] = r.ledger
		out["ledger_hash"] = ledgerHash(r.ledger)
		out["close_time_iso"] = time.Unix(946684800+800000000+4*int64(r.ledger), 0).UTC().Format(time.RFC3339)
	}
	return out
}

func (s *Server) tx(req map[string]any) (map[string]any, error) {
	r := s.chain.txs[str(req, "transaction")]
	if r == nil {
		return nil, &rpcError{"txnNotFound", "Transaction not found."}
	}
	return s.txJSON(r), nil
}

// accountTx serves account_tx, oldest first when forward is set, paged by
// limit with a marker of {ledger, seq}.
func (s *Server) accountTx(req map[string]any) (map[string]any, error) {
	addr := str(req, "account")
	if s.chain.accounts[addr] == nil {
		return nil, &rpcError{"actNotFound", "Account not found."}
	}
	v := s.chain.validated().index
	lo, hi := uint32(firstLedger), v
	if n, ok := req["ledger_index_min"].(float64); ok && n >= 0 {
		lo = max(uint32(n), firstLedger)
	}
	if n, ok := req["ledger_index_max"].(float64); ok && n >= 0 {
		hi = min(uint32(n), v)
	}
	limit := 200
	if n, ok := req["limit"].(float64); ok && n > 0 {
		limit = min(int(n), 400)
	}
	forward, _ := req["forward"].(bool)
	var all []*txRec
	for _, l := range s.chain.ledgers {
		if l.index < lo || l.index > hi {
			continue
		}
		for _, r := range l.txs {
			if r.affects(addr) {
				all = append(all, r)
			}
		}
	}
	if !forward {
		for i, j := 0, len(all)-1; i < j; i, j = i+1, j-1 {
			all[i], all[j] = all[j], all[i]
		}
	}
	start := 0
	if m, ok := req["marker"].(map[string]any); ok {
		ml, ms := toUint32(m["ledger"]), toUint32(m["seq"])
		start = len(all)
		for i, r := range all {
			if r.ledger == ml && uint32(r.index) == ms {
				start = i
				break
			}
		}
	}
	end := min(start+limit, len(all))
	txs := make([]any, 0, end-start)
	for _, r := range all[start:end] {
		txs = append(txs, s.txJSON(r))
	}
	out := map[string]any{
		"account": addr, "ledger_index_min": lo, "ledger_index_max": hi, "limit": limit,
		"transactions": txs, "validated": true,
	}
	if end < len(all) {
		out["marker"] = map[string]any{"ledger": all[end].ledger, "seq": all[end].index}
	}
	return out, nil
}

func (s *Server) subscribe(c *conn, req map[string]any) (map[string]any, error) {
	s.subscribes++
	out := map[string]any{}
	if accts, ok := req["accounts"].([]any); ok {
		for _, a := range accts {
			addr, _ := a.(string)
			if s.chain.accounts[addr] == nil {
				return nil, &rpcError{"actMalformed", "Account malformed."}
			}
			c.accounts[addr] = true
		}
	}
	if streams, ok := req["streams"].([]any); ok {
		for _, st := range streams {
			switch st {
			case "ledger":
				c.ledger = true
				out = s.ledgerInfo()
			default:
				return nil, &rpcError{"malformedStream", fmt.Sprintf("the test double has no stream %v", st)}
			}
		}
	}
	return out, nil
}

func (s *Server) accountNFTs(req map[string]any) (map[string]any, error) {
	addr := str(req, "account")
	if s.chain.accounts[addr] == nil {
		return nil, &rpcError{"actNotFound", "Account not found."}
	}
	nfts := []any{}
	for _, n := range s.sortedNFTs() {
		if n.owner == addr {
			nfts = append(nfts, map[string]any{
				"Flags": n.flags, "Issuer": n.issuer, "NFTokenID": n.id, "NFTokenTaxon": n.taxon,
				"URI": n.uri, "nft_serial": n.serial,
			})
		}
	}
	return map[string]any{"account": addr, "account_nfts": nfts, "ledger_index": s.chain.validated().index, "validated": true}, nil
}

func (s *Server) sortedNFTs() []*nft {
	out := make([]*nft, 0, len(s.chain.nfts))
	for _, n := range s.chain.nfts {
		out = append(out, n)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].id < out[j].id })
	return out
}

func (s *Server) accountObjects(req map[string]any) (map[string]any, error) {
	addr := str(req, "account")
	if s.chain.accounts[addr] == nil {
		return nil, &rpcError{"actNotFound", "Account not found."}
	}
	objs := []any{}
	ids := make([]string, 0, len(s.chain.offers))
	for id := range s.chain.offers {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		o := s.chain.offers[id]
		if o.owner != addr {
			continue
		}
		flags := uint32(0)
		if o.sell {
			flags = 1
		}
		objs = append(objs, map[string]any{
			"LedgerEntryType": "NFTokenOffer", "index": o.id, "Owner": o.owner, "NFTokenID": o.nftID,
			"Amount": strconv.FormatUint(o.amount, 10), "Flags": flags,
		})
	}
	return map[string]any{"account": addr, "account_objects": objs, "ledger_index": s.chain.validated().index, "validated": true}, nil
}
