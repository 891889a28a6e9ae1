// Command alloc allocates and touches 1 GiB in 16 MiB chunks.
package main

import "fmt"

var keep [][]byte

func main() {
	for i := 1; i <= 64; i++ {
		b := make([]byte, 16<<20)
		for j := range b {
			b[j] = byte(j)
		}
		keep = append(keep, b)
		fmt.Printf("allocated %d MiB\n", i*16)
	}
}
