package provider

import (
	"k8s.io/apimachinery/pkg/types"

	"github.com/spillway-dev/spillway/pkg/metricnames"
	"github.com/spillway-dev/spillway/pkg/promquery"
)

// rejection counts the series of one query dropped by checkProvenance, by
// reason (metricnames.Rejected*), with one example for the log.
type rejection struct {
	counts  map[string]int
	example promquery.Sample
	reason  string
}

func (r *rejection) add(reason string, s promquery.Sample) {
	if r.counts == nil {
		r.counts = make(map[string]int, len(metricnames.RejectedReasons))
		r.example, r.reason = s, reason
	}
	r.counts[reason]++
}

func (r *rejection) total() int {
	n := 0
	for _, c := range r.counts {
		n += c
	}
	return n
}

// checkProvenance keeps the samples whose Hostname is the node their pod is
// bound to, filtering samples in place.
//
// The series selector keeps other scrape jobs out, but a scrape job with
// honor_labels: true lets a target write any job and any pod labels; and
// one node's exporter (or whoever took over its pod) could speak for pods
// elsewhere. The pod's binding in the API server is what no tenant and no
// other node can change, so a series only counts where it agrees with it:
// the exporter labels each series with its own node (the downward API's
// spec.nodeName), which a pod on another node cannot truthfully claim.
func (p *Provider) checkProvenance(samples []promquery.Sample) ([]promquery.Sample, rejection) {
	type lookup struct {
		node  string
		known bool
	}
	nodes := make(map[types.NamespacedName]lookup)
	var rej rejection
	kept := samples[:0]
	for _, s := range samples {
		if s.Hostname == "" {
			rej.add(metricnames.RejectedMissingHostname, s)
			continue
		}
		key := types.NamespacedName{Namespace: s.Namespace, Name: s.Pod}
		l, ok := nodes[key]
		if !ok {
			l.node, l.known = p.pods.PodNode(s.Namespace, s.Pod)
			nodes[key] = l
		}
		switch {
		case !l.known:
			rej.add(metricnames.RejectedUnknownPod, s)
		case l.node == "":
			rej.add(metricnames.RejectedUnscheduledPod, s)
		case l.node != s.Hostname:
			rej.add(metricnames.RejectedHostnameMismatch, s)
		default:
			kept = append(kept, s)
		}
	}
	return kept, rej
}
