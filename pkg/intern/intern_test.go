package intern

import (
	"reflect"
	"strings"
	"testing"
	"unsafe"
)

func sameString(a, b string) bool { return unsafe.StringData(a) == unsafe.StringData(b) }

func sameMap(a, b map[string]string) bool {
	return reflect.ValueOf(a).UnsafePointer() == reflect.ValueOf(b).UnsafePointer()
}

func TestString(t *testing.T) {
	a, b := strings.Clone("serving.kserve.io/inferenceservice"), strings.Clone("serving.kserve.io/inferenceservice")
	if sameString(a, b) {
		t.Fatal("the clones already share their bytes")
	}
	if ia, ib := String(a), String(b); ia != a || !sameString(ia, ib) {
		t.Errorf("String gave %q and %q, not one copy of %q", ia, ib, a)
	}
	if String("") != "" {
		t.Error(`String("") is not ""`)
	}
}

func TestMap(t *testing.T) {
	m := map[string]string{"app": strings.Clone("llm"), "id": strings.Clone("7f3a")}
	out := Map(m, func(k string) bool { return k == "id" })
	if !reflect.DeepEqual(out, m) || sameMap(out, m) {
		t.Errorf("Map = %v, want an equal copy of %v", out, m)
	}
	if !sameString(out["app"], String("llm")) {
		t.Error("a shared value was not interned")
	}
	if sameString(out["id"], String("7f3a")) {
		t.Error("a unique value was interned")
	}
	if Map(nil, nil) != nil {
		t.Error("Map(nil) is not nil")
	}
}

func TestTable(t *testing.T) {
	tab := NewTable[map[string]string](2)
	a := ShareLabels(tab, map[string]string{"app": "llm", "tier": "gold"})
	b := ShareLabels(tab, map[string]string{"tier": "gold", "app": "llm"})
	c := ShareLabels(tab, map[string]string{"app": "llm", "tier": "silver"})
	if !sameMap(a, b) {
		t.Error("two equal label sets are held twice")
	}
	if sameMap(a, c) || c["tier"] != "silver" {
		t.Errorf("another label set shares the first: %v", c)
	}
	// Full (2 sets): a third starts the table over; what it handed out
	// stays as it was.
	d := ShareLabels(tab, map[string]string{"app": "other"})
	if tab.Len() != 1 || a["tier"] != "gold" || d["app"] != "other" {
		t.Errorf("after filling up: %d held, a = %v, d = %v", tab.Len(), a, d)
	}
	// Nothing to share: no key, a table of size 0, a nil table.
	for name, tab := range map[string]*Table[map[string]string]{"size 0": NewTable[map[string]string](0), "nil": nil} {
		x, y := ShareLabels(tab, map[string]string{"a": "1"}), ShareLabels(tab, map[string]string{"a": "1"})
		if sameMap(x, y) || tab.Len() != 0 {
			t.Errorf("%s table shared a label set", name)
		}
	}
	if e := ShareLabels(tab, map[string]string{}); e == nil || len(e) != 0 || tab.Len() != 1 {
		t.Errorf("an empty label set was shared or lost: %v, %d held", e, tab.Len())
	}
}

func TestKey(t *testing.T) {
	id := func(v string) string { return v }
	cases := []struct {
		a, b map[string]string
		same bool
	}{
		{map[string]string{"a": "1", "b": "2"}, map[string]string{"b": "2", "a": "1"}, true},
		{map[string]string{"a": "1"}, map[string]string{"a": "2"}, false},
		// Without a separator these would spell the same.
		{map[string]string{"ab": "c"}, map[string]string{"a": "bc"}, false},
		{map[string]string{"a": "1", "b": ""}, map[string]string{"a": "1"}, false},
		{nil, map[string]string{}, true},
	}
	for _, c := range cases {
		if got := Key(c.a, id) == Key(c.b, id); got != c.same {
			t.Errorf("Key(%v) == Key(%v) is %v", c.a, c.b, got)
		}
	}
	if Key(map[string]string(nil), id) != "" {
		t.Error("an empty map has a key")
	}
}
