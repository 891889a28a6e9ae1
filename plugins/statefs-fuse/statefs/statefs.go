// Package statefs is the StateFS of the statefs-fuse plugin, named "fuse".
//
// For now it has one mode, "directory": an instance's state is a plain
// directory, the request's Dir, owned by the tenant's user with mode 0700,
// which Mount hands to the runtime as is. The requested size is recorded in
// the handle but NOT enforced: an instance can fill the filesystem its
// directory is on. A FUSE filesystem that enforces it is to come.
//
// Usage is counted by scanning the directory. Checkpoints are copies of the
// directory, kept root-only in the state directory's parent under
// .checkpoints/<instance directory>/<name>; rollback copies one back and
// swaps it in. Their cost is a full copy each; the FUSE filesystem is to
// make them cheap.
//
// Handles are version 1: JSON {dir, instance, size, inodes, uid, gid}. Every call
// checks that a handle's dir is an absolute, clean path below / and is a
// directory (not a symlink) owned by the handle's uid and gid, which is never
// root, so that a tampered handle cannot make the plugin hash or delete
// anything but a tenant's state directory.
package statefs

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/kigumi/kigumi/core/fstree"
	"github.com/kigumi/kigumi/core/sdk/v2"
)

// Version is the plugin's version.
const Version = "0.1.0"

// modeDirectory is the one mode: a plain directory per instance.
const modeDirectory = "directory"

// handleVersion is the version of the handles Provision makes.
const handleVersion = 1

// FS is the plugin's sdk.StateFS. It keeps no state of its own: everything is
// in the handles and on disk.
type FS struct{}

var _ sdk.StateFS = (*FS)(nil)

// New returns the StateFS.
func New() *FS { return &FS{} }

// Info describes the plugin. Its one setting, mode, accepts only "directory".
func (*FS) Info(context.Context) (sdk.Info, error) {
	return sdk.Info{
		Name:    "fuse",
		Kind:    sdk.KindStateFS,
		Version: Version,
		Schema: sdk.Schema{Attributes: []sdk.Attribute{{
			Name:        "mode",
			Type:        sdk.TypeString,
			Description: `How state is kept. Only "directory" (the default): a plain directory per instance, whose size is not enforced.`,
		}}},
		Capabilities: sdk.Capabilities{
			Scope:    sdk.ScopeHost,
			Features: []string{sdk.FeatureUsage, sdk.FeatureCheckpoint},
		},
	}, nil
}

// Configure checks the settings.
func (*FS) Configure(_ context.Context, req sdk.ConfigureRequest) error {
	if mode, ok := req.Settings["mode"]; ok && mode != modeDirectory {
		return sdk.InvalidAttribute("mode", "unsupported mode %q: the only mode is %q", mode, modeDirectory)
	}
	return nil
}

// handleData is the content of a version 1 handle.
type handleData struct {
	Dir      string `json:"dir"`
	Instance string `json:"instance"`
	Size     int64  `json:"size"`
	// Inodes is the inode limit; absent from handles made before it was.
	Inodes int64  `json:"inodes,omitempty"`
	UID    uint32 `json:"uid"`
	GID    uint32 `json:"gid"`
}

