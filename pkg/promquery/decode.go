package promquery

import (
	"bytes"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"math"
	"slices"
	"strconv"
	"time"

	"github.com/prometheus/common/model"

	"github.com/spillway-dev/spillway/pkg/metricnames"
)

// Sample is one validated observation: a process's, for the exporter's
// series, or a pod's own gauge.
type Sample struct {
	Metric    string
	Namespace string
	Pod       string
	// GPU is the device UUID: the key processes are summed under. Empty
	// for series that are not per GPU.
	GPU string
	// PID and Container only tell processes apart; either may be empty.
	PID       string
	Container string
	// Hostname is the node the exporter that published the series runs
	// on; the adapter checks it against the pod's node, so it is kept
	// even when empty.
	Hostname string
	// Instance is the address Prometheus scraped (host:port); for a pod's
	// own series the adapter checks its host against the pod's IP.
	Instance string
	Value    float64
	// Timestamp is the time Prometheus attached to the sample (for an
	// instant query: its evaluation time).
	Timestamp time.Time
}

// Skipped counts series that were read but not used, by reason.
type Skipped struct {
	// MissingLabels: no namespace or pod, or no GPU UUID on a per-GPU
	// series (e.g. a host process).
	MissingLabels int
	// InvalidValue: NaN, ±Inf, negative, a histogram, or no timestamp.
	InvalidValue int
	// UnexpectedMetric: a metric name the query did not ask for.
	UnexpectedMetric int
	// Duplicate: the same process on the same host seen twice (e.g.
	// scraped by two jobs); the newer sample is kept.
	Duplicate int
	// Oversized: labels longer in all than the decoder keeps (64 KiB, far
	// beyond any real series).
	Oversized int
}

// Total is the number of skipped series.
func (s Skipped) Total() int {
	return s.MissingLabels + s.InvalidValue + s.UnexpectedMetric + s.Duplicate + s.Oversized
}

// Add returns the counts of s and o together.
func (s Skipped) Add(o Skipped) Skipped {
	return Skipped{
		MissingLabels:    s.MissingLabels + o.MissingLabels,
		InvalidValue:     s.InvalidValue + o.InvalidValue,
		UnexpectedMetric: s.UnexpectedMetric + o.UnexpectedMetric,
		Duplicate:        s.Duplicate + o.Duplicate,
		Oversized:        s.Oversized + o.Oversized,
	}
}

// Result is what one query yielded.
type Result struct {
	Samples []Sample
	Skipped Skipped
}

// processKey tells series apart. Hostname is part of it so that a series
// claiming another host never replaces the real one here, before the
// adapter has checked provenance: it stays a separate series, and is
// rejected. For series that are not per GPU, rest fingerprints every label
// but job (instance included, to the same end), so that one target scraped
// by two jobs counts once, while a server's series per model (a model_name
// label, say) stay apart. The decoder's index holds a hash of it, not the
// key itself (see decoder).
type processKey struct {
	metric, namespace, pod, gpu, pid, container, hostname string
	rest                                                  uint64
}

// Decode validates an instant-query result for q. Anything but a vector is
// an error; bad series are skipped and counted, never turned into values.
func Decode(v model.Value, q Query) (Result, error) {
	vec, ok := v.(model.Vector)
	if !ok {
		typ := "nil"
		if v != nil {
			typ = v.Type().String()
		}
		return Result{}, notVectorError(typ)
	}
	d := newDecoder(q, len(vec))
	var s rawSeries
	for _, ms := range vec {
		if ms == nil {
			d.res.Skipped.InvalidValue++
			continue
		}
		s.reset()
		for name, value := range ms.Metric {
			s.addLabel(string(name), string(value))
		}
		s.ts = int64(ms.Timestamp)
		s.value = float64(ms.Value)
		s.histogram = ms.Histogram != nil
		d.add(&s)
	}
	return d.res, nil
}

func notVectorError(typ string) error {
	return fmt.Errorf("prometheus returned a %s, want a vector", typ)
}

