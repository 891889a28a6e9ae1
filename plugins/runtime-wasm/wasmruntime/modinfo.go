package wasmruntime

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"

	"github.com/dustin/go-humanize"

	"github.com/kigumi/kigumi/core/sdk/v2"
)

// moduleInfo is what a cheap scan of a module's sections tells: enough to
// refuse, without compiling it, a module the runtime could not link or run.
type moduleInfo struct {
	// badImport is the first import the runtime does not provide, as
	// "module.name" (quoted and cut short); "" when every import is served.
	badImport string
	// hasStart is set when the module exports a function named _start.
	hasStart bool
	// memory is set when the module defines (not imports) a memory; its
	// minimum and maximum are in pages, and hasMax tells whether it
	// declares a maximum.
	memory         bool
	memMin, memMax uint64
	hasMax         bool
}

// The wasm section ids scanModule reads; it skips the others.
const (
	sectionImport = 2
	sectionMemory = 5
	sectionExport = 7
)

// maxNameLen is the longest import or export name scanModule keeps; a
// longer name is no name the runtime serves, and is skipped unread.
const maxNameLen = 64

// errNotWasm is the error of a file that does not start as a wasm module.
var errNotWasm = errors.New("not a WebAssembly module (no \\0asm version 1 header)")

// scanModule reads a binary module's sections from r in one pass, reading
// only the import, memory and export sections and skipping the rest
// unread, in memory independent of the module's size. served reports
// whether the runtime provides a function import. It does not validate
// the module: the compiler does, when it runs.
func scanModule(r io.Reader, served func(module, name string) bool) (moduleInfo, error) {
	var info moduleInfo
	br := bufio.NewReaderSize(r, 32<<10)
	var hdr [8]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil || !bytes.Equal(hdr[:], []byte("\x00asm\x01\x00\x00\x00")) {
		return info, errNotWasm
	}
	for {
		id, err := br.ReadByte()
		if err == io.EOF {
			return info, nil
		} else if err != nil {
			return info, err
		}
		size, err := readU32(br)
		if err != nil {
			return info, fmt.Errorf("section %d: %w", id, err)
		}
		s := &sectionReader{r: br, left: int64(size)}
		switch id {
		case sectionImport:
			err = s.imports(&info, served)
		case sectionMemory:
			err = s.memories(&info)
		case sectionExport:
			err = s.exports(&info)
		}
		if err == nil {
			err = s.skip(s.left)
		}
		if err != nil {
			return info, fmt.Errorf("section %d: %w", id, err)
		}
	}
}

// sectionReader reads one section, never past its end.
type sectionReader struct {
	r    *bufio.Reader
	left int64
}

var errTruncated = errors.New("truncated")

func (s *sectionReader) ReadByte() (byte, error) {
	if s.left <= 0 {
		return 0, errTruncated
	}
	b, err := s.r.ReadByte()
	if err != nil {
		return 0, errTruncated
	}
	s.left--
	return b, nil
}

func (s *sectionReader) skip(n int64) error {
	if n > s.left {
		return errTruncated
	}
	got, err := s.r.Discard(int(n))
	s.left -= int64(got)
	if err != nil {
		return errTruncated
	}
	return nil
}

// count reads a vector's length; every entry takes at least a byte, so a
// count larger than what is left of the section is a lie.
func (s *sectionReader) count() (uint32, error) {
	n, err := readU32(s)
	if err == nil && int64(n) > s.left {
		err = errTruncated
	}
	return n, err
}

// name reads a name, keeping at most maxNameLen bytes of it; long is set
// when it was longer.
func (s *sectionReader) name() (name string, long bool, err error) {
	n, err := s.count()
	if err != nil {
		return "", false, err
	}
	keep := min(int64(n), maxNameLen)
	b := make([]byte, keep)
	for i := range b {
		if b[i], err = s.ReadByte(); err != nil {
			return "", false, err
		}
	}
	return string(b), int64(n) > keep, s.skip(int64(n) - keep)
}

