#!/usr/bin/env bash
# Builds the Go vulnerability database that `make vuln` gives govulncheck, offline,
# from the golang.org/x/vulndb module pinned in tools/vulndb/go.mod, and prints its
# directory on stdout (progress goes to stderr).
#
# Why offline: the public database endpoint is unreachable here, and a pinned
# database makes `make vuln` deterministic (a finding appears with a commit that
# bumps a dependency or the pin, never overnight). The module carries the
# reviewed OSV entries in data/osv/; x/vulndb's own cmd/indexdb (pinned by the
# same go.mod, built into bin/ by the Makefile) turns them into the v1 layout
# govulncheck reads: index/db.json, index/modules.json, index/vulns.json,
# ID/<ID>.json, each with a .gz twin. The data is never committed: it is
# rebuilt from the module cache into
#   ${SPILLWAY_CACHE_DIR:-<user cache>/spillway}/vulndb-<module version>/
# once per pinned version (a few seconds); later runs reuse it.
#
# The OSV files in the module carry a zero `modified` time (upstream fills it
# from git history when it publishes), so the database's index/db.json says
# 0001-01-01; the pinned module version is the database's real date.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
indexdb="${INDEXDB:-${root}/bin/vulndb-indexdb}"
tools="${root}/tools/vulndb"

if [ ! -x "${indexdb}" ]; then
	echo "vulndb: building x/vulndb's indexdb into ${indexdb} (once)" >&2
	go -C "${tools}" build -o "${indexdb}" golang.org/x/vulndb/cmd/indexdb
fi

# Same cache root as internal/localcluster.CacheDir (os.UserCacheDir on Linux).
cache="${SPILLWAY_CACHE_DIR:-${XDG_CACHE_HOME:-${HOME}/.cache}/spillway}"

# The module source: downloaded from the Go module proxy on first use (~25 MB zip).
go -C "${tools}" mod download golang.org/x/vulndb
read -r version moddir < <(go -C "${tools}" list -m -f '{{.Version}} {{.Dir}}' golang.org/x/vulndb)
if [ -z "${version}" ] || [ ! -d "${moddir}/data/osv" ]; then
	echo "vulndb: golang.org/x/vulndb@${version} has no data/osv in the module cache (${moddir})" >&2
	exit 1
fi

db="${cache}/vulndb-${version}"
# index/modules.json is what govulncheck looks for to accept a v1 database; it is
# written before the entries, so completeness is marked by the rename below.
if [ -f "${db}/index/modules.json" ]; then
	echo "vulndb: golang.org/x/vulndb@${version} (cached in ${db})" >&2
	echo "${db}"
	exit 0
fi

start=${SECONDS}
mkdir -p "${cache}"
tmp="$(mktemp -d "${cache}/vulndb-${version}.tmp.XXXXXX")"
trap 'rm -rf "${tmp}"' EXIT
echo "vulndb: building the database from golang.org/x/vulndb@${version} into ${db} (once per version)" >&2
"${indexdb}" -vulns "${moddir}/data/osv" -out "${tmp}"

# A database that silently lost entries would turn findings into a clean pass.
want="$(find "${moddir}/data/osv" -name '*.json' | wc -l)"
got=0
if [ -d "${tmp}/ID" ]; then got="$(find "${tmp}/ID" -name '*.json' | wc -l)"; fi
if [ "${want}" -eq 0 ] || [ "${want}" -ne "${got}" ]; then
	echo "vulndb: ${got} entries written from ${want} OSV files in ${moddir}/data/osv" >&2
	exit 1
fi
rm -rf "${db}"
mv "${tmp}" "${db}"
trap - EXIT
echo "vulndb: ${got} entries in $((SECONDS - start))s" >&2
echo "${db}"