// Provision creates req.Dir (its parent must exist), owned by req.User with
// mode 0700. An existing directory is adopted if req.User owns it, which
// makes Provision safe to retry.
func (*FS) Provision(_ context.Context, req *sdk.ProvisionRequest) (sdk.Handle, error) {
	d := handleData{Dir: req.Dir, Instance: req.Instance.String(), Size: req.SizeBytes, Inodes: req.InodeLimit, UID: req.User.UID, GID: req.User.GID}
	if err := d.validate(); err != nil {
		return sdk.Handle{}, err
	}
	if req.SizeBytes < 0 {
		return sdk.Handle{}, sdk.Errorf(sdk.CodeInvalid, "state of %s: negative size %d", d.Instance, req.SizeBytes)
	}
	if req.InodeLimit < 0 {
		return sdk.Handle{}, sdk.InvalidAttribute("inode_limit", "state of %s: negative inode limit %d", d.Instance, req.InodeLimit)
	}
	if d.Inodes == 0 {
		d.Inodes = defaultInodes(req.SizeBytes)
	}
	err := os.Mkdir(d.Dir, 0o700)
	switch {
	case err == nil:
		if err := setOwner(d); err != nil {
			return sdk.Handle{}, errors.Join(err, os.Remove(d.Dir))
		}
	case errors.Is(err, fs.ErrExist):
		if err := d.check(); err != nil {
			return sdk.Handle{}, err
		}
		if err := os.Chmod(d.Dir, 0o700); err != nil {
			return sdk.Handle{}, sdk.Errorf(sdk.CodeInternal, "state of %s: %w", d.Instance, err)
		}
	case errors.Is(err, fs.ErrNotExist):
		return sdk.Handle{}, sdk.Errorf(sdk.CodeInvalid, "state of %s: the parent of %s does not exist", d.Instance, d.Dir)
	default:
		return sdk.Handle{}, sdk.Errorf(sdk.CodeInternal, "state of %s: %w", d.Instance, err)
	}
	data, err := json.Marshal(d)
	if err != nil {
		return sdk.Handle{}, sdk.Errorf(sdk.CodeInternal, "state of %s: %w", d.Instance, err)
	}
	return sdk.Handle{Version: handleVersion, Data: data}, nil
}

func setOwner(d handleData) error {
	if err := os.Lchown(d.Dir, int(d.UID), int(d.GID)); err != nil {
		return sdk.Errorf(sdk.CodeInternal, "state of %s: %w", d.Instance, err)
	}
	if err := os.Chmod(d.Dir, 0o700); err != nil {
		return sdk.Errorf(sdk.CodeInternal, "state of %s: %w", d.Instance, err)
	}
	return nil
}

// defaultInodes is the inode limit of a state of size bytes: one per 4 KiB,
// and at least 64.
func defaultInodes(size int64) int64 { return max(size/4096, 64) }

// Mount returns the state directory as a mount of type sdk.MountDir.
func (*FS) Mount(_ context.Context, h sdk.Handle) (sdk.Mount, error) {
	d, err := open(h)
	if err != nil {
		return sdk.Mount{}, err
	}
	return sdk.Mount{Source: d.Dir, Type: sdk.MountDir}, nil
}

// Unmount does nothing in directory mode, once the handle is found valid.
func (*FS) Unmount(_ context.Context, h sdk.Handle) error {
	_, err := decode(h)
	return err
}

// Hash returns a SHA-256 digest of the state's tree: equal content gives an
// equal digest, and any change to names, types, file content or symlink
// targets gives another. Permissions, owners and times are not hashed.
// Symlinks are hashed by target and never followed.
func (*FS) Hash(_ context.Context, h sdk.Handle) ([]byte, error) {
	d, err := open(h)
	if err != nil {
		return nil, err
	}
	sum, err := hashTree(d.Dir)
	if err != nil {
		return nil, sdk.Errorf(sdk.CodeInternal, "hash state of %s: %w", d.Instance, err)
	}
	return sum, nil
}

// Recover checks that the state directory exists as provisioned, failing with
// CodeNotFound when it is gone, and returns the handle unchanged.
func (*FS) Recover(_ context.Context, h sdk.Handle) (sdk.Handle, error) {
	if _, err := open(h); err != nil {
		return sdk.Handle{}, err
	}
	return h, nil
}

// Deprovision deletes the state directory. Deleting deleted state succeeds.
func (*FS) Deprovision(ctx context.Context, h sdk.Handle) error {
	d, err := open(h)
	if errors.Is(err, sdk.ErrNotFound) {
		if err := fstree.RemoveAll(ctx, d.checkpointDir()); err != nil {
			return sdk.Errorf(sdk.CodeInternal, "delete checkpoints of %s: %w", d.Instance, err)
		}
		return nil
	}
	if err != nil {
		return err
	}
	if err := fstree.RemoveAll(ctx, d.Dir); err != nil {
		return sdk.Errorf(sdk.CodeInternal, "delete state of %s: %w", d.Instance, err)
	}
	if err := fstree.RemoveAll(ctx, d.checkpointDir()); err != nil {
		return sdk.Errorf(sdk.CodeInternal, "delete checkpoints of %s: %w", d.Instance, err)
	}
	return nil
}

