package placement

import "strconv"

// TierWidth separates the deletion-cost tiers of consecutive units.
//
// A pod in unit i of a policy with n units costs (n-1-i)*TierWidth; a pod
// outside every unit costs -TierWidth. So every pod of a later unit costs
// less than every pod of an earlier unit, pods outside the units cost least,
// and the last unit sits at 0, the cost of a pod without the annotation. The
// width leaves room for other tools to order pods within a tier (any offset
// in (-TierWidth/2, TierWidth/2) keeps the tiers apart). With at most 32 units
// the largest cost, 31e6, is far inside the annotation's int32 range.
const TierWidth = 1_000_000

// DeletionCost is the pod-deletion-cost of a pod in unit (Outside for none)
// of a policy with n units.
func DeletionCost(n, unit int) int32 {
	if unit < 0 || unit >= n {
		return -TierWidth
	}
	return int32(n-1-unit) * TierWidth
}

// FormatCost renders a cost as the annotation value.
func FormatCost(c int32) string {
	return strconv.FormatInt(int64(c), 10)
}
