package provider

import (
	"fmt"
	"math"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
)

// coverage counts, for one request, the selected pods with a fresh value
// against those that should have one by now.
//
// A pod is expected to report once it has run for longer than the maximum
// staleness: by then the exporter has seen its processes, Prometheus has
// scraped them and a refresh has picked them up. Younger, pending and
// terminating pods count only when they do report, so a scale-out's new
// pods never block the metric that asked for them.
type coverage struct {
	selected, withData, expected int
}

func (c *coverage) add(pod SelectedPod, hasData bool, now time.Time, warmUp time.Duration) {
	c.selected++
	switch {
	case hasData:
		c.withData++
		c.expected++
	case !pod.RunningSince.IsZero() && now.Sub(pod.RunningSince) > warmUp:
		c.expected++
	}
}

// refusal is the error for a request whose pods do not carry enough data,
// or nil. No data at all is 404 as for any absent metric; too small a share
// is 503, a passing condition (typically one node's exporter or scrape is
// down). The HPA treats both as a failed read and keeps its scale.
func (p *Provider) refusal(c coverage, namespace string, selector labels.Selector, metric int) error {
	if c.withData == 0 {
		return notFound(fmt.Sprintf("none of the %d pods selected by %q in namespace %s has a value of %s younger than %s",
			c.selected, selector.String(), namespace, p.specs[metric].name, p.maxStaleness))
	}
	need := int(math.Ceil(p.minShare * float64(c.expected)))
	if c.withData >= need {
		return nil
	}
	p.metrics.partialRefusals.Inc()
	return apierrors.NewServiceUnavailable(fmt.Sprintf(
		"only %d of the %d pods selected by %q in namespace %s that should report (running for over %s) have a value of %s; "+
			"at least %d (--min-pod-data-share %g) are needed so that the pods without data cannot skew the result",
		c.withData, c.expected, selector.String(), namespace, p.maxStaleness, p.specs[metric].name, need, p.minShare))
}