// Bounds on what one answer may make the decoder hold. Label names and
// values come from scrape targets, which tenants run: a series whose
// labels exceed maxSeriesBytes is read to its end but not kept, and
// counted as Skipped.Oversized, so one tenant's oversized labels cost
// that tenant's series and nothing else. The other strings an answer
// carries come from the server, not from targets: status, errorType and
// sample values are short, and error and warning texts are cut at
// maxMessageBytes.
const (
	maxSeriesBytes  = 64 << 10
	maxMessageBytes = 64 << 10
	// maxKeptWarnings warnings are kept; the others are only counted.
	maxKeptWarnings = 16
	// maxShortBytes bounds status, errorType, resultType and a sample's
	// value text.
	maxShortBytes = 64
	// labelCost is what each label counts against maxSeriesBytes on top of
	// its name and value, so that many empty labels are bounded too.
	labelCost = 32
)

// rawSeries is one series as read, before validation: its labels are
// spans of buf, which is reused from series to series, so the labels a
// sample does not keep are never turned into strings.
type rawSeries struct {
	buf    []byte
	labels []labelSpan
	// maxName is the index of the label with the greatest name so far:
	// Prometheus sends labels in name order, so a name after it is new.
	maxName   int
	value     float64
	ts        int64 // milliseconds; 0 when the series had no value
	histogram bool
	// oversized: the labels exceeded maxSeriesBytes and were not all kept.
	oversized bool
	cost      int
}

type labelSpan struct{ name, value span }

type span struct{ start, end int }

func (s *rawSeries) reset() {
	*s = rawSeries{buf: s.buf[:0], labels: s.labels[:0]}
}

func (s *rawSeries) addLabel(name, value string) {
	var l labelSpan
	l.name.start = len(s.buf)
	s.buf = append(s.buf, name...)
	l.name.end = len(s.buf)
	l.value.start = len(s.buf)
	s.buf = append(s.buf, value...)
	l.value.end = len(s.buf)
	s.labels = append(s.labels, l)
}

func (s *rawSeries) bytes(sp span) []byte { return s.buf[sp.start:sp.end] }

// label returns the value of a label, empty when it is missing.
func (s *rawSeries) label(name string) []byte {
	for _, l := range s.labels {
		if string(s.bytes(l.name)) == name {
			return s.bytes(l.value)
		}
	}
	return nil
}

// firstLabel returns the first non-empty value among names. For the
// exporter's series the ACK spellings come first because relabeling never
// renames them.
func (s *rawSeries) firstLabel(names ...string) []byte {
	for _, n := range names {
		if v := s.label(n); len(v) > 0 {
			return v
		}
	}
	return nil
}

// fingerprintWithoutJob hashes every label but job (FNV-1a over the
// labels in name order, each name and value followed by a separator no
// label holds), so the same label set hashes alike in any order.
func (s *rawSeries) fingerprintWithoutJob() uint64 {
	slices.SortFunc(s.labels, func(a, b labelSpan) int { return bytes.Compare(s.bytes(a.name), s.bytes(b.name)) })
	const (
		offset = 14695981039346656037
		prime  = 1099511628211
		sep    = 0xff
	)
	h := uint64(offset)
	for _, l := range s.labels {
		if string(s.bytes(l.name)) == metricnames.LabelJob {
			continue
		}
		for _, sp := range []span{l.name, l.value} {
			for _, c := range s.bytes(sp) {
				h = (h ^ uint64(c)) * prime
			}
			h = (h ^ sep) * prime
		}
	}
	return h
}

// decoder validates series one at a time into a Result.
type decoder struct {
	res      Result
	readings map[string]metricReading
	// index finds a process's sample by a hash of its key: a map keyed by
	// the key's seven strings costs a hash of all of them on every insert
	// and again on every growth. A hit is compared field by field; keys
	// whose hash another key holds go to collided (random seed: nobody can
	// aim for one).
	hash     func(processKey) uint64
	index    map[uint64]int32
	collided map[processKey]int
	rests    []uint64 // processKey.rest of each sample
	// strs interns the label values samples keep: a fleet's namespaces,
	// nodes and containers repeat on every series, pod names on each of a
	// pod's. last holds the last string of each field, which the next
	// series mostly repeats (a target's series arrive together).
	strs map[string]string
	last [internFields]string
}

// The fields intern keeps a last string for.
const (
	fieldNamespace = iota
	fieldPod
	fieldGPU
	fieldContainer
	fieldHostname
	fieldInstance
	internFields
)

type metricReading struct {
	name string
	Reading
}

