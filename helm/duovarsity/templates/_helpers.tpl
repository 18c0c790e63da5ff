{{/* The release-scoped name of a component: <release>-<component>. */}}
{{- define "duovarsity.name" -}}
{{- printf "%s-%s" .root.Release.Name .name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels every object carries. */}}
{{- define "duovarsity.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
app.kubernetes.io/part-of: duovarsity
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
{{ include "duovarsity.selector" . }}
{{- end -}}

{{/* The labels that select one component's pods. */}}
{{- define "duovarsity.selector" -}}
app.kubernetes.io/name: duovarsity
app.kubernetes.io/component: {{ .name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end -}}

{{/* A component's values: `default:` with the component's entry merged over it. */}}
{{- define "duovarsity.component" -}}
{{- $merged := mergeOverwrite (deepCopy .root.Values.default) (deepCopy .values) -}}
{{- toYaml $merged -}}
{{- end -}}

{{/* The image of every platform container. */}}
{{- define "duovarsity.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The ServiceAccount of a component: the gateway's may watch EndpointSlices. */}}
{{- define "duovarsity.serviceAccount" -}}
{{- if eq .name "gateway" -}}
{{ include "duovarsity.name" . }}
{{- else -}}
{{ printf "%s-workload" .root.Release.Name }}
{{- end -}}
{{- end -}}

{{/* Whether `name` is a gRPC service (not the gateway). */}}
{{- define "duovarsity.isService" -}}
{{- if ne .name "gateway" }}true{{ end -}}
{{- end -}}

{{/* Kafka bootstrap servers: the dev broker or the configured ones. */}}
{{- define "duovarsity.kafkaBrokers" -}}
{{- if .Values.dev.enabled -}}
{{ printf "%s-kafka:9092" .Release.Name }}
{{- else -}}
{{ required "externalServices.kafkaBrokers is required unless dev.enabled" .Values.externalServices.kafkaBrokers }}
{{- end -}}
{{- end -}}

{{/* A hardened security context for dependency pods (dev mode, PgBouncer). */}}
{{- define "duovarsity.dependencySecurity" -}}
allowPrivilegeEscalation: false
runAsNonRoot: true
capabilities: {drop: [ALL]}
{{- end -}}

{{/* The key of the database URL in the existing Secret. */}}
{{- define "duovarsity.databaseUrlKey" -}}
{{- range .Values.secrets.env -}}
{{- if eq .name "DUOVARSITY_DATABASE_URL" }}{{ .key }}{{ end -}}
{{- end -}}
{{- end -}}
