package exporter

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/model"

	"github.com/spillway-dev/spillway/pkg/metricnames"
)

// The per-process metrics, indexes into the arrays of processFamilies and
// sample.
const (
	smUtil = iota
	memUsed
	encUtil
	decUtil
	memCopyUtil
	numProcessMetrics
)

// seriesKey is everything the labels of one process entry are made of.
// Two entries with equal keys are the same series.
type seriesKey struct {
	host, uuid, model         string
	namespace, pod, container string
	gpu                       int
	pid                       uint32
}

// processLabelValues gives every per-process label its value by name, so
// reordering metricnames.ProcessLabels cannot put a value under the wrong
// label. newProcessFamilies fails if a name in ProcessLabels has no entry
// here or an entry here is not in ProcessLabels.
var processLabelValues = map[string]func(k *seriesKey) string{
	metricnames.LabelHostname:     func(k *seriesKey) string { return k.host },
	metricnames.LabelGPU:          func(k *seriesKey) string { return strconv.Itoa(k.gpu) },
	metricnames.LabelUUID:         func(k *seriesKey) string { return k.uuid },
	metricnames.LabelModelName:    func(k *seriesKey) string { return k.model },
	metricnames.LabelNamespace:    func(k *seriesKey) string { return k.namespace },
	metricnames.LabelPod:          func(k *seriesKey) string { return k.pod },
	metricnames.LabelContainer:    func(k *seriesKey) string { return k.container },
	metricnames.LabelPID:          func(k *seriesKey) string { return strconv.FormatUint(uint64(k.pid), 10) },
	metricnames.LabelACKNamespace: func(k *seriesKey) string { return k.namespace },
	metricnames.LabelACKPod:       func(k *seriesKey) string { return k.pod },
	metricnames.LabelACKContainer: func(k *seriesKey) string { return k.container },
}

// processFamilies describes the five per-process metric families.
type processFamilies struct {
	names [numProcessMetrics]string
	descs [numProcessMetrics]*prometheus.Desc
	// header is each family's "# HELP" and "# TYPE" lines in the text
	// format.
	header [numProcessMetrics]string
	// byName lists the metrics in name order, the order of exposition.
	byName [numProcessMetrics]int
	// labels are the label names sorted, the order of exposition; value
	// gives each its value.
	labels []string
	value  []func(*seriesKey) string
}

func newProcessFamilies() (processFamilies, error) {
	var f processFamilies
	helps := [numProcessMetrics]struct{ name, help string }{
		smUtil:      {metricnames.ProcessSMUtil, "SM utilization of the process on the GPU over the last collection interval, in percent (0-100)."},
		memUsed:     {metricnames.ProcessMemUsed, "GPU memory used by the process, in MiB."},
		encUtil:     {metricnames.ProcessEncUtil, "Video encoder utilization of the process, in percent (0-100)."},
		decUtil:     {metricnames.ProcessDecUtil, "Video decoder utilization of the process, in percent (0-100)."},
		memCopyUtil: {metricnames.ProcessMemCopyUtil, "Memory copy (frame buffer) utilization of the process, in percent (0-100)."},
	}
	var errs []error
	f.labels = slices.Sorted(slices.Values(metricnames.ProcessLabels))
	for i, l := range f.labels {
		v, ok := processLabelValues[l]
		switch {
		case i > 0 && l == f.labels[i-1]:
			errs = append(errs, fmt.Errorf("exporter: process label %q listed twice", l))
		case !ok:
			errs = append(errs, fmt.Errorf("exporter: process label %q has no value (add it to processLabelValues)", l))
		// The text fast path writes names as they are, which is right for
		// every escaping scheme only if they are legacy names.
		case !model.LegacyValidation.IsValidLabelName(l):
			errs = append(errs, fmt.Errorf("exporter: process label %q is not a legacy label name", l))
		}
		f.value = append(f.value, v)
	}
	for l := range processLabelValues {
		if !slices.Contains(f.labels, l) {
			errs = append(errs, fmt.Errorf("exporter: label %q has a value but is not in metricnames.ProcessLabels", l))
		}
	}
	for i, h := range helps {
		if !model.LegacyValidation.IsValidMetricName(h.name) {
			errs = append(errs, fmt.Errorf("exporter: process metric %q is not a legacy metric name", h.name))
		}
		f.names[i] = h.name
		f.descs[i] = prometheus.NewDesc(h.name, h.help, f.labels, nil)
		f.header[i] = "# HELP " + h.name + " " + helpEscaper.Replace(h.help) + "\n# TYPE " + h.name + " gauge\n"
		f.byName[i] = i
	}
	slices.SortFunc(f.byName[:], func(a, b int) int { return strings.Compare(f.names[a], f.names[b]) })
	return f, errors.Join(errs...)
}

// The escaping of the text exposition format: HELP text escapes backslash
// and newline, label values also the double quote.
var (
	helpEscaper  = strings.NewReplacer(`\`, `\\`, "\n", `\n`)
	valueEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`)
)

// series is the label set of one process entry, built once and shared by
// every snapshot while the process runs with the same labels. It is
// immutable.
type series struct {
	// values are the label values in processFamilies.labels order.
	values []string
	// pairs are the same as label pairs, for the prometheus.Collector path.
	pairs []*dto.LabelPair
	// text is the same in the text format, braces included.
	text string
	// order sorts as values do, in one comparison (see orderKey).
	order string
}

