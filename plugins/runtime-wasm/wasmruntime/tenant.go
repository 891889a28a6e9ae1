package wasmruntime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/kigumi/kigumi/core/fstree"
	"github.com/kigumi/kigumi/core/sdk/v2"
)

// tenantHandleVersion is the version of the tenant handles this runtime
// makes.
const tenantHandleVersion = 1

// tenantFile is the record PrepareTenant writes in the tenant's RunDir.
const tenantFile = "tenant.json"

// tenantData is a tenant handle's Data, and the tenant's record.
type tenantData struct {
	Tenant string `json:"tenant"`
	UID    uint32 `json:"uid"`
	RunDir string `json:"run_dir"`
}

// PrepareTenant records the tenant in its RunDir and returns its handle.
// Instances still run in one sandbox process each: the per-tenant sandbox is
// to come. Preparing a prepared tenant returns the same handle.
func (r *Runtime) PrepareTenant(_ context.Context, req *sdk.TenantRequest) (sdk.Handle, error) {
	d := tenantData{Tenant: req.Tenant, UID: req.User.UID, RunDir: req.RunDir}
	if d.Tenant == "" {
		return sdk.Handle{}, sdk.Errorf(sdk.CodeInvalid, "tenant has no name")
	}
	if !filepath.IsAbs(d.RunDir) || filepath.Clean(d.RunDir) != d.RunDir || d.RunDir == "/" {
		return sdk.Handle{}, sdk.Errorf(sdk.CodeInvalid, "tenant %s: run dir %q is not an absolute, clean path below /", d.Tenant, d.RunDir)
	}
	b, err := json.Marshal(d)
	if err != nil {
		return sdk.Handle{}, fmt.Errorf("encode tenant handle: %w", err)
	}
	if err := os.MkdirAll(d.RunDir, 0o700); err != nil {
		return sdk.Handle{}, fmt.Errorf("tenant %s: create run dir: %w", d.Tenant, err)
	}
	if err := os.WriteFile(filepath.Join(d.RunDir, tenantFile), b, 0o600); err != nil {
		return sdk.Handle{}, fmt.Errorf("tenant %s: record: %w", d.Tenant, err)
	}
	return sdk.Handle{Version: tenantHandleVersion, Data: b}, nil
}

// ReleaseTenant removes the tenant's record and RunDir. Releasing a
// released tenant succeeds.
func (r *Runtime) ReleaseTenant(ctx context.Context, h sdk.Handle) error {
	d, err := decodeTenantHandle(h)
	if err != nil {
		return err
	}
	if err := d.checkRecord(); errors.Is(err, sdk.ErrNotFound) {
		return nil
	} else if err != nil {
		return err
	}
	if err := fstree.RemoveAll(ctx, d.RunDir); err != nil {
		return fmt.Errorf("tenant %s: remove run dir: %w", d.Tenant, err)
	}
	return nil
}

func decodeTenantHandle(h sdk.Handle) (tenantData, error) {
	var d tenantData
	if h.Version != tenantHandleVersion {
		return d, sdk.Errorf(sdk.CodeInvalid, "unknown tenant handle version %d", h.Version)
	}
	if err := json.Unmarshal(h.Data, &d); err != nil {
		return d, sdk.Errorf(sdk.CodeInvalid, "decode tenant handle: %w", err)
	}
	if d.Tenant == "" || !filepath.IsAbs(d.RunDir) || filepath.Clean(d.RunDir) != d.RunDir || d.RunDir == "/" {
		return d, sdk.Errorf(sdk.CodeInvalid, "malformed tenant handle")
	}
	return d, nil
}

// checkRecord checks that the tenant's record in its RunDir is the
// handle's, so a tampered handle cannot make the runtime remove another
// directory. It fails with CodeNotFound when the record is gone.
func (d tenantData) checkRecord() error {
	b, err := os.ReadFile(filepath.Join(d.RunDir, tenantFile))
	if errors.Is(err, fs.ErrNotExist) {
		return sdk.Errorf(sdk.CodeNotFound, "tenant %s is not prepared", d.Tenant)
	}
	if err != nil {
		return fmt.Errorf("tenant %s: read record: %w", d.Tenant, err)
	}
	var rec tenantData
	if err := json.Unmarshal(b, &rec); err != nil || rec != d {
		return sdk.Errorf(sdk.CodeInvalid, "tenant handle does not match the record in %s", d.RunDir)
	}
	return nil
}

// checkTenantHandle checks that a StartRequest's tenant handle, if set, is
// of the instance's tenant and prepared.
func checkTenantHandle(req *sdk.StartRequest) error {
	if req.Tenant.Version == 0 && len(req.Tenant.Data) == 0 {
		return nil
	}
	d, err := decodeTenantHandle(req.Tenant)
	if err != nil {
		return err
	}
	if d.Tenant != req.Instance.Tenant {
		return sdk.Errorf(sdk.CodeInvalid, "instance %s comes with the handle of tenant %s", req.Instance, d.Tenant)
	}
	if err := d.checkRecord(); err != nil {
		return fmt.Errorf("instance %s: %w", req.Instance, err)
	}
	return nil
}
