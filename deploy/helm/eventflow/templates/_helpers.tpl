{{/* Names ---------------------------------------------------------------- */}}

{{- define "eventflow.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name, at most 52 characters so that suffixes such as
"-migrate" and Kubernetes' own (pod hashes) still fit in 63. */}}
{{- define "eventflow.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "eventflow.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "eventflow.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "eventflow.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "eventflow.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret holding DATABASE_URL and REDIS_URL. */}}
{{- define "eventflow.secretName" -}}
{{- default (include "eventflow.fullname" .) .Values.secrets.existingSecret }}
{{- end }}

{{/* Labels --------------------------------------------------------------- */}}

{{- define "eventflow.selectorLabels" -}}
app.kubernetes.io/name: {{ include "eventflow.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "eventflow.labels" -}}
helm.sh/chart: {{ include "eventflow.chart" . }}
{{ include "eventflow.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: eventflow
{{- end }}

{{/* Labels of one component: (dict "root" $ "component" "api"). */}}
{{- define "eventflow.componentLabels" -}}
{{ include "eventflow.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "eventflow.componentSelectorLabels" -}}
{{ include "eventflow.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Checks that values.schema.json cannot express ------------------------ */}}

{{- define "eventflow.validate" -}}
{{- $auto := .Values.worker.autoscaling }}
{{- if and $auto.keda.enabled $auto.hpa.enabled }}
{{- fail "worker.autoscaling: keda and hpa cannot both be enabled (two autoscalers would fight over the worker Deployment); enable one" }}
{{- end }}
{{- if $auto.keda.enabled }}
{{- if not $auto.keda.address }}
{{- fail "worker.autoscaling.keda.address is required with KEDA: the Redis host:port (KEDA cannot read REDIS_URL)" }}
{{- end }}
{{- $streams := include "eventflow.kedaStreams" . | fromYamlArray }}
{{- if ne (len $streams) (int .Values.partitions) }}
{{- fail (printf "worker.autoscaling.keda.streams lists %d stream keys but partitions is %d: list one key per partition, in partition order (or set streamKeyFormat)" (len $streams) (int .Values.partitions)) }}
{{- end }}
{{- end }}
{{- if and .Values.api.metrics.enabled (eq (int .Values.api.metrics.port) (int .Values.api.port)) }}
{{- fail "api.metrics.port must differ from api.port" }}
{{- end }}
{{- if and (not .Values.secrets.existingSecret) (or (not .Values.secrets.databaseUrl) (not .Values.secrets.redisUrl)) }}
{{- fail "secrets: set databaseUrl and redisUrl, or existingSecret" }}
{{- end }}
{{- end }}

{{/* The stream keys KEDA watches, one per partition, as a YAML list: the values
list worker.autoscaling.keda.streams when given, else one key per partition made
with streamKeyFormat (printf of the stream name and the partition number), else
EventFlow's own keys: "<streamName>:{<tag>}", with each partition's hash tag from
files/partition-tags.txt (generated from eventflow.pipeline.streams.partition_tag;
a test keeps the two equal). */}}
{{- define "eventflow.kedaStreams" -}}
{{- $keda := .Values.worker.autoscaling.keda }}
{{- $keys := list }}
{{- if $keda.streams }}
{{- $keys = $keda.streams }}
{{- else if $keda.streamKeyFormat }}
{{- range $p := until (int .Values.partitions) }}
{{- $keys = append $keys (printf $keda.streamKeyFormat $.Values.redis.streamName $p) }}
{{- end }}
{{- else }}
{{- $tags := splitList "\n" ($.Files.Get "files/partition-tags.txt" | trim) }}
{{- range $p := until (int .Values.partitions) }}
{{- $keys = append $keys (printf "%s:{%s}" $.Values.redis.streamName (index $tags $p)) }}
{{- end }}
{{- end }}
{{- toYaml $keys }}
{{- end }}

{{/* Environment ---------------------------------------------------------- */}}

{{/* The variables every EventFlow container gets: (dict "root" $ "env" map),
where map is the component's own env, which wins over the global one. */}}
{{- define "eventflow.env" -}}
{{- $root := .root }}
{{- $values := $root.Values }}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "eventflow.secretName" $root }}
      key: {{ $values.secrets.databaseUrlKey }}
- name: REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "eventflow.secretName" $root }}
      key: {{ $values.secrets.redisUrlKey }}
- name: EVENTFLOW_PARTITIONS
  value: {{ $values.partitions | int | quote }}
- name: EVENTFLOW_REDIS_CLUSTER
  value: {{ $values.redis.cluster | toString | quote }}
- name: EVENTFLOW_STREAM_NAME
  value: {{ $values.redis.streamName | quote }}
- name: EVENTFLOW_CONSUMER_GROUP
  value: {{ $values.redis.consumerGroup | quote }}
{{- range $name, $ref := $values.secretEnv }}
- name: {{ $name }}
  valueFrom:
    secretKeyRef:
      name: {{ $ref.secretName }}
      key: {{ $ref.key }}
{{- end }}
{{- $env := mergeOverwrite (deepCopy ($values.env | default dict)) (.env | default dict) }}
{{- range $name, $value := $env }}
- name: {{ $name }}
  {{- /* Helm reads every number as a float: 1000000 would print as 1e+06. */}}
  {{- if and (kindIs "float64" $value) (eq $value (floor $value)) }}
  value: {{ int64 $value | toString | quote }}
  {{- else }}
  value: {{ $value | toString | quote }}
  {{- end }}
{{- end }}
{{- end }}

{{/* Pods ----------------------------------------------------------------- */}}

{{- define "eventflow.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.tmpSizeLimit }}
{{- end }}

{{- define "eventflow.tmpMount" -}}
- name: tmp
  mountPath: /tmp
{{- end }}

{{/* Scheduling fields of a pod spec, from a component's values. */}}
{{- define "eventflow.scheduling" -}}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- end }}

{{/* A PodDisruptionBudget's limit: minAvailable or maxUnavailable, default
maxUnavailable 1. */}}
{{- define "eventflow.pdbLimit" -}}
{{- if not (kindIs "invalid" .minAvailable) }}
minAvailable: {{ .minAvailable }}
{{- else if not (kindIs "invalid" .maxUnavailable) }}
maxUnavailable: {{ .maxUnavailable }}
{{- else }}
maxUnavailable: 1
{{- end }}
{{- end }}
