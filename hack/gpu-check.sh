#!/usr/bin/env bash
# Real-GPU check of spillway-gpu-exporter's NVML backend.
#
# Where: an x86-64 Linux machine with an NVIDIA GPU, its driver
# (libnvidia-ml.so.1, nvidia-smi), python3 and a CUDA build of torch. No Go
# toolchain is needed: build the exporter beforehand, on a machine whose glibc
# is not newer than the target's, and carry the binary:
#
#   CGO_ENABLED=1 GOOS=linux GOARCH=amd64 \
#     go build -o bin/spillway-gpu-exporter ./cmd/spillway-gpu-exporter
#
# Run it on the host itself (not in a container with its own PID namespace:
# NVML reports host PIDs):
#
#   hack/gpu-check.sh [path/to/spillway-gpu-exporter]
#
# What it does: starts a CUDA matmul loop (python3 + torch) pinned to one GPU
# (GPU_INDEX, default 0), runs the exporter with --backend=nvml --standalone
# --export-host-processes AS THE CHART RUNS IT: as UID RUN_AS_UID (default
# 65532, the chart's exporter.runAsUser) and GID RUN_AS_GID (default 65532)
# with only the supplementary groups in EXTRA_GIDS (comma-separated, default
# none: the chart's exporter.supplementalGroups), no capabilities and
# no_new_privs (setpriv, else python3). Run the check as root so it can
# switch; as another user it runs the exporter as that user and says so.
# Then it polls /metrics until the loop's PID is reported
#   - with DCGM_CUSTOM_PROCESS_SM_UTIL > 0 and DCGM_CUSTOM_PROCESS_MEM_USED > 0,
#   - on that GPU's UUID and index,
#   - with empty namespace/pod/container labels (it is a host process),
# and checks that `spillway-gpu-exporter podmap --pid`, run as that UID too,
# maps it to no pod (reading another user's /proc/<pid>/cgroup and stat).
#
# If the non-root exporter fails, the check runs it once more as root: when
# root passes, it prints "NVML NEEDS MORE THAN UID ..." with the device
# nodes' owners and modes, the values to set in the chart, and fails.
#
# Exit status: 0 pass, 1 fail, 2 the machine cannot run the check (a
# prerequisite is missing; nothing was checked). One run takes a few minutes
# at most: LOAD_SECONDS (default 180) bounds the load, CHECK_TIMEOUT (default
# 120) the polling once the load is running.
set -euo pipefail

BIN=${1:-bin/spillway-gpu-exporter}
GPU_INDEX=${GPU_INDEX:-0}
PORT=${PORT:-19400}
RUN_AS_UID=${RUN_AS_UID:-65532}
RUN_AS_GID=${RUN_AS_GID:-65532}
EXTRA_GIDS=${EXTRA_GIDS:-}
LOAD_SECONDS=${LOAD_SECONDS:-180}
CHECK_TIMEOUT=${CHECK_TIMEOUT:-120}

say() { printf '[gpu-check] %s\n' "$*"; }
cannot() { say "CANNOT RUN: $*"; exit 2; }

WORK=$(mktemp -d)
# The exporter's binary, where RUN_AS_UID can execute it (WORK and the
# checkout may be private to the caller).
RUNDIR=$(mktemp -d)
chmod 0755 "$RUNDIR"
LOAD_PID=""
EXPORTER_PID=""
stop_exporter() {
	if [ -n "$EXPORTER_PID" ] && kill -0 "$EXPORTER_PID" 2>/dev/null; then
		kill "$EXPORTER_PID" 2>/dev/null || true
		wait "$EXPORTER_PID" 2>/dev/null || true
	fi
	EXPORTER_PID=""
}
cleanup() {
	stop_exporter
	if [ -n "$LOAD_PID" ] && kill -0 "$LOAD_PID" 2>/dev/null; then
		kill "$LOAD_PID" 2>/dev/null || true
		wait "$LOAD_PID" 2>/dev/null || true
	fi
	rm -rf "$WORK" "$RUNDIR"
}
trap cleanup EXIT

