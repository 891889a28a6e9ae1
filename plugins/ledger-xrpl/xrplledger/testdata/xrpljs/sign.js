// Signs transactions with xrpl.js, for the golden signing vectors of
// tx_test.go. Reads a JSON list of {seed, tx} on stdin and writes a JSON
// list of {tx_blob, hash} on stdout.
const { Wallet } = require('xrpl');

let input = '';
process.stdin.on('data', (c) => { input += c; });
process.stdin.on('end', () => {
  const out = JSON.parse(input).map(({ seed, tx }) => {
    const w = Wallet.fromSeed(seed);
    return w.sign(tx);
  });
  process.stdout.write(JSON.stringify(out));
});
