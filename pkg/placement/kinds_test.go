package placement

import (
	"testing"

	"k8s.io/utils/ptr"

	"github.com/spillway-dev/spillway/pkg/apis/spillway/v1alpha1"
)

func TestKind(t *testing.T) {
	cases := []struct {
		unit v1alpha1.Unit
		want UnitKind
	}{
		{v1alpha1.Unit{Resource: "ecs"}, FixedUnit},
		{v1alpha1.Unit{}, FixedUnit},
		{v1alpha1.Unit{Resource: "idc"}, FixedUnit},
		{v1alpha1.Unit{Resource: "elastic"}, AutoscaledUnit},
		{v1alpha1.Unit{Resource: "elastic", Autoscaled: ptr.To(false)}, FixedUnit},
		{v1alpha1.Unit{Resource: "ecs", Autoscaled: ptr.To(true)}, AutoscaledUnit},
		{v1alpha1.Unit{Resource: "eci"}, VirtualUnit},
		{v1alpha1.Unit{Resource: "acs", Autoscaled: ptr.To(false)}, VirtualUnit},
	}
	for _, c := range cases {
		if got := Kind(&c.unit); got != c.want {
			t.Errorf("Kind(%+v) = %v, want %v", c.unit, got, c.want)
		}
	}
}

func TestUnmatchable(t *testing.T) {
	cases := []struct {
		selector map[string]string
		want     string
	}{
		{nil, ""},
		{map[string]string{"alibabacloud.com/nodepool-id": "np-xxxxx"}, ""},
		{map[string]string{"a": "", "b": "x.y_z-1"}, ""},
		{map[string]string{"alibabacloud.com/nodepool-id": "np7ec79f2235954e879de07b780058****"}, "alibabacloud.com/nodepool-id"},
		{map[string]string{"b": "ok", "a": "on prem", "c": "-x"}, "a"},
		{map[string]string{"pool": "gpu-"}, "pool"},
	}
	for _, c := range cases {
		if got := Unmatchable(&v1alpha1.Unit{NodeSelector: c.selector}); got != c.want {
			t.Errorf("Unmatchable(%v) = %q, want %q", c.selector, got, c.want)
		}
	}
}

func TestVirtualNodesResolve(t *testing.T) {
	v := DefaultVirtualNodes()
	rp := seedPolicy()
	if got := v.Resolve(rp); got != rp {
		t.Error("a policy without virtual units was copied")
	}
	rp.Spec.Units = append(rp.Spec.Units,
		v1alpha1.Unit{Resource: "eci"},
		v1alpha1.Unit{Resource: "acs", NodeSelector: map[string]string{"pool": "acs-gpu"}})
	got := v.Resolve(rp)
	if got == rp || rp.Spec.Units[2].NodeSelector != nil {
		t.Fatal("Resolve changed the policy it was given")
	}
	if sel := got.Spec.Units[2].NodeSelector; len(sel) != 1 || sel["type"] != "virtual-kubelet" {
		t.Errorf("eci unit selects %v, want the virtual nodes", sel)
	}
	if sel := got.Spec.Units[3].NodeSelector; sel["pool"] != "acs-gpu" || len(sel) != 1 {
		t.Errorf("a virtual unit's own nodeSelector was replaced: %v", sel)
	}
	if tol, ok := v.Toleration(); !ok || tol.Key != "virtual-kubelet.io/provider" || tol.Operator != "Exists" {
		t.Errorf("Toleration = %+v, %v", tol, ok)
	}
	if _, ok := (VirtualNodes{}).Toleration(); ok {
		t.Error("a toleration without a taint key")
	}
}
