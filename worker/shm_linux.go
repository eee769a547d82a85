package worker

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// shmHostID names this process's host for shared memory: the kernel's boot
// id and the network and PID namespaces. Two ranks with the same id see
// each other's /proc/<pid>/fd and talk over the same loopback. Empty when
// it cannot be read (shared memory is then never offered or taken).
var shmHostID = sync.OnceValue(func() string {
	boot, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	id := strings.TrimSpace(string(boot))
	for _, ns := range []string{"net", "pid"} {
		l, err := os.Readlink("/proc/self/ns/" + ns)
		if err != nil {
			return ""
		}
		id += "/" + l
	}
	return strings.ReplaceAll(id, " ", "")
})

// shmOffer is a receiving rank's ring before the sender has taken it: the
// memfd stays open until the upgrade's answer is in, so the sender can
// open it through /proc.
type shmOffer struct {
	region *shmRegion
	fd     int
	text   string // the X-Vccl-Shm request header
}

// newShmOffer creates a sealed memfd of the control page and size bytes of
// ring, maps it and describes it for the upgrade request.
func newShmOffer(size int) (*shmOffer, error) {
	host := shmHostID()
	if host == "" {
		return nil, errNoShm
	}
	fd, err := unix.MemfdCreate("vccl-link", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("memfd_create: %w", err)
	}
	fail := func(what string, err error) (*shmOffer, error) {
		unix.Close(fd)
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if err := unix.Ftruncate(fd, int64(shmCtrl+size)); err != nil {
		return fail("size the memfd", err)
	}
	// Neither end can shrink it under the other's mapping (SIGBUS).
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, unix.F_SEAL_SHRINK|unix.F_SEAL_GROW|unix.F_SEAL_SEAL); err != nil {
		return fail("seal the memfd", err)
	}
	mem, err := unix.Mmap(fd, 0, shmCtrl+size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fail("map the memfd", err)
	}
	var token [16]byte
	rand.Read(token[:])
	copy(mem[8:16], shmMagic[:])
	copy(mem[16:32], token[:])
	return &shmOffer{
		region: newShmRegion(mem, func() error { return unix.Munmap(mem) }),
		fd:     fd,
		text:   fmt.Sprintf("%s %d %d %d %s", host, os.Getpid(), fd, size, hex.EncodeToString(token[:])),
	}, nil
}

// closeFd closes the offer's descriptor (the mapping stays).
func (o *shmOffer) closeFd() { unix.Close(o.fd) }

// drop unmaps an offer the sender did not take.
func (o *shmOffer) drop() {
	o.closeFd()
	o.region.unmap()
}

// openShmOffer maps the ring a same-host receiver offered. An offer from
// another host or namespace gives errShmElsewhere.
func openShmOffer(text string) (*shmRegion, error) {
	f := strings.Fields(text)
	if len(f) != 5 {
		return nil, fmt.Errorf("malformed shared-memory offer %q", text)
	}
	if host := shmHostID(); host == "" || f[0] != host {
		return nil, errShmElsewhere
	}
	pid, err1 := strconv.Atoi(f[1])
	fd, err2 := strconv.Atoi(f[2])
	size, err3 := strconv.Atoi(f[3])
	token, err4 := hex.DecodeString(f[4])
	if err1 != nil || err2 != nil || err3 != nil || err4 != nil || len(token) != 16 || size < minSharedMemBytes || size > maxSharedMemBytes {
		return nil, fmt.Errorf("malformed shared-memory offer %q", text)
	}
	// Whatever the path names, opening it must not make it this
	// process's terminal or wait (a FIFO, a device).
	mfd, err := unix.Open(fmt.Sprintf("/proc/%d/fd/%d", pid, fd), unix.O_RDWR|unix.O_CLOEXEC|unix.O_NOCTTY|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("open the offered memfd: %w", err)
	}
	defer unix.Close(mfd)
	// Seals first: once shrinking is sealed, the size checked next stays.
	seals, err := unix.FcntlInt(uintptr(mfd), unix.F_GET_SEALS, 0)
	if err != nil {
		return nil, fmt.Errorf("offered file has no seals (not a memfd?): %w", err)
	}
	if seals&unix.F_SEAL_SHRINK == 0 {
		return nil, fmt.Errorf("offered memfd is not sealed against shrinking (seals %#x)", seals)
	}
	var st unix.Stat_t
	if err := unix.Fstat(mfd, &st); err != nil {
		return nil, fmt.Errorf("stat the offered memfd: %w", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Size != int64(shmCtrl+size) {
		return nil, fmt.Errorf("offered memfd has mode %#o and %d bytes, the offer says a regular file of %d", st.Mode, st.Size, shmCtrl+size)
	}
	mem, err := unix.Mmap(mfd, 0, shmCtrl+size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("map the offered memfd: %w", err)
	}
	if !bytes.Equal(mem[8:16], shmMagic[:]) || !bytes.Equal(mem[16:32], token) {
		unix.Munmap(mem)
		return nil, fmt.Errorf("offered memfd does not hold the offer's token")
	}
	return newShmRegion(mem, func() error { return unix.Munmap(mem) }), nil
}
