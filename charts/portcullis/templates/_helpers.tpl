{{/* Chart name. */}}
{{- define "portcullis.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name: the prefix of every namespaced and cluster-scoped object. */}}
{{- define "portcullis.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "portcullis.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "portcullis.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: portcullis
{{- end -}}

{{- define "portcullis.selectorLabels" -}}
app.kubernetes.io/name: {{ include "portcullis.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "portcullis.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "portcullis.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "portcullis.webhookService" -}}
{{- printf "%s-webhook" (include "portcullis.fullname" .) -}}
{{- end -}}

{{- define "portcullis.metricsService" -}}
{{- printf "%s-metrics" (include "portcullis.fullname" .) -}}
{{- end -}}

{{- define "portcullis.settingsName" -}}
{{- printf "%s-settings" (include "portcullis.fullname" .) -}}
{{- end -}}

{{- define "portcullis.operatorImage" -}}
{{- printf "%s:%s" .Values.operator.image.repository (default .Chart.AppVersion .Values.operator.image.tag) -}}
{{- end -}}

{{- define "portcullis.sidecarImage" -}}
{{- printf "%s:%s" .Values.sidecar.image.repository (default .Chart.AppVersion .Values.sidecar.image.tag) -}}
{{- end -}}

{{/*
The operator's settings file (/etc/portcullis/settings.json): what `portcullis-operator run
--settings` reads. The "sidecar" object deserializes into webhook::SidecarSettings; its
"limitsStore" names the password's Secret, never the password.
*/}}
{{- define "portcullis.settings" -}}
{{- $sidecar := dict
      "image" (include "portcullis.sidecarImage" .)
      "imagePullPolicy" .Values.sidecar.image.pullPolicy
      "resources" (default (dict) .Values.sidecar.resources)
      "ports" .Values.sidecar.ports
      "runAsUser" .Values.sidecar.runAsUser
      "native" .Values.sidecar.native
      "extraArgs" (default (list) .Values.sidecar.extraArgs)
      "limitsStore" (default (dict) .Values.sidecar.limitsStore)
      "workers" .Values.sidecar.workers
      "maxConnectionsPerClient" .Values.sidecar.maxConnectionsPerClient -}}
{{- $webhook := dict
      "service" (include "portcullis.webhookService" .)
      "namespace" .Release.Namespace
      "mutatingWebhookConfiguration" (include "portcullis.fullname" .)
      "validatingWebhookConfiguration" (include "portcullis.fullname" .) -}}
{{- $settings := dict
      "orgAllowance" (dict "requestsPerMinute" .Values.orgAllowance.requestsPerMinute)
      "trustedProxies" .Values.trustedProxies
      "sidecar" $sidecar
      "webhook" $webhook -}}
{{- toPrettyJson $settings -}}
{{- end -}}

{{/* Container securityContext shared by the operator: non-root, read-only, no capabilities. */}}
{{- define "portcullis.containerSecurityContext" -}}
runAsNonRoot: true
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}