func (s *sectionReader) imports(info *moduleInfo, served func(module, name string) bool) error {
	n, err := s.count()
	if err != nil {
		return err
	}
	for range n {
		mod, longMod, err := s.name()
		if err != nil {
			return err
		}
		name, longName, err := s.name()
		if err != nil {
			return err
		}
		kind, err := s.ReadByte()
		if err != nil {
			return err
		}
		switch kind {
		case 0: // function: type index
			_, err = readU32(s)
		case 1: // table: reftype, limits
			if _, err = s.ReadByte(); err == nil {
				_, _, _, err = readLimits(s)
			}
		case 2: // memory: limits
			_, _, _, err = readLimits(s)
		case 3: // global: valtype, mutability
			if _, err = s.ReadByte(); err == nil {
				_, err = s.ReadByte()
			}
		case 4: // tag: attribute, type index
			if _, err = s.ReadByte(); err == nil {
				_, err = readU32(s)
			}
		default:
			return fmt.Errorf("import kind %d", kind)
		}
		if err != nil {
			return err
		}
		if info.badImport == "" && (kind != 0 || longMod || longName || !served(mod, name)) {
			info.badImport = describeImport(mod, longMod, name, longName, kind)
		}
	}
	return nil
}

// describeImport names an import for a diagnostic: its names quoted (they
// are the tenant's bytes) and cut short, and its kind unless a function.
func describeImport(mod string, longMod bool, name string, longName bool, kind byte) string {
	q := func(s string, long bool) string {
		if long {
			s += "..."
		}
		return strconv.QuoteToGraphic(s)
	}
	d := q(mod, longMod) + "." + q(name, longName)
	switch kind {
	case 1:
		d = "the table " + d
	case 2:
		d = "the memory " + d
	case 3:
		d = "the global " + d
	case 4:
		d = "the tag " + d
	default:
		d = "the function " + d
	}
	return d
}

func (s *sectionReader) memories(info *moduleInfo) error {
	n, err := s.count()
	if err != nil {
		return err
	}
	for range n {
		lo, hi, hasMax, err := readLimits(s)
		if err != nil {
			return err
		}
		if !info.memory {
			info.memory, info.memMin, info.memMax, info.hasMax = true, lo, hi, hasMax
		}
	}
	return nil
}

func (s *sectionReader) exports(info *moduleInfo) error {
	n, err := s.count()
	if err != nil {
		return err
	}
	for range n {
		name, long, err := s.name()
		if err != nil {
			return err
		}
		kind, err := s.ReadByte()
		if err != nil {
			return err
		}
		if _, err := readU32(s); err != nil {
			return err
		}
		if kind == 0 && !long && name == "_start" {
			info.hasStart = true
		}
	}
	return nil
}

// readLimits reads a table's or memory's limits: flags (bit 0: a maximum
// follows; bit 1: shared; bit 2: 64-bit), a minimum and maybe a maximum.
func readLimits(r io.ByteReader) (lo, hi uint64, hasMax bool, err error) {
	flags, err := r.ReadByte()
	if err != nil {
		return 0, 0, false, err
	}
	if flags > 7 {
		return 0, 0, false, fmt.Errorf("limits flags %#x", flags)
	}
	if lo, err = readU64(r); err != nil {
		return 0, 0, false, err
	}
	if flags&1 != 0 {
		if hi, err = readU64(r); err != nil {
			return 0, 0, false, err
		}
	}
	return lo, hi, flags&1 != 0, nil
}

var errLEB = errors.New("malformed LEB128 integer")

// readU32 reads an unsigned LEB128 integer of at most 32 bits (5 bytes).
func readU32(r io.ByteReader) (uint32, error) {
	v, err := readLEB(r, 5)
	if err == nil && v > 0xffffffff {
		err = errLEB
	}
	return uint32(v), err
}