// newDecoder decodes for q, expecting about n series.
func newDecoder(q Query, n int) *decoder {
	d := &decoder{
		res:      Result{Samples: make([]Sample, 0, n)},
		readings: make(map[string]metricReading, len(q.Metrics)),
		index:    make(map[uint64]int32, n),
		rests:    make([]uint64, 0, n),
		strs:     make(map[string]string),
	}
	seed := maphash.MakeSeed()
	d.hash = func(k processKey) uint64 { return maphash.Comparable(seed, k) }
	for _, m := range q.Metrics {
		d.readings[m] = metricReading{name: m, Reading: q.reading(m)}
	}
	return d
}

// intern returns b as a string, shared with equal strings of the answer.
func (d *decoder) intern(field int, b []byte) string {
	if string(b) == d.last[field] {
		return d.last[field]
	}
	s, ok := d.strs[string(b)]
	if !ok {
		s = string(b)
		d.strs[s] = s
	}
	d.last[field] = s
	return s
}

// once returns b as a string, shared with the last string of its field
// if equal: for values that repeat only on neighbouring series (a GPU's
// processes), not worth a table.
func (d *decoder) once(field int, b []byte) string {
	if string(b) != d.last[field] {
		d.last[field] = string(b)
	}
	return d.last[field]
}

// add validates one series and keeps it or counts why not.
func (d *decoder) add(s *rawSeries) {
	if s.oversized {
		d.res.Skipped.Oversized++
		return
	}
	r, ok := d.readings[string(s.label(model.MetricNameLabel))]
	if !ok {
		d.res.Skipped.UnexpectedMetric++
		return
	}
	ns := s.firstLabel(r.NamespaceLabels...)
	pod := s.firstLabel(r.PodLabels...)
	gpu := s.label(metricnames.LabelUUID)
	if len(ns) == 0 || len(pod) == 0 || (r.PerGPU && len(gpu) == 0) {
		d.res.Skipped.MissingLabels++
		return
	}
	if !r.PerGPU {
		gpu = nil
	}
	if s.histogram || math.IsNaN(s.value) || math.IsInf(s.value, 0) || s.value < 0 || s.ts == 0 {
		d.res.Skipped.InvalidValue++
		return
	}
	sample := Sample{
		Metric:    r.name,
		Namespace: d.intern(fieldNamespace, ns),
		Pod:       d.intern(fieldPod, pod),
		GPU:       d.once(fieldGPU, gpu),
		// PIDs hardly repeat: not worth a lookup.
		PID:       string(s.label(metricnames.LabelPID)),
		Container: d.intern(fieldContainer, s.firstLabel(metricnames.LabelACKContainer, metricnames.LabelContainer)),
		Hostname:  d.intern(fieldHostname, s.label(metricnames.LabelHostname)),
		Instance:  d.intern(fieldInstance, s.label(metricnames.LabelInstance)),
		Value:     s.value,
		Timestamp: model.Time(s.ts).Time(),
	}
	key := processKey{metric: sample.Metric, namespace: sample.Namespace, pod: sample.Pod, gpu: sample.GPU, pid: sample.PID,
		container: sample.Container, hostname: sample.Hostname}
	if !r.PerGPU {
		key.rest = s.fingerprintWithoutJob()
	}
	h := d.hash(key)
	i, seen := d.index[h]
	switch {
	case !seen:
		d.index[h] = int32(len(d.res.Samples))
	case d.keyOf(int(i)) == key:
		d.duplicate(int(i), sample)
		return
	default:
		if j, ok := d.collided[key]; ok {
			d.duplicate(j, sample)
			return
		}
		if d.collided == nil {
			d.collided = make(map[processKey]int)
		}
		d.collided[key] = len(d.res.Samples)
	}
	d.res.Samples = append(d.res.Samples, sample)
	d.rests = append(d.rests, key.rest)
}

func (d *decoder) keyOf(i int) processKey {
	s := &d.res.Samples[i]
	return processKey{metric: s.Metric, namespace: s.Namespace, pod: s.Pod, gpu: s.GPU, pid: s.PID,
		container: s.Container, hostname: s.Hostname, rest: d.rests[i]}
}

// duplicate counts a second sample of the process of sample i and keeps
// the newer.
func (d *decoder) duplicate(i int, sample Sample) {
	d.res.Skipped.Duplicate++
	if sample.Timestamp.After(d.res.Samples[i].Timestamp) {
		d.res.Samples[i] = sample
	}
}

// answer is what an /api/v1/query response says besides its series.
type answer struct {
	status, errorType, errorMsg string
	// warnings are the first maxKeptWarnings warnings, each cut at
	// maxMessageBytes; moreWarnings counts the others.
	warnings     []string
	moreWarnings int
}

