// Package statefs is the StateFS of the statefs-fuse plugin, named "fuse".
//
// It has two modes. In "fuse", the default wherever /dev/fuse opens, an
// instance's state, the request's Dir, is the mount point of a quotafs
// filesystem over a backing directory in .data/ next to it, served by a
// detached helper process (this executable re-executed with
// HelperCommand) that outlives the plugin and the agent; its pid file and
// control socket are in .run/. The filesystem lets in only the tenant's
// uid, its subordinate uids (which its containers' uids map to) and root,
// and enforces the size and inode quotas and the request's I/O rates.
// Mount and Recover adopt a live helper, or clear a stale (ENOTCONN) mount
// and start a new one. In "directory", the fallback where FUSE is
// unavailable (with a warning) or when the settings ask for it, the state
// is a plain directory, Dir, owned by the tenant's user with mode 0700,
// which Mount hands to the runtime as is; its quotas are NOT enforced.
// Hash is the Merkle root of package merkle in both modes: kept
// incrementally by a served FUSE state's helper, computed by a scan
// otherwise.
//
// Usage is counted by the helper, or by scanning the directory. Checkpoints are copies of the
// directory, kept root-only in the state directory's parent under
// .checkpoints/<instance directory>/<name>; rollback copies one back and
// swaps it in. Their cost is a full copy each (docs/statefs.md). A
// checkpoint is mounted read-only at .mounts/<instance directory>/<name>.
//
// Handles are version 1: JSON {dir, instance, size, inodes, uid, gid,
// sub_uid, sub_count, mode, io}. Every call
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
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/hashicorp/go-hclog"

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
	// device is the FUSE device whose opening decides the mode.
	device string
	log    hclog.Logger
}

var _ sdk.StateFS = (*FS)(nil)

// New returns the StateFS in fuse mode; Configure falls back to directory
// mode where FUSE is unavailable. Call it before sdk.Serve, which
// redirects os.Stderr: its warnings are hclog lines on the standard error.
func New() *FS { return &FS{mode: modeFUSE, device: "/dev/fuse", log: sdk.NewLogger()} }

// fuseMode is fuse where the FUSE device opens, directory (with a
// warning) elsewhere.
func (f *FS) fuseMode() string {
	dev, err := os.OpenFile(f.device, os.O_RDWR, 0)
	if err != nil {
		f.log.Warn("FUSE is unavailable: state is kept in plain directories, where quota enforcement is weaker: state.size and the inode limit are only checked by scanning (Usage), not enforced on writes", "device", f.device, "error", err.Error())
		return modeDirectory
	}
	dev.Close()
	return modeFUSE
}

// Info describes the plugin. Its one setting is mode.
func (*FS) Info(context.Context) (sdk.Info, error) {
	return sdk.Info{
		Name:    "fuse",
		Kind:    sdk.KindStateFS,
		Version: Version,
		Schema: sdk.Schema{Attributes: []sdk.Attribute{{
			Name:        "mode",
			Type:        sdk.TypeString,
			Description: `How state is kept: "fuse" (the default), a FUSE filesystem per instance that enforces its quotas, falling back to directory, with a warning, where FUSE is unavailable; or "directory", a plain directory per instance whose quotas are not enforced.`,
		}}},
		Capabilities: sdk.Capabilities{
			Scope:    sdk.ScopeHost,
			Features: []string{sdk.FeatureUsage, sdk.FeatureCheckpoint, sdk.FeatureCheckpointMount},
		},
	}, nil
}

