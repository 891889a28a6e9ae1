package state

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
)

// hashVersion heads the canonical encoding; it changes only if the
// encoding itself does, never when a field is added.
const hashVersion = "kigumi-instance-spec/1\n"

// DefaultRestart is the restart policy of an instance whose spec names
// none.
const DefaultRestart = "on-failure"

// specField is one field of an InstanceSpec in its canonical encoding.
type specField struct {
	// name identifies the field in the encoding; it never changes.
	name string
	// value and def are the field's value and its default: a string,
	// int64, []string or map[string]string.
	value, def any
}

// fields returns s's fields for its hash. A field added to InstanceSpec is
// added here with the default that records written before it existed
// decode to, so that their hashes do not change.
func (s InstanceSpec) fields() []specField {
	perms := make([]string, len(s.Permissions))
	for i, p := range s.Permissions {
		perms[i] = p.String() // canonical: parameters sorted
	}
	slices.Sort(perms) // a set: the order they are granted in means nothing
	settings := ""
	if len(s.Settings) > 0 {
		// Keys sorted at every level: canonical.
		data, err := json.Marshal(s.Settings)
		if err != nil {
			panic(fmt.Sprintf("state: encode instance settings: %v", err)) // decoded from HCL: plain data
		}
		settings = string(data)
	}
	// Records written before restart policies existed have none: they
	// had the default.
	restart := cmp.Or(s.Restart, DefaultRestart)
	var mounts []string
	for _, m := range s.Mounts {
		mounts = append(mounts, m.Source+"\x00"+m.Target)
	}
	return []specField{
		{"runtime", s.Runtime, ""},
		{"module", s.Module, ""},
		{"module_digest", s.ModuleDigest, ""},
		{"image", s.Image, ""},
		{"archive", s.Archive, ""},
		{"digest", s.Digest, ""},
		{"args", s.Args, []string(nil)},
		{"env", s.Env, map[string]string(nil)},
		{"resources.memory", s.Resources.MemoryBytes, int64(0)},
		{"resources.milli_cpu", s.Resources.MilliCPU, int64(0)},
		{"resources.disk", s.Resources.DiskBytes, int64(0)},
		{"resources.pids", s.Resources.Pids, int64(0)},
		{"resources.io.read_bps", s.Resources.IO.ReadBPS, int64(0)},
		{"resources.io.write_bps", s.Resources.IO.WriteBPS, int64(0)},
		{"resources.io.read_iops", s.Resources.IO.ReadIOPS, int64(0)},
		{"resources.io.write_iops", s.Resources.IO.WriteIOPS, int64(0)},
		{"state_bytes", s.StateBytes, int64(0)},
		{"permissions", perms, []string(nil)},
		{"settings", settings, ""},
		{"restart", restart, DefaultRestart},
		{"mounts", mounts, []string(nil)},
		{"stdin", s.Stdin, ""},
		{"state_guest", s.StateGuest, ""},
		{"state_seed", s.StateSeed, ""},
	}
}

// Hash returns a digest of a canonical encoding of what the spec says:
// equal specs have equal hashes, whatever the order of env entries or
// permissions. A field at its default contributes nothing, so adding a
// field with a default changes no existing hash. Compare hashes of specs,
// not a hash stored by an older version: records written before this
// encoding hold another kind of SpecHash.
func (s InstanceSpec) Hash() string {
	return hashFields(s.fields())
}

// hashFields hashes the canonical encoding of fields: those not at their
// default, sorted by name, each as its name and its value. It sorts fields
// in place.
func hashFields(fields []specField) string {
	slices.SortFunc(fields, func(a, b specField) int { return cmp.Compare(a.name, b.name) })
	buf := make([]byte, 0, 1024)
	buf = append(buf, hashVersion...)
	var def []byte
	for _, f := range fields {
		start := len(buf)
		buf = appendString(buf, f.name)
		value := len(buf)
		buf = encodeValue(buf, f.value)
		if def = encodeValue(def[:0], f.def); bytes.Equal(buf[value:], def) {
			buf = buf[:start]
		}
	}
	sum := sha256.Sum256(buf)
	return hex.EncodeToString(sum[:])
}

// encodeValue appends the canonical encoding of v to buf: a type byte,
// then lengths and contents. An empty list and a nil one encode alike, as
// do an empty map and a nil one.
func encodeValue(buf []byte, v any) []byte {
	switch v := v.(type) {
	case string:
		return appendString(append(buf, 's'), v)
	case int64:
		return binary.BigEndian.AppendUint64(append(buf, 'i'), uint64(v))
	case []string:
		buf = binary.BigEndian.AppendUint64(append(buf, 'l'), uint64(len(v)))
		for _, e := range v {
			buf = appendString(buf, e)
		}
		return buf
	case map[string]string:
		buf = binary.BigEndian.AppendUint64(append(buf, 'm'), uint64(len(v)))
		for _, k := range slices.Sorted(maps.Keys(v)) {
			buf = appendString(appendString(buf, k), v[k])
		}
		return buf
	}
	panic("state: no canonical encoding for a spec field of this type") // a programming error
}

// appendString appends s, prefixed with its length.
func appendString(buf []byte, s string) []byte {
	return append(binary.BigEndian.AppendUint64(buf, uint64(len(s))), s...)
}
