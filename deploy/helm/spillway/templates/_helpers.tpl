{{/*
Names. Every object is <fullname>-<component>; the fullname is the release
name when it already contains the chart name (release "spillway" gives
"spillway-controller", not "spillway-spillway-controller").
*/}}
{{- define "spillway.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "spillway.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Component names: call with (list $ "controller"). */}}
{{- define "spillway.componentName" -}}
{{- $root := index . 0 }}{{- $component := index . 1 }}
{{- printf "%s-%s" (include "spillway.fullname" $root) $component }}
{{- end }}

{{- define "spillway.exporter.fullname" -}}{{ include "spillway.componentName" (list . "gpu-exporter") }}{{- end }}
{{- define "spillway.adapter.fullname" -}}{{ include "spillway.componentName" (list . "metrics-adapter") }}{{- end }}
{{- define "spillway.controller.fullname" -}}{{ include "spillway.componentName" (list . "controller") }}{{- end }}

{{/* Objects whose names the controller is told on its command line. */}}
{{- define "spillway.webhook.configName" -}}{{ include "spillway.componentName" (list . "placement") }}{{- end }}
{{- define "spillway.webhook.certSecret" -}}{{ include "spillway.componentName" (list . "webhook-cert") }}{{- end }}
{{- define "spillway.adapter.certSecret" -}}{{ include "spillway.componentName" (list . "metrics-adapter-cert") }}{{- end }}
{{- define "spillway.leaseName" -}}
{{- default (include "spillway.controller.fullname" .) .Values.controller.leaderElection.leaseName }}
{{- end }}