// Configure checks the settings and sets the mode: fuse unless the
// settings say directory or /dev/fuse does not open.
func (f *FS) Configure(_ context.Context, req sdk.ConfigureRequest) error {
	mode, ok := req.Settings["mode"].(string)
	if _, set := req.Settings["mode"]; set && (!ok || mode != modeDirectory && mode != modeFUSE) {
		return sdk.InvalidAttribute("mode", "unsupported mode %v: %q or %q", req.Settings["mode"], modeFUSE, modeDirectory)
	}
	if mode == modeDirectory {
		f.mode = modeDirectory
	} else {
		f.mode = f.fuseMode()
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
	// SubUID and SubCount are the tenant's subordinate uid range, which
	// may enter a FUSE state too; absent from handles made before it was.
	SubUID   uint32 `json:"sub_uid,omitempty"`
	SubCount uint32 `json:"sub_count,omitempty"`
	// SubGID is the first of the tenant's SubCount subordinate gids;
	// absent from handles made before it was.
	SubGID uint32 `json:"sub_gid,omitempty"`
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
// directory, root's, is the mount point (marked, see markerName), and
// nothing else is made: the files are kept in a backing directory owned by
// req.User in .data next to it, made on first use of the handle (see
// open), so that an agent that dies before it records the handle leaves
// nothing outside req.Dir, which the engine removes. An existing directory
// is adopted if req.User owns it, or ids of its subordinate range do (a
// runtime may give the root to the workload's id), which makes Provision
// safe to retry.
func (f *FS) Provision(_ context.Context, req *sdk.ProvisionRequest) (sdk.Handle, error) {
	d := handleData{Dir: req.Dir, Instance: req.Instance.String(), Size: req.SizeBytes, Inodes: req.InodeLimit, UID: req.User.UID, GID: req.User.GID,
		SubUID: req.User.SubUID, SubGID: req.User.SubGID, SubCount: req.User.Count,
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
		if err := d.makeMountPoint(); err != nil {
			return sdk.Handle{}, err
		}
	} else if err := d.makeData(); err != nil {
		return sdk.Handle{}, err
	}
	data, err := json.Marshal(d)
	if err != nil {
		return sdk.Handle{}, sdk.Errorf(sdk.CodeInternal, "state of %s: %w", d.Instance, err)
	}
	return sdk.Handle{Version: handleVersion, Data: data}, nil
}

// markerName is the file in a FUSE state's mount point, hidden once
// mounted, that names the instance Provision made it for: only a mount
// point so marked gets a backing directory on first use, so that a
// tampered handle cannot have one made, and a mount, anywhere else.
const markerName = ".kigumi-state"

// makeMountPoint makes a FUSE state's mount point and marks it, or adopts
// it (and its backing directory, if there is one yet).
func (d handleData) makeMountPoint() error {
	if err := os.Mkdir(d.Dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return sdk.Errorf(sdk.CodeInternal, "state of %s: %w", d.Instance, err)
	}
	if !d.mounted() {
		if fi, err := os.Lstat(d.Dir); err != nil || !fi.IsDir() {
			return sdk.Errorf(sdk.CodeInvalid, "state of %s: %s is not a directory", d.Instance, d.Dir)
		}
		if !d.marked() {
			f, err := os.OpenFile(filepath.Join(d.Dir, markerName), os.O_WRONLY|os.O_CREATE|os.O_TRUNC|syscall.O_NOFOLLOW, 0o600)
			if err == nil {
				_, err = f.WriteString(d.Instance)
				err = errors.Join(err, f.Close())
			}
			if err != nil {
				return sdk.Errorf(sdk.CodeInternal, "state of %s: mark the mount point: %w", d.Instance, err)
			}
		}
	}
	if _, err := os.Lstat(d.backing()); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return d.check()
}

// marked reports whether d's mount point, not mounted, carries the marker
// Provision left for d's instance.
func (d handleData) marked() bool {
	if d.mounted() {
		return false
	}
	f, err := os.OpenFile(filepath.Join(d.Dir, markerName), os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return false
	}
	defer f.Close()
	b := make([]byte, len(d.Instance)+1)
	n, _ := f.Read(b)
	return string(b[:n]) == d.Instance
}

// makeData makes the directory that holds the state's files, owned by its
// user with mode 0700, or adopts it if its user owns it.
func (d handleData) makeData() error {
	err := os.Mkdir(d.dataDir(), 0o700)
	switch {
	case err == nil:
		if err := setOwner(d); err != nil {
			return errors.Join(err, os.Remove(d.dataDir()))
		}
		return nil
	case errors.Is(err, fs.ErrExist):
		return d.check()
	default:
		return sdk.Errorf(sdk.CodeInternal, "state of %s: %w", d.Instance, err)
	}
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
func (*FS) Unmount(ctx context.Context, h sdk.Handle) error {
	d, err := decode(h)
	if err != nil || d.Mode != modeFUSE {
		return err
	}
	if err := d.stop(ctx); err != nil {
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
		if err := d.stop(ctx); err != nil {
			return sdk.Errorf(sdk.CodeInternal, "delete state of %s: %w", d.Instance, err)
		}
		if err := fstree.RemoveAll(ctx, d.runDir()); err != nil {
			return sdk.Errorf(sdk.CodeInternal, "delete state of %s: %w", d.Instance, err)
		}
		if err := os.Remove(filepath.Join(d.Dir, markerName)); err != nil && !errors.Is(err, fs.ErrNotExist) {
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
	if err := d.unmountCheckpoints(); err != nil {
		return sdk.Errorf(sdk.CodeInternal, "delete checkpoints of %s: %w", d.Instance, err)
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

// open decodes a handle and checks its files' directory. A FUSE state's
// backing directory is made here, on the handle's first use, if its mount
// point carries Provision's marker.
func open(h sdk.Handle) (handleData, error) {
	d, err := decode(h)
	if err != nil {
		return d, err
	}
	if d.Mode == modeFUSE {
		if _, err := os.Lstat(d.backing()); errors.Is(err, fs.ErrNotExist) && d.marked() {
			if err := os.MkdirAll(filepath.Dir(d.backing()), 0o700); err != nil {
				return d, sdk.Errorf(sdk.CodeInternal, "state of %s: %w", d.Instance, err)
			}
			if err := d.makeData(); err != nil {
				return d, err
			}
		}
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
	if d.SubCount > 0 && (d.SubUID == 0 || uint64(d.SubUID)+uint64(d.SubCount) > 1<<32) {
		return sdk.Errorf(sdk.CodeInvalid, "state of %s: subordinate uids %d+%d include root or wrap around", d.Instance, d.SubUID, d.SubCount)
	}
	if d.SubGID != 0 && uint64(d.SubGID)+uint64(d.SubCount) > 1<<32 {
		return sdk.Errorf(sdk.CodeInvalid, "state of %s: subordinate gids %d+%d wrap around", d.Instance, d.SubGID, d.SubCount)
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
	if st := fi.Sys().(*syscall.Stat_t); !fi.IsDir() || !d.tenantID(st.Uid, d.UID, d.SubUID) || !d.tenantID(st.Gid, d.GID, d.SubGID) {
		return sdk.Errorf(sdk.CodeInvalid, "%s is not the state of %s: it is not a directory owned by %d:%d or ids of its subordinate range", d.dataDir(), d.Instance, d.UID, d.GID)
	}
	return nil
}

// tenantID reports whether id is the tenant's own (own) or one of its
// SubCount subordinate ids from sub. A runtime whose workload runs as a
// subordinate id may give it the state's root (the containerd runtime
// does, for a tenant's own rootless daemon).
func (d handleData) tenantID(id, own, sub uint32) bool {
	return id == own || sub != 0 && id >= sub && uint64(id) < uint64(sub)+uint64(d.SubCount)
}
