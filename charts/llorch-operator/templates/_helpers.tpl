{{/*
The name of every object: fullnameOverride, else the release name when it
ends in "operator", else "<release>-operator" (release "llorch" gives
"llorch-operator", the name the plain manifests use).
*/}}
{{- define "llorch-operator.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if hasSuffix "operator" .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-operator" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Chart name and version, for the helm.sh/chart label. */}}
{{- define "llorch-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels that select the operator's pods. */}}
{{- define "llorch-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels of every object. */}}
{{- define "llorch-operator.labels" -}}
helm.sh/chart: {{ include "llorch-operator.chart" . }}
{{ include "llorch-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: llorch
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* The operator's ServiceAccount. */}}
{{- define "llorch-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "llorch-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* "registry/" or nothing. */}}
{{- define "llorch-operator.registryPrefix" -}}
{{- with .Values.image.registry -}}
{{- printf "%s/" (trimSuffix "/" .) -}}
{{- end -}}
{{- end -}}

{{/* The operator's image. */}}
{{- define "llorch-operator.image" -}}
{{- printf "%s%s:%s" (include "llorch-operator.registryPrefix" .) .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The GPU worker image (`--worker-image`). */}}
{{- define "llorch-operator.workerImage" -}}
{{- printf "%s%s:%s" (include "llorch-operator.registryPrefix" .) .Values.worker.image.repository (default .Chart.AppVersion .Values.worker.image.tag) -}}
{{- end -}}

{{/* The CPU worker image (`--worker-cpu-image`). */}}
{{- define "llorch-operator.workerCpuImage" -}}
{{- $tag := default (printf "%s-cpu" .Chart.AppVersion) .Values.worker.image.cpuTag -}}
{{- printf "%s%s:%s" (include "llorch-operator.registryPrefix" .) .Values.worker.image.repository $tag -}}
{{- end -}}

{{/*
The rules the operator needs in every namespace it watches. They are the
rules of manifests/operator.yaml's ClusterRole, less the Lease rule (which
only concerns the operator's own namespace; see "llorch-operator.leaseRule").
*/}}
{{- define "llorch-operator.watchRules" -}}
- apiGroups: [llorch.dev]
  resources: [modelworkers]
  verbs: [get, list, watch]
- apiGroups: [llorch.dev]
  resources: [modelworkers/status]
  verbs: [get, patch]
# Children block their owner's deletion (blockOwnerDeletion), which
# clusters enforcing owner-reference permissions allow only to those who
# may update the owner's finalizers.
- apiGroups: [llorch.dev]
  resources: [modelworkers/finalizers]
  verbs: [update]
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch]
- apiGroups: [""]
  resources: [services, persistentvolumeclaims]
  verbs: [get, list, watch, create, patch]
# Callback-token Secrets: created once, read by name (never listed or
# watched), and a stale one of an earlier ModelWorker deleted.
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, create, delete]
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch]
# The autoscaler: a ModelWorker's ready replicas (its Service's Endpoints,
# read by name) and its size (the scale subresource).
- apiGroups: [""]
  resources: [endpoints]
  verbs: [get]
- apiGroups: [llorch.dev]
  resources: [modelworkers/scale]
  verbs: [get, update]
# Deleted when the spec no longer asks for them.
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- end -}}

{{/* Leader election on its own Lease in the operator's namespace (RBAC
cannot limit create by name). */}}
{{- define "llorch-operator.leaseRule" -}}
- apiGroups: [coordination.k8s.io]
  resources: [leases]
  verbs: [create]
- apiGroups: [coordination.k8s.io]
  resources: [leases]
  resourceNames: [{{ include "llorch-operator.fullname" . }}]
  verbs: [get, update]
{{- end -}}

{{/*
The gateway's name: the full name with "-operator" replaced by "-gateway"
(release "llorch" gives "llorch-gateway"), else the full name and
"-gateway".
*/}}
{{- define "llorch-operator.gatewayName" -}}
{{- $full := include "llorch-operator.fullname" . -}}
{{- if hasSuffix "-operator" $full -}}
{{- printf "%s-gateway" (trimSuffix "-operator" $full) | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-gateway" $full | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels that select the gateway's pods (worker NetworkPolicies admit
pods named llorch-gateway). */}}
{{- define "llorch-operator.gatewaySelectorLabels" -}}
app.kubernetes.io/name: llorch-gateway
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels of every gateway object. */}}
{{- define "llorch-operator.gatewayLabels" -}}
helm.sh/chart: {{ include "llorch-operator.chart" . }}
{{ include "llorch-operator.gatewaySelectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: gateway
app.kubernetes.io/part-of: llorch
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* What the gateway may do where it routes: read ModelWorkers, their
pods and Endpoints (watched, never asked per request), wake a model from
zero through the scale subresource, and read the API keys of workers that
require one. */}}
{{- define "llorch-operator.gatewayRules" -}}
- apiGroups: [llorch.dev]
  resources: [modelworkers]
  verbs: [get, list, watch]
- apiGroups: [llorch.dev]
  resources: [modelworkers/scale]
  verbs: [get, update, patch]
- apiGroups: [""]
  resources: [pods, endpoints]
  verbs: [list, watch]
- apiGroups: [""]
  resources: [secrets]
  verbs: [get]
{{- end -}}
