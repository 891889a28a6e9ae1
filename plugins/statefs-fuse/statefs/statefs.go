// Package statefs is the StateFS of the statefs-fuse plugin, named "fuse".
//
// It has two modes. In "directory" (the default for now) an instance's
// state is a plain directory, the request's Dir, owned by the tenant's user
// with mode 0700, which Mount hands to the runtime as is; its quotas are
// NOT enforced. In "fuse", Dir is the mount point of a quotafs filesystem
// over a backing directory in .data/ next to it, served by a detached
// helper process (this executable re-executed with HelperCommand) that
// outlives the plugin and the agent; its pid file and control socket are
// in .run/. The filesystem lets in only the tenant's uid and root, and
// enforces the size and inode quotas and the request's I/O rates. Mount and Recover adopt a live
// helper, or clear a stale (ENOTCONN) mount and start a new one. Hash is
// the Merkle root of package merkle in both modes: kept incrementally by
// a served FUSE state's helper, computed by a scan otherwise.
//
// Usage is counted by the helper, or by scanning the directory. Checkpoints are copies of the
// directory, kept root-only in the state directory's parent under
// .checkpoints/<instance directory>/<name>; rollback copies one back and
// swaps it in. Their cost is a full copy each; the FUSE filesystem is to
// make them cheap.
//
// Handles are version 1: JSON {dir, instance, size, inodes, uid, gid, mode, io}. Every call
// checks that a handle's dir is an absolute, clean path below / and is a
// directory (not a symlink) owned by the handle's uid and gid, which is never
// root, so that a tampered handle cannot make the plugin hash or delete
// anything but a tenant's state directory.
package statefs

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/kigumi/kigumi/core/fstree"
	"github.com/kigumi/kigumi/core/sdk/v2"
	"github.com/kigumi/kigumi/plugins/statefs-fuse/merkle"
	"github.com/kigumi/kigumi/plugins/statefs-fuse/quotafs"
)

// Version is the plugin's version.
const Version = "0.1.0"

// The modes: a FUSE filesystem per instance (package quotafs), served by a
// detached helper; or a plain directory, where FUSE is unavailable.
const (
	modeFUSE      = "fuse"
	modeDirectory = "directory"
)

// handleVersion is the version of the handles Provision makes.
const handleVersion = 1

// FS is the plugin's sdk.StateFS. It keeps no state of its own but its
// mode: everything is in the handles and on disk.
type FS struct {
	mode string
}

var _ sdk.StateFS = (*FS)(nil)

// New returns the StateFS.
// The default mode is still directory, until the engine's end-to-end
// tests run with fuse; mode = "fuse" turns it on.
func New() *FS { return &FS{mode: modeDirectory} }

// fuseMode is fuse where /dev/fuse opens, directory (with a warning)
// elsewhere.
func fuseMode() string {
	f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0)
	if err != nil {
		fmt.Fprintf(os.Stderr, "WARNING: statefs-fuse: FUSE is unavailable (%v): state is kept in plain directories, whose quotas are only checked by scanning, not enforced\n", err)
		return modeDirectory
	}
	f.Close()
	return modeFUSE
}

// Info describes the plugin. Its one setting, mode, accepts only "directory".
func (*FS) Info(context.Context) (sdk.Info, error) {
	return sdk.Info{
		Name:    "fuse",
		Kind:    sdk.KindStateFS,
		Version: Version,
		Schema: sdk.Schema{Attributes: []sdk.Attribute{{
			Name:        "mode",
			Type:        sdk.TypeString,
			Description: `How state is kept: "directory" (the default), a plain directory per instance whose quotas are not enforced; or "fuse", a FUSE filesystem per instance that enforces them (falling back to directory, with a warning, where FUSE is unavailable).`,
		}}},
		Capabilities: sdk.Capabilities{
			Scope:    sdk.ScopeHost,
			Features: []string{sdk.FeatureUsage, sdk.FeatureCheckpoint},
		},
	}, nil
}