// decodeAnswer reads an /api/v1/query response body of the known shape
// {"status":..,"data":{"resultType":"vector","result":[{"metric":{..},
// "value":[ts,"v"]},..]},"warnings":[..]} and validates its series for q
// as they stream by (Decode's rules): neither the body nor a series' full
// label set is ever held, only the labels a sample keeps. Fields it does
// not know are skipped; anything else out of shape, a result that is not
// a vector or comes before its resultType, a repeated field or label, is
// an error. A null result is an empty vector, as the Prometheus client
// library reads it. The caller judges status and warnings, which may come
// after the data. sizeHint is about how many series to expect.
func decodeAnswer(r io.Reader, q Query, sizeHint int) (Result, answer, error) {
	sc := newScanner(r)
	d := newDecoder(q, sizeHint)
	var (
		a                answer
		s                rawSeries
		seenData, seenRs bool
		resultType       string
	)
	series := func() error {
		if isNull, err := sc.null(); err != nil || isNull {
			if isNull {
				d.res.Skipped.InvalidValue++
			}
			return err
		}
		s.reset()
		var seenMetric, seenValue, seenHist bool
		err := sc.object(func(key []byte) error {
			var err error
			switch string(key) {
			case "metric":
				if seenMetric {
					return sc.errorf("a series has two metric fields")
				}
				seenMetric = true
				if isNull, err := sc.null(); err != nil || isNull {
					return err
				}
				return sc.object(func(name []byte) error { return readLabel(sc, &s, name) })
			case "value":
				if seenValue {
					return sc.errorf("a series has two value fields")
				}
				seenValue = true
				if isNull, err := sc.null(); err != nil || isNull {
					return err
				}
				s.ts, s.value, err = readValue(sc)
				return err
			case "histogram":
				if seenHist {
					return sc.errorf("a series has two histogram fields")
				}
				seenHist = true
				if isNull, err := sc.null(); err != nil || isNull {
					return err
				}
				s.histogram = true
				return sc.skip(1)
			default:
				return sc.skip(1)
			}
		})
		if err != nil {
			return err
		}
		if s.histogram {
			// A histogram's timestamp is its own; the series is
			// skipped either way.
			s.ts = 0
		}
		d.add(&s)
		return nil
	}
	data := func(key []byte) error {
		var err error
		switch string(key) {
		case "resultType":
			if resultType != "" {
				return sc.errorf("two resultType fields")
			}
			if resultType, err = readString(sc, "resultType", maxShortBytes); err != nil {
				return err
			}
			if resultType == "" {
				return sc.errorf("empty resultType")
			}
			return nil
		case "result":
			if seenRs {
				return sc.errorf("two result fields")
			}
			seenRs = true
			switch resultType {
			case "":
				return sc.errorf("the result comes before its resultType")
			case model.ValVector.String():
			default:
				return notVectorError(resultType)
			}
			if isNull, err := sc.null(); err != nil || isNull {
				return err
			}
			return sc.array(series)
		default:
			return sc.skip(1)
		}
	}
	err := sc.object(func(key []byte) error {
		var err error
		switch string(key) {
		case "status":
			a.status, err = readString(sc, "status", maxShortBytes)
		case "errorType":
			a.errorType, err = readString(sc, "errorType", maxShortBytes)
		case "error":
			a.errorMsg, err = readMessage(sc)
		case "warnings":
			if isNull, err := sc.null(); err != nil || isNull {
				return err
			}
			return sc.array(func() error {
				if len(a.warnings) == maxKeptWarnings {
					a.moreWarnings++
					return sc.skip(1)
				}
				w, err := readMessage(sc)
				a.warnings = append(a.warnings, w)
				return err
			})
		case "data":
			if seenData {
				return sc.errorf("two data fields")
			}
			seenData = true
			if isNull, err := sc.null(); err != nil || isNull {
				return err
			}
			return sc.object(data)
		default:
			err = sc.skip(1)
		}
		return err
	})
	if err == nil {
		err = sc.end()
	}
	if err != nil {
		return Result{}, a, err
	}
	if a.status == "success" && !seenRs {
		return Result{}, a, errors.New("the answer has no result")
	}
	return d.res, a, nil
}

// readString reads a string of at most limit bytes; a longer one is an
// error naming what.
func readString(sc *scanner, what string, limit int) (string, error) {
	b, fit, err := sc.str(sc.out[:0], limit)
	sc.out = b
	if err == nil && !fit {
		err = sc.errorf("%s longer than %d bytes", what, limit)
	}
	return string(b), err
}

