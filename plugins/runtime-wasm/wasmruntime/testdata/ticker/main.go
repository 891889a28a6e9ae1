// Command ticker prints "started", then "tick N" every -interval, and exits
// after -ticks ticks (0: never).
package main

import (
	"flag"
	"fmt"
	"time"
)

func main() {
	ticks := flag.Int("ticks", 0, "ticks before exiting; 0 for never")
	interval := flag.Duration("interval", time.Hour, "time between ticks")
	flag.Parse()
	fmt.Println("started")
	for i := 1; *ticks == 0 || i <= *ticks; i++ {
		time.Sleep(*interval)
		fmt.Println("tick", i)
	}
}
