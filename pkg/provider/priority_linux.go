package provider

import "golang.org/x/sys/unix"

// lowerThreadPriority sets the nice value of the calling OS thread: on Linux
// a priority set for a thread ID holds for that thread alone. Raising a
// thread's nice value needs no privilege.
func lowerThreadPriority(nice int) error {
	return unix.Setpriority(unix.PRIO_PROCESS, unix.Gettid(), nice)
}
