package provider

import (
	"net"

	"k8s.io/apimachinery/pkg/types"

	"github.com/spillway-dev/spillway/pkg/metricnames"
	"github.com/spillway-dev/spillway/pkg/metrictable"
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

// checkProvenance keeps the samples that come from where their row says,
// filtering samples in place.
//
// Exporter series: the Hostname must be the node the pod is bound to. The
// series selector keeps other scrape jobs out, but a scrape job with
// honor_labels: true lets a target write any job and any pod labels; and
// one node's exporter (or whoever took over its pod) could speak for pods
// elsewhere. The pod's binding in the API server is what no tenant and no
// other node can change, so a series only counts where it agrees with it:
// the exporter labels each series with its own node (the downward API's
// spec.nodeName), which a pod on another node cannot truthfully claim.
//
// A pod's own series: the host of the instance label must be the pod's IP.
// Prometheus sets instance to the address it scraped, and a target in
// another pod is not scraped at this pod's IP, so it cannot speak for this
// pod. This trusts instance: a job with honor_labels: true would let a
// target write it, so the pods' job must keep the default (docs/adapter.md).
func (p *Provider) checkProvenance(samples []tagged) ([]tagged, rejection) {
	type lookup struct {
		node, ip string
		known    bool
	}
	// Sized by the pods of the snapshot being replaced: about as many as
	// this refresh's samples name.
	hint := 0
	if prev := p.snap.Load(); prev != nil {
		hint = len(prev.pods)
	}
	pods := make(map[types.NamespacedName]lookup, hint)
	var rej rejection
	kept := samples[:0]
	for _, s := range samples {
		fromPod := p.specs[s.spec].row.Origin == metrictable.Pod
		switch {
		case !fromPod && s.Hostname == "":
			rej.add(metricnames.RejectedMissingHostname, *s.Sample)
			continue
		case fromPod && s.Instance == "":
			rej.add(metricnames.RejectedMissingInstance, *s.Sample)
			continue
		}
		key := types.NamespacedName{Namespace: s.Namespace, Name: s.Pod}
		l, ok := pods[key]
		if !ok {
			l.node, l.ip, l.known = p.pods.PodAddress(s.Namespace, s.Pod)
			pods[key] = l
		}
		switch {
		case !l.known:
			rej.add(metricnames.RejectedUnknownPod, *s.Sample)
		case l.node == "":
			rej.add(metricnames.RejectedUnscheduledPod, *s.Sample)
		case !fromPod && l.node != s.Hostname:
			rej.add(metricnames.RejectedHostnameMismatch, *s.Sample)
		case fromPod && l.ip == "":
			rej.add(metricnames.RejectedNoPodIP, *s.Sample)
		case fromPod && instanceHost(s.Instance) != l.ip:
			rej.add(metricnames.RejectedInstanceMismatch, *s.Sample)
		default:
			kept = append(kept, s)
		}
	}
	return kept, rej
}

// instanceHost is the host part of an instance label (host:port, [v6]:port,
// or a bare host).
func instanceHost(instance string) string {
	if host, _, err := net.SplitHostPort(instance); err == nil {
		return host
	}
	return instance
}