# as_exporter_user CMD...: exec CMD as the chart's exporter identity (see the
# header). The caller keeps its own identity when it is not root.
as_exporter_user() {
	if [ "$(id -u)" -ne 0 ] || [ "$RUN_AS_UID" -eq 0 ]; then
		exec "$@"
	fi
	if command -v setpriv >/dev/null; then
		local groups=(--clear-groups)
		[ -n "$EXTRA_GIDS" ] && groups=(--groups "$EXTRA_GIDS")
		exec setpriv --reuid="$RUN_AS_UID" --regid="$RUN_AS_GID" "${groups[@]}" \
			--inh-caps=-all --bounding-set=-all --no-new-privs -- "$@"
	fi
	exec python3 -c '
import ctypes, os, sys
uid, gid = int(sys.argv[1]), int(sys.argv[2])
os.setgroups([int(g) for g in sys.argv[3].split(",") if g])
os.setgid(gid)
os.setuid(uid)  # drops every capability: no keep-caps, no ambient set
if ctypes.CDLL(None, use_errno=True).prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
    sys.exit("prctl(PR_SET_NO_NEW_PRIVS) failed")
os.execv(sys.argv[4], sys.argv[4:])
' "$RUN_AS_UID" "$RUN_AS_GID" "$EXTRA_GIDS" "$@"
}

# identity PID: the user, groups, capabilities and no_new_privs of a process.
identity() {
	grep -E '^(Uid|Gid|Groups|CapEff|CapPrm|NoNewPrivs):' "/proc/$1/status" | tr -s '\t' ' ' | paste -sd ';' -
}

# --- Prerequisites -----------------------------------------------------------
[ "$(uname -m)" = x86_64 ] || cannot "not an x86-64 machine ($(uname -m))"
[ -x "$BIN" ] || cannot "no exporter binary at $BIN (build it as the header says)"
command -v nvidia-smi >/dev/null || cannot "nvidia-smi not found: no NVIDIA driver?"
command -v python3 >/dev/null || cannot "python3 not found"
python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null ||
	cannot "python3 cannot use CUDA through torch (pip install torch with CUDA)"
say "exporter: $("$BIN" --version)"
cp "$BIN" "$RUNDIR/spillway-gpu-exporter"
chmod 0755 "$RUNDIR/spillway-gpu-exporter"
EXP="$RUNDIR/spillway-gpu-exporter"
if [ "$(id -u)" -ne 0 ]; then
	say "not root: the exporter runs as this user, UID $(id -u), not as RUN_AS_UID=$RUN_AS_UID"
elif [ "$RUN_AS_UID" -eq 0 ]; then
	say "RUN_AS_UID=0: the exporter runs as root"
else
	say "the exporter runs as UID $RUN_AS_UID, GID $RUN_AS_GID, supplementary groups [${EXTRA_GIDS}], no capabilities, no_new_privs"
fi
GPU_UUID=$(nvidia-smi --query-gpu=uuid --format=csv,noheader -i "$GPU_INDEX" | tr -d ' ') ||
	cannot "nvidia-smi knows no GPU $GPU_INDEX"
GPU_NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader -i "$GPU_INDEX")
say "GPU $GPU_INDEX: $GPU_NAME $GPU_UUID, driver $(nvidia-smi --query-gpu=driver_version --format=csv,noheader -i "$GPU_INDEX")"

# --- The CUDA load -----------------------------------------------------------
cat >"$WORK/load.py" <<'EOF'
import os, sys, time
import torch

# CUDA_VISIBLE_DEVICES pins this process to the GPU under test.
a = torch.randn(8192, 8192, device="cuda")
b = torch.randn(8192, 8192, device="cuda")
torch.cuda.synchronize()
print("ready", os.getpid(), flush=True)
deadline = time.time() + float(sys.argv[1])
while time.time() < deadline:
    for _ in range(10):
        c = a @ b
    torch.cuda.synchronize()