// readMessage reads an error or warning text, cut at maxMessageBytes.
func readMessage(sc *scanner) (string, error) {
	b, fit, err := sc.str(sc.out[:0], maxMessageBytes)
	sc.out = b
	if err == nil && !fit {
		return fmt.Sprintf("(a message longer than %d bytes)", maxMessageBytes), nil
	}
	return string(b), err
}

// readLabel reads the value of label name into s, unless the series'
// labels have outgrown maxSeriesBytes: then it reads on without keeping
// and marks the series oversized. A label repeated is an error (no
// server sends one).
func readLabel(sc *scanner, s *rawSeries, name []byte) error {
	s.cost += len(name) + labelCost
	if sc.longKey || s.cost > maxSeriesBytes {
		s.oversized = true
	}
	if s.oversized {
		if err := sc.expect('"'); err != nil {
			return err
		}
		return sc.finishStr(strState{})
	}
	var l labelSpan
	l.name.start = len(s.buf)
	s.buf = append(s.buf, name...)
	l.name.end = len(s.buf)
	// Prometheus sends labels in name order, so a name after the
	// greatest so far is new; only others are compared with every label.
	if n := len(s.labels); n > 0 && bytes.Compare(name, s.bytes(s.labels[s.maxName].name)) <= 0 {
		for _, o := range s.labels {
			if bytes.Equal(s.bytes(o.name), name) {
				return sc.errorf("a series has label %q twice", name)
			}
		}
	} else {
		s.maxName = n
	}
	l.value.start = len(s.buf)
	var (
		fit bool
		err error
	)
	if s.buf, fit, err = sc.str(s.buf, maxSeriesBytes-s.cost); err != nil {
		return err
	}
	if !fit {
		s.oversized = true
		return nil
	}
	l.value.end = len(s.buf)
	s.cost += l.value.end - l.value.start
	s.labels = append(s.labels, l)
	return nil
}

// readValue reads a sample's [seconds, "value"] pair: seconds a number
// with up to millisecond precision (more digits are cut, as the
// Prometheus client library does), the value a float in a string.
func readValue(sc *scanner) (ms int64, v float64, err error) {
	if err := sc.expect('['); err != nil {
		return 0, 0, err
	}
	raw, err := sc.number()
	if err != nil {
		return 0, 0, err
	}
	if ms, err = parseTimestamp(raw); err != nil {
		return 0, 0, sc.errorf("%v", err)
	}
	if err := sc.expect(','); err != nil {
		return 0, 0, err
	}
	b, err := readString(sc, "sample value", maxShortBytes)
	if err != nil {
		return 0, 0, err
	}
	if v, err = strconv.ParseFloat(b, 64); err != nil {
		return 0, 0, sc.errorf("sample value: %v", err)
	}
	return ms, v, sc.expect(']')
}

// maxTimestampSeconds bounds a timestamp's seconds, so that milliseconds
// fit an int64 with room to spare (about 285,000 years).
const maxTimestampSeconds = 9e12

// parseTimestamp reads a JSON number of seconds (valid by JSON's grammar)
// as milliseconds.
func parseTimestamp(raw []byte) (int64, error) {
	neg := len(raw) > 0 && raw[0] == '-'
	digits := raw
	if neg {
		digits = raw[1:]
	}
	var sec, milli int64
	i := 0
	for ; i < len(digits) && digits[i] >= '0' && digits[i] <= '9'; i++ {
		sec = sec*10 + int64(digits[i]-'0')
		if sec > maxTimestampSeconds {
			return 0, fmt.Errorf("timestamp %s out of range", raw)
		}
	}
	if i < len(digits) && digits[i] == '.' {
		i++
		// Milliseconds; further digits are cut.
		for k := 0; k < 3; k++ {
			milli *= 10
			if i < len(digits) && digits[i] >= '0' && digits[i] <= '9' {
				milli += int64(digits[i] - '0')
				i++
			}
		}
		for i < len(digits) && digits[i] >= '0' && digits[i] <= '9' {
			i++
		}
	}
	if i != len(digits) || i == 0 {
		return 0, fmt.Errorf("timestamp %s has an exponent", raw)
	}
	ms := sec*1000 + milli
	if neg {
		ms = -ms
	}
	return ms, nil
}