// Configure checks the settings and sets the mode.
func (f *FS) Configure(_ context.Context, req sdk.ConfigureRequest) error {
	mode, ok := req.Settings["mode"].(string)
	if _, set := req.Settings["mode"]; set && (!ok || mode != modeDirectory && mode != modeFUSE) {
		return sdk.InvalidAttribute("mode", "unsupported mode %v: %q or %q", req.Settings["mode"], modeFUSE, modeDirectory)
	}
	switch {
	case mode == modeFUSE:
		f.mode = fuseMode()
	case ok:
		f.mode = mode
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
	// Mode is modeFUSE, or empty for a plain directory.
	Mode string `json:"mode,omitempty"`
	// IO are the rates the FUSE filesystem holds reads and writes to.
	IO quotafs.Rates `json:"io,omitzero"`
}

// dataDir is where the state's files are: the directory itself, or the
// backing directory of its FUSE filesystem.
func (d handleData) dataDir() string {
	if d.Mode == modeFUSE {
		return d.backing()
	}
	return d.Dir
}

// Provision makes the state. In directory mode it creates req.Dir (its
// parent must exist), owned by req.User with mode 0700. In fuse mode that
// directory, root's, is the mount point, and the files are kept in a
// backing directory owned by req.User in .data next to it. An existing
// directory is adopted if req.User owns it, which makes Provision safe to
// retry.
func (f *FS) Provision(_ context.Context, req *sdk.ProvisionRequest) (sdk.Handle, error) {
	d := handleData{Dir: req.Dir, Instance: req.Instance.String(), Size: req.SizeBytes, Inodes: req.InodeLimit, UID: req.User.UID, GID: req.User.GID,
		IO: quotafs.Rates{ReadBPS: req.IO.ReadBPS, WriteBPS: req.IO.WriteBPS, ReadIOPS: req.IO.ReadIOPS, WriteIOPS: req.IO.WriteIOPS}}
	if f.mode == modeFUSE {
		d.Mode = modeFUSE
	}
	if err := d.validate(); err != nil {
		return sdk.Handle{}, err
	}
	if req.SizeBytes < 0 {
		return sdk.Handle{}, sdk.Errorf(sdk.CodeInvalid, "state of %s: negative size %d", d.Instance, req.SizeBytes)
	}
	if io := req.IO; io.ReadBPS < 0 || io.WriteBPS < 0 || io.ReadIOPS < 0 || io.WriteIOPS < 0 {
		return sdk.Handle{}, sdk.InvalidAttribute("io", "state of %s: negative I/O rate in %+v", d.Instance, io)
	}
	if req.InodeLimit < 0 {
		return sdk.Handle{}, sdk.InvalidAttribute("inode_limit", "state of %s: negative inode limit %d", d.Instance, req.InodeLimit)
	}
	if d.Inodes == 0 {
		d.Inodes = defaultInodes(req.SizeBytes)
	}
	if _, err := os.Stat(filepath.Dir(d.Dir)); errors.Is(err, fs.ErrNotExist) {
		return sdk.Handle{}, sdk.Errorf(sdk.CodeInvalid, "state of %s: the parent of %s does not exist", d.Instance, d.Dir)
	}
	if d.Mode == modeFUSE {
		if err := os.Mkdir(d.Dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return sdk.Handle{}, sdk.Errorf(sdk.CodeInternal, "state of %s: %w", d.Instance, err)
		}
		if err := os.MkdirAll(filepath.Dir(d.backing()), 0o700); err != nil {
			return sdk.Handle{}, sdk.Errorf(sdk.CodeInternal, "state of %s: %w", d.Instance, err)
		}
	}
	err := os.Mkdir(d.dataDir(), 0o700)
	switch {
	case err == nil:
		if err := setOwner(d); err != nil {
			return sdk.Handle{}, errors.Join(err, os.Remove(d.dataDir()))
		}
	case errors.Is(err, fs.ErrExist):
		if err := d.check(); err != nil {
			return sdk.Handle{}, err
		}
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
	if err := os.Lchown(d.dataDir(), int(d.UID), int(d.GID)); err != nil {
		return sdk.Errorf(sdk.CodeInternal, "state of %s: %w", d.Instance, err)
	}
	if err := os.Chmod(d.dataDir(), 0o700); err != nil {
		return sdk.Errorf(sdk.CodeInternal, "state of %s: %w", d.Instance, err)
	}
	return nil
}

// defaultInodes is the inode limit of a state of size bytes: one per 4 KiB,
// and at least 64.
func defaultInodes(size int64) int64 { return max(size/4096, 64) }

// Mount returns the state directory as a mount of type sdk.MountDir, or
// in fuse mode makes sure its filesystem is mounted and served (see serve)
// and returns it as sdk.MountFUSE.
func (f *FS) Mount(ctx context.Context, h sdk.Handle) (sdk.Mount, error) {
	d, err := open(h)
	if err != nil {
		return sdk.Mount{}, err
	}
	if d.Mode != modeFUSE {
		return sdk.Mount{Source: d.Dir, Type: sdk.MountDir}, nil
	}
	if err := f.serve(ctx, d); err != nil {
		return sdk.Mount{}, sdk.Errorf(sdk.CodeInternal, "mount state of %s: %w", d.Instance, err)
	}
	return sdk.Mount{Source: d.Dir, Type: sdk.MountFUSE}, nil
}

// Unmount unmounts the state's filesystem and ends its helper; in
// directory mode it does nothing once the handle is found valid.
func (*FS) Unmount(_ context.Context, h sdk.Handle) error {
	d, err := decode(h)
	if err != nil || d.Mode != modeFUSE {
		return err
	}
	if err := d.stop(); err != nil {
		return sdk.Errorf(sdk.CodeInternal, "unmount state of %s: %w", d.Instance, err)
	}
	return nil
}

// Hash returns the state's Merkle root (package merkle): from the helper,
// which keeps it up to date, when the state is served; by scanning the
// files otherwise.
func (*FS) Hash(ctx context.Context, h sdk.Handle) ([]byte, error) {
	d, err := open(h)
	if err != nil {
		return nil, err
	}
	if _, alive := d.helper(); alive && d.Mode == modeFUSE {
		rep, err := ask(ctx, d, "hash")
		if err != nil {
			return nil, sdk.Errorf(sdk.CodeInternal, "hash state of %s: %w", d.Instance, err)
		}
		return hex.DecodeString(rep.Root)
	}
	sum, err := merkle.Scan(d.dataDir())
	if err != nil {
		return nil, sdk.Errorf(sdk.CodeInternal, "hash state of %s: %w", d.Instance, err)
	}
	return sum[:], nil
}

// Recover checks that the state exists as provisioned, failing with
// CodeNotFound when it is gone. A FUSE state that was served is served
// again: its helper adopted if it still runs with a live mount, otherwise
// a stale mount is cleared and a new helper started.
func (f *FS) Recover(ctx context.Context, h sdk.Handle) (sdk.Handle, error) {
	d, err := open(h)
	if err != nil {
		return sdk.Handle{}, err
	}
	if _, err := os.Stat(d.pidFile()); d.Mode == modeFUSE && err == nil {
		if err := f.serve(ctx, d); err != nil {
			return sdk.Handle{}, sdk.Errorf(sdk.CodeInternal, "recover state of %s: %w", d.Instance, err)
		}
	}
	return h, nil
}

// Deprovision unmounts and deletes the state. Deleting deleted state
// succeeds.
func (*FS) Deprovision(ctx context.Context, h sdk.Handle) error {
	d, err := open(h)
	if err != nil && !errors.Is(err, sdk.ErrNotFound) {
		return err
	}
	if d.Mode == modeFUSE {
		if err := d.stop(); err != nil {
			return sdk.Errorf(sdk.CodeInternal, "delete state of %s: %w", d.Instance, err)
		}
		if err := fstree.RemoveAll(ctx, d.runDir()); err != nil {
			return sdk.Errorf(sdk.CodeInternal, "delete state of %s: %w", d.Instance, err)
		}
		if err := os.Remove(d.Dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return sdk.Errorf(sdk.CodeInternal, "delete state of %s: %w", d.Instance, err)
		}
	}
	if err == nil {
		if err := fstree.RemoveAll(ctx, d.dataDir()); err != nil {
			return sdk.Errorf(sdk.CodeInternal, "delete state of %s: %w", d.Instance, err)
		}
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
	if d.Mode != "" && d.Mode != modeFUSE {
		return sdk.Errorf(sdk.CodeInvalid, "state of %s: unknown mode %q", d.Instance, d.Mode)
	}
	if d.UID == 0 || d.GID == 0 {
		return sdk.Errorf(sdk.CodeInvalid, "state of %s: refusing state owned by root", d.Instance)
	}
	return nil
}

// check checks that d's files are in a directory owned by d's user.
func (d handleData) check() error {
	fi, err := os.Lstat(d.dataDir())
	if errors.Is(err, fs.ErrNotExist) {
		return sdk.Errorf(sdk.CodeNotFound, "state of %s: %s does not exist", d.Instance, d.dataDir())
	}
	if err != nil {
		return sdk.Errorf(sdk.CodeInternal, "state of %s: %w", d.Instance, err)
	}
	if st := fi.Sys().(*syscall.Stat_t); !fi.IsDir() || st.Uid != d.UID || st.Gid != d.GID {
		return sdk.Errorf(sdk.CodeInvalid, "%s is not the state of %s: it is not a directory owned by %d:%d", d.dataDir(), d.Instance, d.UID, d.GID)
	}
	return nil
}