EOF
CUDA_VISIBLE_DEVICES="$GPU_UUID" python3 "$WORK/load.py" "$LOAD_SECONDS" >"$WORK/load.log" 2>&1 &
LOAD_PID=$!
say "load started: pid $LOAD_PID"
for _ in $(seq 1 120); do
	grep -q '^ready' "$WORK/load.log" && break
	kill -0 "$LOAD_PID" 2>/dev/null || { cat "$WORK/load.log"; cannot "the CUDA load exited before it was ready"; }
	sleep 1
done
grep -q '^ready' "$WORK/load.log" || { cat "$WORK/load.log"; cannot "the CUDA load was not ready within 120 s"; }

# --- podmap: the load is a host process ----------------------------------------
PODMAP=$( (as_exporter_user "$EXP" podmap --proc-root /proc --pid "$LOAD_PID") 2>&1) ||
	{ say "podmap as the exporter's user: $PODMAP"; say "FAIL: the exporter's user cannot read /proc/$LOAD_PID (is /proc mounted with hidepid?)"; exit 1; }
say "podmap: $PODMAP"
case "$PODMAP" in
*'"podUID":""'*) ;;
*) cannot "this shell runs inside a Kubernetes pod (podmap found a pod UID for the load); run the check on a host" ;;
esac

# --- The exporter ----------------------------------------------------------------
# Poll /metrics and judge with python3 (already required for the load).
cat >"$WORK/judge.py" <<'EOF'
import re, sys, urllib.request

url, pid, uuid, index = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
try:
    text = urllib.request.urlopen(url, timeout=5).read().decode()
except Exception as e:
    print("scrape failed:", e)
    sys.exit(3)
line_re = re.compile(r'^([A-Za-z_:][A-Za-z0-9_:]*)\{(.*)\} (\S+)$')
label_re = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')
found = {}
for line in text.splitlines():
    m = line_re.match(line)
    if not m:
        continue
    name, labels, value = m.group(1), dict(label_re.findall(m.group(2))), float(m.group(3))
    if name.startswith("spillway_gpu_exporter_processes") or name.startswith("spillway_gpu_exporter_nvml_errors"):
        print("  self:", line)
    if labels.get("pid") != pid:
        continue
    print("  seen:", line)
    found[name] = (labels, value)
sm, mem = found.get("DCGM_CUSTOM_PROCESS_SM_UTIL"), found.get("DCGM_CUSTOM_PROCESS_MEM_USED")
if not sm or not mem:
    print("load pid %s not reported yet" % pid)
    sys.exit(1)
problems = []
for name, (labels, value) in (("SM_UTIL", sm), ("MEM_USED", mem)):
    if labels.get("UUID") != uuid:
        problems.append("%s on UUID %s, want %s" % (name, labels.get("UUID"), uuid))
    if labels.get("gpu") != index:
        problems.append("%s on gpu %s, want %s" % (name, labels.get("gpu"), index))
    for key in ("namespace", "pod", "container", "NamespaceName", "PodName", "ContainerName"):
        if labels.get(key, "") != "":
            problems.append("%s has %s=%r, want empty (host process)" % (name, key, labels[key]))
if mem[1] <= 0:
    problems.append("MEM_USED %g MiB, want > 0" % mem[1])
if sm[1] <= 0:
    print("SM util still 0 (the driver may not have sampled the load yet)")
    sys.exit(1)
if problems:
    print("\n".join("FAIL: " + p for p in problems))
    sys.exit(2)
print("PASS: pid %s on GPU %s (%s): SM util %g%%, memory %g MiB, no pod" % (pid, index, uuid, sm[1], mem[1]))
EOF