// decode decodes and validates a handle.
func decode(h sdk.Handle) (handleData, error) {
	var d handleData
	if h.Version != handleVersion {
		return d, sdk.Errorf(sdk.CodeInvalid, "unsupported handle version %d", h.Version)
	}
	if err := json.Unmarshal(h.Data, &d); err != nil {
		return d, sdk.Errorf(sdk.CodeInvalid, "bad handle: %w", err)
	}
	return d, d.validate()
}

// open decodes a handle and checks its directory.
func open(h sdk.Handle) (handleData, error) {
	d, err := decode(h)
	if err != nil {
		return d, err
	}
	return d, d.check()
}

func (d handleData) validate() error {
	if !filepath.IsAbs(d.Dir) || filepath.Clean(d.Dir) != d.Dir || d.Dir == "/" {
		return sdk.Errorf(sdk.CodeInvalid, "state of %s: directory %q is not an absolute, clean path below /", d.Instance, d.Dir)
	}
	if d.UID == 0 || d.GID == 0 {
		return sdk.Errorf(sdk.CodeInvalid, "state of %s: refusing state owned by root", d.Instance)
	}
	return nil
}

// check checks that d.Dir is a directory owned by d's user.
func (d handleData) check() error {
	fi, err := os.Lstat(d.Dir)
	if errors.Is(err, fs.ErrNotExist) {
		return sdk.Errorf(sdk.CodeNotFound, "state of %s: %s does not exist", d.Instance, d.Dir)
	}
	if err != nil {
		return sdk.Errorf(sdk.CodeInternal, "state of %s: %w", d.Instance, err)
	}
	if st := fi.Sys().(*syscall.Stat_t); !fi.IsDir() || st.Uid != d.UID || st.Gid != d.GID {
		return sdk.Errorf(sdk.CodeInvalid, "%s is not the state of %s: it is not a directory owned by %d:%d", d.Dir, d.Instance, d.UID, d.GID)
	}
	return nil
}

// hashTree hashes the tree at dir: for each entry below it, in lexical order,
// its path and type, then a regular file's size and content digest or a
// symlink's target. Every variable-length field is length-prefixed. The walk
// stays inside dir even if the tree changes meanwhile.
func hashTree(dir string) ([]byte, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	h := sha256.New()
	err = fs.WalkDir(root.FS(), ".", func(path string, e fs.DirEntry, err error) error {
		if err != nil || path == "." {
			return err
		}
		writeField(h, []byte(path))
		switch t := e.Type(); {
		case t.IsDir():
			h.Write([]byte{'d'})
		case t&fs.ModeSymlink != 0:
			target, err := root.Readlink(path)
			if err != nil {
				return err
			}
			h.Write([]byte{'l'})
			writeField(h, []byte(target))
		case t.IsRegular():
			h.Write([]byte{'f'})
			return hashFile(h, root, path)
		default:
			h.Write([]byte{'o'})
			writeField(h, []byte(t.String()))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return h.Sum(nil), nil
}

// hashFile writes the size and SHA-256 of the regular file at path to h.
func hashFile(h hash.Hash, root *os.Root, path string) error {
	f, err := root.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return errors.Join(err, fmt.Errorf("%s changed while hashing", path))
	}
	content := sha256.New()
	n, err := io.Copy(content, f)
	if err != nil {
		return err
	}
	h.Write(binary.BigEndian.AppendUint64(nil, uint64(n)))
	h.Write(content.Sum(nil))
	return nil
}

// writeField writes b to h, prefixed with its length.
func writeField(h hash.Hash, b []byte) {
	h.Write(binary.BigEndian.AppendUint64(nil, uint64(len(b))))
	h.Write(b)
}