{{- define "spillway.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels: call with (list $ "component"). */}}
{{- define "spillway.selectorLabels" -}}
{{- $root := index . 0 }}{{- $component := index . 1 -}}
app.kubernetes.io/name: {{ include "spillway.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ $component }}
{{- end }}

{{- define "spillway.labels" -}}
{{- $root := index . 0 -}}
helm.sh/chart: {{ include "spillway.chart" $root }}
{{ include "spillway.selectorLabels" . }}
app.kubernetes.io/version: {{ $root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ $root.Release.Service }}
app.kubernetes.io/part-of: spillway
{{- with $root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Image: call with (list $ .Values.<component>.image). */}}
{{- define "spillway.image" -}}
{{- $root := index . 0 }}{{- $image := index . 1 }}
{{- $tag := $image.tag | default $root.Values.image.tag | default $root.Chart.AppVersion }}
{{- if $image.digest }}
{{- printf "%s/%s@%s" $root.Values.image.registry $image.repository $image.digest }}
{{- else }}
{{- printf "%s/%s:%s" $root.Values.image.registry $image.repository $tag }}
{{- end }}
{{- end }}

{{/* ServiceAccount names: call with (list $ "exporter"|"adapter"|"controller"). */}}
{{- define "spillway.serviceAccountName" -}}
{{- $root := index . 0 }}{{- $component := index . 1 }}
{{- $values := index $root.Values $component }}
{{- $full := "" }}
{{- if eq $component "exporter" }}{{ $full = include "spillway.exporter.fullname" $root }}{{ end }}
{{- if eq $component "adapter" }}{{ $full = include "spillway.adapter.fullname" $root }}{{ end }}
{{- if eq $component "controller" }}{{ $full = include "spillway.controller.fullname" $root }}{{ end }}
{{- if $values.serviceAccount.create }}
{{- default $full $values.serviceAccount.name }}
{{- else }}
{{- default "default" $values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Prometheus scrape annotations for a pod template: (list $ port). */}}
{{- define "spillway.scrapeAnnotations" -}}
{{- $root := index . 0 }}{{- $port := index . 1 }}
{{- if $root.Values.metrics.scrapeAnnotations -}}
prometheus.io/scrape: "true"
prometheus.io/port: {{ $port | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- end }}

{{/*
Pod anti-affinity spreading a Deployment's replicas over nodes:
(list $ "component" "soft"|"hard"|"none" topologyKey).
*/}}
{{- define "spillway.podAntiAffinity" -}}
{{- $root := index . 0 }}{{- $component := index . 1 }}{{- $mode := index . 2 }}{{- $key := index . 3 }}
{{- if eq $mode "hard" -}}
podAntiAffinity:
  requiredDuringSchedulingIgnoredDuringExecution:
    - topologyKey: {{ $key }}
      labelSelector:
        matchLabels:
          {{- include "spillway.selectorLabels" (list $root $component) | nindent 10 }}
{{- else if eq $mode "soft" -}}
podAntiAffinity:
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        topologyKey: {{ $key }}
        labelSelector:
          matchLabels:
            {{- include "spillway.selectorLabels" (list $root $component) | nindent 12 }}
{{- end }}
{{- end }}

{{/* Whether cert-manager issues the serving certificates. */}}
{{- define "spillway.certManager" -}}
{{- if .Values.certManager.enabled }}true{{ end }}
{{- end }}

{{/* The Issuer reference of cert-manager Certificates. */}}
{{- define "spillway.issuerRef" -}}
{{- if .Values.certManager.issuerRef.name -}}
name: {{ .Values.certManager.issuerRef.name }}
kind: {{ .Values.certManager.issuerRef.kind | default "Issuer" }}
group: {{ .Values.certManager.issuerRef.group | default "cert-manager.io" }}
{{- else -}}
name: {{ include "spillway.componentName" (list . "selfsigned") }}
kind: Issuer
group: cert-manager.io
{{- end }}
{{- end }}

{{/* Values checks that fail the render with a clear message. */}}
{{- define "spillway.validate" -}}
{{- if not (has .Values.exporter.backend (list "nvml" "sim")) }}
{{- fail (printf "exporter.backend %q: want nvml or sim" .Values.exporter.backend) }}
{{- end }}
{{- if not (has .Values.exporter.procAccess (list "hostPID" "hostProc")) }}
{{- fail (printf "exporter.procAccess %q: want hostPID or hostProc" .Values.exporter.procAccess) }}
{{- end }}
{{- if eq .Values.adapter.tls.mode "selfSigned" }}
{{- fail "adapter.tls.mode=selfSigned is gone: it made the kube-apiserver skip verifying the adapter. Use selfManaged (the default: the adapter manages its CA and writes it into the APIServices) or, for development only, insecureSelfSigned" }}
{{- end }}
{{- if not (has .Values.adapter.tls.mode (list "selfManaged" "secret" "insecureSelfSigned")) }}
{{- fail (printf "adapter.tls.mode %q: want selfManaged, secret or insecureSelfSigned (certManager.enabled overrides them)" .Values.adapter.tls.mode) }}
{{- end }}
{{- if and .Values.adapter.enabled (eq .Values.adapter.tls.mode "secret") (not .Values.certManager.enabled) (not .Values.adapter.tls.secretName) }}
{{- fail "adapter.tls.mode=secret needs adapter.tls.secretName" }}
{{- end }}
{{- if and .Values.adapter.enabled (eq .Values.adapter.tls.mode "secret") (not .Values.certManager.enabled) (not .Values.adapter.tls.caBundle) }}
{{- fail "adapter.tls.mode=secret needs adapter.tls.caBundle: the CA the kube-apiserver verifies the adapter against" }}
{{- end }}
{{- if and .Values.adapter.enabled (not .Values.adapter.prometheus.url) }}
{{- fail "adapter.prometheus.url is required: the Prometheus that scrapes the exporter" }}
{{- end }}
{{- with .Values.adapter.prometheus }}
{{- $tls := or .tls.caFile .tls.certFile .tls.keyFile }}
{{- if and $.Values.adapter.enabled $tls (not (hasPrefix "https://" .url)) }}
{{- fail (printf "adapter.prometheus.tls needs an https adapter.prometheus.url, got %q" .url) }}
{{- end }}
{{- if ne (not .tls.certFile) (not .tls.keyFile) }}
{{- fail "adapter.prometheus.tls.certFile and keyFile go together" }}
{{- end }}
{{- end }}
{{- $externalPort := int .Values.adapter.external.port }}
{{- if and .Values.adapter.external.host (or (lt $externalPort 1) (gt $externalPort 65535)) }}
{{- fail (printf "adapter.external.host needs adapter.external.port (1-65535), got %v: the port the adapter listens on there" .Values.adapter.external.port) }}
{{- end }}
{{- if not (has .Values.controller.webhook.failurePolicy (list "Ignore" "Fail")) }}
{{- fail (printf "controller.webhook.failurePolicy %q: want Ignore or Fail" .Values.controller.webhook.failurePolicy) }}
{{- end }}
{{- range $c := list "adapter" "controller" }}
{{- $mode := (index $.Values $c).podAntiAffinity }}
{{- if not (has $mode (list "soft" "hard" "none")) }}
{{- fail (printf "%s.podAntiAffinity %q: want soft, hard or none" $c $mode) }}
{{- end }}
{{- end }}
{{- if and .Values.metrics.serviceMonitor.enabled .Values.metrics.podMonitor.enabled }}
{{- fail "metrics.serviceMonitor.enabled and metrics.podMonitor.enabled exclude each other: both would scrape every target twice" }}
{{- end }}
{{- end }}