# run_exporter PORT LOG WHO: start the exporter (as_exporter_user, or as root
# with WHO=root) and judge its /metrics until PASS, a wrong label, or
# CHECK_TIMEOUT. Sets RESULT: 0 pass, 1 fail.
run_exporter() {
	local port=$1 log=$2 who=$3
	: >"$WORK/judge.out"
	local args=(--backend=nvml --standalone --export-host-processes
		--node-name="$(hostname)" --proc-root=/proc --collect-interval=1s
		--listen-address="127.0.0.1:$port" --log-level=debug)
	if [ "$who" = root ]; then
		"$EXP" "${args[@]}" >"$log" 2>&1 &
	else
		(as_exporter_user "$EXP" "${args[@]}") >"$log" 2>&1 &
	fi
	EXPORTER_PID=$!
	sleep 1
	if kill -0 "$EXPORTER_PID" 2>/dev/null; then
		say "exporter started ($who): pid $EXPORTER_PID; $(identity "$EXPORTER_PID")"
	fi
	RESULT=1
	local deadline=$((SECONDS + CHECK_TIMEOUT)) rc
	while [ "$SECONDS" -lt "$deadline" ]; do
		kill -0 "$EXPORTER_PID" 2>/dev/null || { say "the exporter ($who) exited:"; cat "$log"; break; }
		kill -0 "$LOAD_PID" 2>/dev/null || { say "the load exited early:"; cat "$WORK/load.log"; exit 1; }
		set +e
		python3 "$WORK/judge.py" "http://127.0.0.1:$port/metrics" "$LOAD_PID" "$GPU_UUID" "$GPU_INDEX" >"$WORK/judge.out" 2>&1
		rc=$?
		set -e
		if [ "$rc" -eq 0 ]; then
			RESULT=0
			break
		fi
		if [ "$rc" -eq 2 ]; then
			break # a wrong label will not fix itself
		fi
		sleep 2
	done
	say "last judgement ($who):"
	cat "$WORK/judge.out"
}

run_exporter "$PORT" "$WORK/exporter.log" exporter-user
say "nvidia-smi compute processes:"
nvidia-smi --query-compute-apps=pid,gpu_uuid,used_memory --format=csv || true
if [ "$RESULT" -ne 0 ]; then
	if grep -q 'reason="proc_unreadable"} [1-9]' "$WORK/judge.out"; then
		say "hint: NVML reported PIDs this shell's /proc cannot see: run on the host, not in a container with its own PID namespace"
	fi
	say "exporter log (tail):"
	tail -n 40 "$WORK/exporter.log"
	stop_exporter
	if [ "$(id -u)" -eq 0 ] && [ "$RUN_AS_UID" -ne 0 ]; then
		say "device nodes NVML opens:"
		ls -ln /dev/nvidiactl /dev/nvidia[0-9]* /dev/nvidia-uvm* /dev/nvidia-caps 2>&1 || true
		say "retrying as root, to tell a privilege problem from any other"
		CHECK_TIMEOUT=$((CHECK_TIMEOUT < 60 ? CHECK_TIMEOUT : 60))
		run_exporter $((PORT + 1)) "$WORK/exporter-root.log" root
		stop_exporter
		if [ "$RESULT" -eq 0 ]; then
			say "NVML NEEDS MORE THAN UID $RUN_AS_UID (GID $RUN_AS_GID, groups [${EXTRA_GIDS}]): as root the same check passes."
			say "If the device nodes above are not mode 0666, rerun with EXTRA_GIDS=<their group> and set the chart's"
			say "exporter.supplementalGroups to it; otherwise exporter.runAsUser=0 (docs/exporter.md)."
		else
			say "as root it fails too: not a privilege problem"
			tail -n 20 "$WORK/exporter-root.log"
		fi
	fi
	say "FAIL"
	exit 1
fi
say "PASS as UID $(awk '/^Uid:/ {print $2}' "/proc/$EXPORTER_PID/status" 2>/dev/null || echo "?"): $(identity "$EXPORTER_PID" 2>/dev/null || true)"
