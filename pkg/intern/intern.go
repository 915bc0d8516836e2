// Package intern shares what a cache of many similar objects repeats. At
// fleet size the controller's and the adapter's pod caches are most of
// their processes' memory, and most of a pod's strings (label keys, the
// values a ReplicaSet's pods share, namespaces, node and owner names) and
// whole label sets repeat from pod to pod. String keeps one copy of each
// string; a Table keeps one copy of each label set (ShareLabels) or any
// other value spelled by a Key.
//
// What is shared is read-only: an object in an informer's cache is only
// read, and a copy (DeepCopy) gets maps of its own.
package intern

import (
	"maps"
	"slices"
	"strings"
	"sync"
	"unique"
)

// String is the one shared copy of s. unique's handles are weak: a string
// nothing holds any more is dropped from its table.
func String(s string) string {
	if s == "" {
		return ""
	}
	return unique.Make(s).Value()
}

// Map is a copy of m, sized to it, with its keys interned and its values
// too, except those of the keys unique reports (nil: none); nil stays nil.
func Map(m map[string]string, unique func(key string) bool) map[string]string {
	if m == nil {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		if unique == nil || !unique(k) {
			v = String(v)
		}
		out[String(k)] = v
	}
	return out
}

// Table shares values by key. A map stored in one stays with every object
// that got it, so weak references cannot tell when it is unused: the table
// is bounded instead, and a full one starts over (what it handed out
// stays with its holders). A nil *Table shares nothing.
type Table[V any] struct {
	max    int
	mu     sync.Mutex
	values map[string]V
}

// NewTable returns a table holding at most max values (0: none).
func NewTable[V any](maxValues int) *Table[V] {
	return &Table[V]{max: maxValues, values: map[string]V{}}
}

// Share is the value held under key, or the one value makes after holding
// it there (value is called only then); an empty key (nothing to share)
// gives value's.
func (t *Table[V]) Share(key string, value func() V) V {
	if t == nil || key == "" || t.max <= 0 {
		return value()
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if have, ok := t.values[key]; ok {
		return have
	}
	if len(t.values) >= t.max {
		clear(t.values)
	}
	v := value()
	t.values[key] = v
	return v
}

// Len is how many values the table holds.
func (t *Table[V]) Len() int {
	if t == nil {
		return 0
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.values)
}

// Key spells a map the same way whatever its order, value(v) for each
// value; "" for an empty map. NUL separates the parts: it cannot appear in
// a label key or value, nor in a resource name.
func Key[K ~string, V any](m map[K]V, value func(V) string) string {
	if len(m) == 0 {
		return ""
	}
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(m)) {
		b.WriteString(string(k))
		b.WriteByte(0)
		b.WriteString(value(m[k]))
		b.WriteByte(0)
	}
	return b.String()
}

// ShareLabels is the label set m as the one copy t holds of it; a set t
// does not hold yet is copied and interned (Map) first, only then.
func ShareLabels(t *Table[map[string]string], m map[string]string) map[string]string {
	return t.Share(Key(m, func(v string) string { return v }), func() map[string]string { return Map(m, nil) })
}
