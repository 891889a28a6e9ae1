// Command echo prints its arguments, environment, clock and a random
// number, writes a line to stderr, and exits with the code in $EXIT.
package main

import (
	"crypto/rand"
	"fmt"
	"os"
	"strconv"
	"time"
)

func main() {
	for _, a := range os.Args {
		fmt.Println("arg:", a)
	}
	for _, e := range os.Environ() {
		fmt.Println("env:", e)
	}
	fmt.Println("time:", time.Now().Unix())
	fmt.Println("rand:", rand.Text())
	fmt.Fprintln(os.Stderr, "to stderr")
	code, _ := strconv.Atoi(os.Getenv("EXIT"))
	os.Exit(code)
}
