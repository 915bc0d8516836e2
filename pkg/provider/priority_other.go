//go:build !linux

package provider

// lowerThreadPriority does nothing where a priority cannot be set for one
// thread: lowering the whole process's would slow its requests too.
func lowerThreadPriority(int) error { return nil }