func (f *processFamilies) newSeries(k seriesKey) (*series, error) {
	s := &series{values: make([]string, len(f.labels)), pairs: make([]*dto.LabelPair, len(f.labels))}
	backing := make([]dto.LabelPair, len(f.labels))
	var b strings.Builder
	b.WriteByte('{')
	for i, name := range f.labels {
		v := f.value[i](&k)
		// The registry refuses a scrape with an invalid label value; check
		// here so that only this process is dropped.
		if !utf8.ValidString(v) {
			return nil, fmt.Errorf("label %s: invalid UTF-8 %q", name, v)
		}
		s.values[i] = v
		backing[i].Name, backing[i].Value = &f.labels[i], &s.values[i]
		s.pairs[i] = &backing[i]
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(name)
		b.WriteString(`="`)
		_, _ = valueEscaper.WriteString(&b, v) // a strings.Builder does not fail
		b.WriteByte('"')
	}
	b.WriteByte('}')
	s.text = b.String()
	s.order = orderKey(s.values)
	return s, nil
}

// orderKey encodes label values into one string whose byte order is the
// order the registry sorts metrics of a family in (value by value, labels
// in name order): each value with its 0 bytes doubled as 0 1, then 0 0.
// The terminator sorts below anything that can follow inside a value, so a
// value that is a prefix of another sorts first, as it does alone.
func orderKey(values []string) string {
	var b strings.Builder
	for _, v := range values {
		b.WriteString(strings.ReplaceAll(v, "\x00", "\x00\x01"))
		b.WriteString("\x00\x00")
	}
	return b.String()
}

// compareSeries orders series as the registry sorts metrics of a family.
func compareSeries(a, b *series) int { return strings.Compare(a.order, b.order) }

// seriesCache keeps the series of the last collection. A collection
// reuses what it finds and the sweep drops what it did not use, so the
// cache holds only processes that are still running. It also remembers
// the exposition order of the last collection: while no process appears,
// a collection's order follows from it without sorting.
type seriesCache struct {
	byKey map[seriesKey]*cacheEntry
	gen   uint64
	// used lists the entries this collection used, in the order used.
	used []*cacheEntry
	// ranked is how many entries the last collection ranked.
	ranked int
	// Scratch space of order.
	slots, perm []int32
}

type cacheEntry struct {
	s   *series
	gen uint64 // the last collection that used it
	// rank is the position of its sample in the last collection's
	// exposition order, -1 before its first.
	rank int32
}

func (c *seriesCache) begin() {
	c.gen++
	c.used = c.used[:0]
}

// use returns the series of k, building it on first use, and appends it to
// used. dup reports that this collection already used it: two entries
// that would render as the same series (a backend listing one GPU twice),
// which must be exported once; used is then left as it was.
func (c *seriesCache) use(f *processFamilies, k seriesKey) (s *series, dup bool, err error) {
	e, ok := c.byKey[k]
	if !ok {
		s, err := f.newSeries(k)
		if err != nil {
			return nil, false, err
		}
		e = &cacheEntry{s: s, rank: -1}
		c.byKey[k] = e
	} else if e.gen == c.gen {
		return e.s, true, nil
	}
	e.gen = c.gen
	c.used = append(c.used, e)
	return e.s, false, nil
}

// sweep forgets the series this collection did not use.
func (c *seriesCache) sweep() {
	for k, e := range c.byKey {
		if e.gen != c.gen {
			delete(c.byKey, k)
		}
	}
}

// order returns samples, which are the samples of used in that order, as
// a new slice in exposition order (compareSeries), and ranks the used
// entries for the next collection.
func (c *seriesCache) order(samples []sample) []sample {
	perm := c.perm[:0]
	known := true
	for _, e := range c.used {
		if e.rank < 0 {
			known = false
			break
		}
	}
	if known {
		// Every series was in the last collection, whose order was sorted:
		// keep it, less the series that went.
		if cap(c.slots) < c.ranked {
			c.slots = make([]int32, c.ranked)
		}
		slots := c.slots[:c.ranked]
		for i := range slots {
			slots[i] = -1
		}
		for i, e := range c.used {
			slots[e.rank] = int32(i)
		}
		for _, i := range slots {
			if i >= 0 {
				perm = append(perm, i)
			}
		}
	} else {
		for i := range samples {
			perm = append(perm, int32(i))
		}
		slices.SortFunc(perm, func(a, b int32) int { return compareSeries(samples[a].s, samples[b].s) })
	}
	out := make([]sample, len(samples))
	for pos, i := range perm {
		out[pos] = samples[i]
		c.used[i].rank = int32(pos)
	}
	c.ranked, c.perm = len(out), perm
	return out
}

// collect sends the process series of snap as metrics.
func (f *processFamilies) collect(ch chan<- prometheus.Metric, snap *snapshot) {
	for i := range snap.samples {
		p := &snap.samples[i]
		for m := range numProcessMetrics {
			if p.has(m) {
				ch <- &processMetric{desc: f.descs[m], value: p.v[m], labels: p.s.pairs}
			}
		}
	}
}

// processMetric is one per-process gauge. Unlike a const metric it shares
// its label pairs with the other series of the same process (and with
// later snapshots); like one, it is immutable, and the registry only reads
// what Write hands out.
type processMetric struct {
	desc   *prometheus.Desc
	value  float64
	labels []*dto.LabelPair
}

func (m *processMetric) Desc() *prometheus.Desc { return m.desc }

func (m *processMetric) Write(out *dto.Metric) error {
	v := m.value
	out.Label = m.labels
	out.Gauge = &dto.Gauge{Value: &v}
	return nil
}
