package metricnames

// ResourcePolicy metrics (spillway-controller: placement webhook,
// re-placement, deletion cost, status).
const (
	// PlacementPods counts pods placed by the webhook, by LabelNamespace,
	// LabelPolicy and LabelUnit ("none" for outside every unit).
	PlacementPods = "spillway_placement_pods_total"
	// PlacementDenied counts pod creations refused because every unit of a
	// required-strategy policy was at its max, by LabelNamespace and
	// LabelPolicy.
	PlacementDenied = "spillway_placement_denied_total"
	// PlacementWebhookDuration is a histogram of the time to answer one
	// admission request.
	PlacementWebhookDuration = "spillway_placement_webhook_duration_seconds"
	// PlacementWebhookErrors counts requests that admitted the pod unplaced
	// because of an error, by LabelReason (decode, read, encode, key,
	// panic).
	PlacementWebhookErrors = "spillway_placement_webhook_errors_total"
	// PlacementReplacements counts pods deleted for re-placement, by
	// LabelNamespace, LabelPolicy and LabelUnit (the unit they left).
	PlacementReplacements = "spillway_placement_replacements_total"
	// PlacementUnplacedPods is, per LabelNamespace and LabelPolicy, the
	// selected live pods created without passing the webhook.
	PlacementUnplacedPods = "spillway_placement_unplaced_pods"
	// DeletionCostPatches counts pod-deletion-cost patches by
	// LabelNamespace, LabelPolicy and LabelResult (ok, error).
	DeletionCostPatches = "spillway_deletion_cost_patches_total"
	// PlacementAdoptedPods counts selected pods admitted without placement
	// (the webhook was not called) that were adopted once bound: given the
	// placement labels and deletion cost of the unit their node is in, by
	// LabelNamespace, LabelPolicy and LabelUnit.
	PlacementAdoptedPods = "spillway_placement_adopted_pods_total"

	LabelPolicy = "policy"
	LabelUnit   = "unit"
	LabelReason = "reason"
)
