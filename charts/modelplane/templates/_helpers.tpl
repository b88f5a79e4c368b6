{{/*
Chart name, truncated to the 63 characters a label value allows.
*/}}
{{- define "modelplane.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified name of the release's resources: the release name when it already contains the
chart name, release-chart otherwise.
*/}}
{{- define "modelplane.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
chart-version, as the helm.sh/chart label wants it.
*/}}
{{- define "modelplane.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels on every resource of the chart.
*/}}
{{- define "modelplane.labels" -}}
helm.sh/chart: {{ include "modelplane.chart" . }}
{{ include "modelplane.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: modelplane
{{- end }}

{{/*
Labels that select the operator pod (immutable once the Deployment exists).
*/}}
{{- define "modelplane.selectorLabels" -}}
app.kubernetes.io/name: {{ include "modelplane.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The operator's ServiceAccount.
*/}}
{{- define "modelplane.serviceAccountName" -}}
{{- include "modelplane.fullname" . }}
{{- end }}

{{/*
The operator image: repository@digest when a digest is set, else repository:tag (tag defaults
to the chart's appVersion).
*/}}
{{- define "modelplane.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
True ("true") when the operator watches only the namespaces in watchNamespaces.
*/}}
{{- define "modelplane.namespaced" -}}
{{- if .Values.watchNamespaces }}true{{ end }}
{{- end }}

{{/*
Namespaces that get a Role in namespaced mode: every watched namespace plus the release
namespace, where the operator keeps platform-owned objects (shared Serverless backends).
*/}}
{{- define "modelplane.roleNamespaces" -}}
{{- $namespaces := append .Values.watchNamespaces .Release.Namespace | uniq | sortAlpha }}
{{- toJson $namespaces }}
{{- end }}

{{/*
RBAC rules from files/permissions.yaml (generated from modelplane.permissions), filtered by
scope and by the selected capacity provider. Call with
  dict "root" $ "scope" ("all" | "namespaced" | "cluster" | "operator") ["file" "files/gateway-permissions.yaml"]
"operator" selects the rules granted only in the release namespace (operatorNamespace: true);
every other scope leaves them out.
*/}}
{{- define "modelplane.rules" -}}
{{- $root := .root }}
{{- $table := $root.Files.Get (default "files/permissions.yaml" .file) | fromYaml }}
{{- range $table.rules }}
{{- $providerOk := or (not .provider) (eq .provider $root.Values.capacityProvider) }}
{{- $scopeOk := or (eq $.scope "all") (and (eq $.scope "namespaced") .namespaced) (and (eq $.scope "cluster") (not .namespaced)) }}
{{- if eq $.scope "operator" }}{{ $scopeOk = .operatorNamespace }}{{ else if .operatorNamespace }}{{ $scopeOk = false }}{{ end }}
{{- if and $providerOk $scopeOk }}
# {{ .why }}
- apiGroups: {{ toJson .apiGroups }}
  resources: {{ toJson .resources }}
  verbs: {{ toJson .verbs }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The gateway: its resources' name, its ServiceAccount, and the labels that select its pods (an
app name of its own, so the operator's Deployment and metrics Service never select them).
*/}}
{{- define "modelplane.gatewayName" -}}
{{- printf "%s-gateway" (include "modelplane.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "modelplane.gatewaySelectorLabels" -}}
app.kubernetes.io/name: {{ printf "%s-gateway" (include "modelplane.name" .) | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}
