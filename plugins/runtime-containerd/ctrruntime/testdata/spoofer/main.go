// Command spoofer is TestSpoofing's workload: run as the unprivileged
// workload in a container, it tries to send as another container's
// address with the socket calls an unprivileged process has, and prints
// "NAME refused: ERROR" or "NAME allowed" for each.
//
//	spoofer OTHER-IP DEST-IP DEST-PORT
package main

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"syscall"
)

func main() {
	if len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: spoofer OTHER-IP DEST-IP DEST-PORT")
		os.Exit(2)
	}
	other, dest := net.ParseIP(os.Args[1]).To4(), net.ParseIP(os.Args[2]).To4()
	port, err := strconv.Atoi(os.Args[3])
	if other == nil || dest == nil || err != nil {
		fmt.Fprintln(os.Stderr, "spoofer: bad address or port")
		os.Exit(2)
	}
	from := &syscall.SockaddrInet4{Addr: [4]byte(other)}
	to := &syscall.SockaddrInet4{Addr: [4]byte(dest), Port: port}
	report("bind", udp(func(fd int) error { return syscall.Bind(fd, from) }, to))
	// IP_FREEBIND needs no privilege and lets the bind through; the send
	// is what must fail.
	report("freebind", udp(func(fd int) error {
		if err := syscall.SetsockoptInt(fd, syscall.IPPROTO_IP, syscall.IP_FREEBIND, 1); err != nil {
			return err
		}
		return syscall.Bind(fd, from)
	}, to))
	report("transparent", udp(func(fd int) error {
		return syscall.SetsockoptInt(fd, syscall.IPPROTO_IP, syscall.IP_TRANSPARENT, 1)
	}, to))
	report("rawip", sock(syscall.AF_INET, syscall.SOCK_RAW, syscall.IPPROTO_RAW))
	report("packet", sock(syscall.AF_PACKET, syscall.SOCK_RAW, 0))
}

// udp makes a UDP socket, prepares it and sends a datagram to to.
func udp(prepare func(fd int) error, to syscall.Sockaddr) error {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_DGRAM, 0)
	if err != nil {
		return err
	}
	defer syscall.Close(fd)
	if err := prepare(fd); err != nil {
		return err
	}
	return syscall.Sendto(fd, []byte("spoofed"), 0, to)
}

// sock opens and closes a socket.
func sock(domain, typ, proto int) error {
	fd, err := syscall.Socket(domain, typ, proto)
	if err == nil {
		syscall.Close(fd)
	}
	return err
}

// report prints the outcome of one try.
func report(name string, err error) {
	if err != nil {
		fmt.Printf("%s refused: %v\n", name, err)
		return
	}
	fmt.Printf("%s allowed\n", name)
}
