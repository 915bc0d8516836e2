#!/usr/bin/env bash
# Copies the CRDs that controller-gen writes into config/crd into the Helm
# chart's crds/ directory, so the chart installs exactly the generated files.
# Files in the chart's crds/ that no longer exist in config/crd are removed.
# Run from anywhere; `make generate` runs it after controller-gen.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
src="${root}/config/crd"
dst="${root}/deploy/helm/spillway/crds"

shopt -s nullglob
crds=("${src}"/*.yaml)
if [ "${#crds[@]}" -eq 0 ]; then
	echo "sync-chart-crds: no CRDs in ${src} (run 'make generate' first)" >&2
	exit 1
fi

mkdir -p "${dst}"
for f in "${dst}"/*.yaml; do
	if [ ! -e "${src}/$(basename "${f}")" ]; then
		rm -- "${f}"
	fi
done
for f in "${crds[@]}"; do
	cp -- "${f}" "${dst}/$(basename "${f}")"
done