// readU64 reads an unsigned LEB128 integer of at most 64 bits (10 bytes).
func readU64(r io.ByteReader) (uint64, error) { return readLEB(r, 10) }

func readLEB(r io.ByteReader, maxBytes int) (uint64, error) {
	var v uint64
	for i := range maxBytes {
		b, err := r.ReadByte()
		if err != nil {
			return 0, err
		}
		if i == 9 && b > 1 {
			return 0, errLEB
		}
		v |= uint64(b&0x7f) << (7 * i)
		if b&0x80 == 0 {
			return v, nil
		}
	}
	return 0, errLEB
}

// check refuses a module the runtime can't run within memoryPages (0:
// wasm32's maximum), naming the spec's module attribute.
func (info moduleInfo) check(path string, memoryPages uint32) error {
	limit := uint64(memoryPages)
	if limit == 0 {
		limit = maxPages
	}
	pages := func(n uint64) string {
		if n > maxPages {
			return strconv.FormatUint(n, 10) + " pages"
		}
		return humanize.IBytes(n * pageSize)
	}
	switch {
	case info.badImport != "":
		return sdk.InvalidAttribute("module", "module %s imports %s, which the wasm runtime does not provide (it serves the functions of %s and %s)",
			path, info.badImport, wasiModule, hostModule)
	case !info.hasStart:
		return sdk.InvalidAttribute("module", "module %s exports no _start function: it is not a WASI command", path)
	case info.memory && info.memMin > limit:
		return sdk.InvalidAttribute("module", "module %s needs at least %s of memory, more than the instance's memory limit of %s", path, pages(info.memMin), pages(limit))
	case info.memory && info.hasMax && info.memMax > limit:
		return sdk.InvalidAttribute("module", "module %s declares a memory maximum of %s, more than the instance's memory limit of %s; lower the maximum or raise resources.memory", path, pages(info.memMax), pages(limit))
	}
	return nil
}

// scanError turns an error of scanModule into a refusal of the module.
func scanError(path string, err error) error {
	if errors.Is(err, errNotWasm) {
		return sdk.InvalidAttribute("module", "module %s is %v", path, err)
	}
	return sdk.InvalidAttribute("module", "module %s is malformed: %v", path, err)
}

// The import modules whose functions a module may use.
const (
	wasiModule = "wasi_snapshot_preview1"
	hostModule = "kigumi"
)

// wasiFunctions are the functions of wasi_snapshot_preview1 that wazero
// serves (the sock_ ones refuse: no instance has a socket).
var wasiFunctions = []string{
	"args_get", "args_sizes_get", "clock_res_get", "clock_time_get",
	"environ_get", "environ_sizes_get", "fd_advise", "fd_allocate",
	"fd_close", "fd_datasync", "fd_fdstat_get", "fd_fdstat_set_flags",
	"fd_fdstat_set_rights", "fd_filestat_get", "fd_filestat_set_size",
	"fd_filestat_set_times", "fd_pread", "fd_prestat_dir_name",
	"fd_prestat_get", "fd_pwrite", "fd_read", "fd_readdir", "fd_renumber",
	"fd_seek", "fd_sync", "fd_tell", "fd_write", "path_create_directory",
	"path_filestat_get", "path_filestat_set_times", "path_link",
	"path_open", "path_readlink", "path_remove_directory", "path_rename",
	"path_symlink", "path_unlink_file", "poll_oneoff", "proc_exit",
	"proc_raise", "random_get", "sched_yield", "sock_accept", "sock_recv",
	"sock_send", "sock_shutdown",
}

// servedImport reports whether the runtime provides the function module.name.
func servedImport(module, name string) bool {
	switch module {
	case wasiModule:
		_, ok := slices.BinarySearch(wasiFunctions, name)
		return ok
	case hostModule:
		return slices.Contains(hostFunctionNames(), name)
	}
	return false
}
