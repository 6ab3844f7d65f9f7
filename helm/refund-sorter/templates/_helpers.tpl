{{/* Names, labels and images shared by the templates. */}}

{{- define "refund-sorter.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release name, with the chart's name added unless it already contains it. */}}
{{- define "refund-sorter.fullname" -}}
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

{{/* The TorchServe Deployment, Service and friends; the batch job's CronJob and ServiceAccount. */}}
{{- define "refund-sorter.servingName" -}}
{{- printf "%s-torchserve" (include "refund-sorter.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- define "refund-sorter.batchName" -}}
{{- printf "%s-batch" (include "refund-sorter.fullname" .) | trunc 52 | trimSuffix "-" }}
{{- end }}

{{- define "refund-sorter.retrainName" -}}
{{- printf "%s-retrain" (include "refund-sorter.fullname" .) | trunc 52 | trimSuffix "-" }}
{{- end }}

{{/* "true" when the retraining job rolls TorchServe to what it promotes: this chart's Deployment serves the
registry's production model (a pinned version, a baked-in model or KServe are not moved). Empty otherwise. */}}
{{- define "refund-sorter.retrainRolls" -}}
{{- $model := .Values.serving.model }}
{{- if and (eq .Values.serving.mode "deployment") (eq $model.source "registry") (eq $model.version "production") }}true{{ end }}
{{- end }}

{{- define "refund-sorter.selectorLabels" -}}
app.kubernetes.io/name: {{ include "refund-sorter.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "refund-sorter.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "refund-sorter.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: refund-sorter
{{- end }}

{{/* Usage: include "refund-sorter.image" (list . "serve") */}}
{{- define "refund-sorter.image" -}}
{{- $root := index . 0 }}
{{- $which := index . 1 }}
{{- $image := $root.Values.image }}
{{- $name := index $image $which }}
{{- $repository := ternary (printf "%s/%s" $image.registry $name) $name (ne $image.registry "") }}
{{- $digest := index $image (printf "%sDigest" $which) }}
{{- if $digest }}
{{- printf "%s@%s" $repository $digest }}
{{- else }}
{{- $tag := default (default $root.Chart.AppVersion $image.tag) (index $image (printf "%sTag" $which)) }}
{{- printf "%s:%s" $repository $tag }}
{{- end }}
{{- end }}

{{/* The TorchServe pods: this chart's Deployment, or KServe's predictor of this InferenceService. */}}
{{- define "refund-sorter.servingPodLabels" -}}
{{- if eq .Values.serving.mode "kserve" }}
serving.kserve.io/inferenceservice: {{ include "refund-sorter.fullname" . }}
{{- else }}
{{ include "refund-sorter.selectorLabels" . }}
app.kubernetes.io/component: serving
{{- end }}
{{- end }}

{{/* Inference API the batch job and the helm test call, from the same namespace. */}}
{{- define "refund-sorter.inferenceUrl" -}}
{{- printf "http://%s:8080" (include "refund-sorter.servingName" .) }}
{{- end }}

{{/* The results store and the object store, as the nightly job and the review page both read them, and batch.env. */}}
{{- define "refund-sorter.storeEnv" -}}
{{- $batch := .Values.batch -}}
- name: REFUND_STORE
  value: {{ $batch.store.url | quote }}
{{- with $batch.store.inboxPrefix }}
- name: REFUND_INBOX_PREFIX
  value: {{ . | quote }}
{{- end }}
- name: REFUND_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ $batch.database.existingSecret }}
      key: {{ $batch.database.urlKey }}
{{- include "refund-sorter.objectStoreEnv" . }}
{{- range $name, $value := $batch.env }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{- end }}

{{/* The object store's endpoint and credentials (batch.store): the night, the review page, the serving pods'
model fetch and the retraining job reach the photos and the model registry with them. */}}
{{- define "refund-sorter.objectStoreEnv" -}}
{{- $batch := .Values.batch -}}
{{- with $batch.store.existingSecret }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $batch.store.accessKeyIdKey }}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $batch.store.secretAccessKeyKey }}
{{- end }}
{{- with $batch.store.endpoint }}
- name: AWS_ENDPOINT_URL
  value: {{ . | quote }}
{{- end }}
{{- with $batch.store.region }}
- name: AWS_REGION
  value: {{ . | quote }}
{{- end }}
{{- if $batch.store.allowHttp }}
- name: AWS_ALLOW_HTTP
  value: "true"
{{- end }}
{{- end }}

{{/* Container hardening shared by every container of the chart. */}}
{{- define "refund-sorter.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
{{- end }}

{{/* The images' user (Dockerfile); a high uid that no host account has. */}}
{{- define "refund-sorter.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Values that cannot work together; fail the rendering with what to change. */}}
{{- define "refund-sorter.validate" -}}
{{- $kserve := eq .Values.serving.mode "kserve" }}
{{- if and $kserve .Values.batch.enabled (not .Values.batch.torchserveUrl) }}
{{- fail "serving.mode=kserve: the batch job calls TorchServe's /predictions API, which KServe's predictor does not expose; set batch.torchserveUrl to a TorchServe inference API, or batch.enabled=false" }}
{{- end }}
{{- if and $kserve .Values.batch.scaleToZero.enabled }}
{{- fail "batch.scaleToZero scales this chart's TorchServe Deployment, which serving.mode=kserve does not create; KServe scales to zero itself (minReplicas: 0 in Serverless mode)" }}
{{- end }}
{{- if and .Values.batch.scaleToZero.enabled (gt (int .Values.batch.parallelism) 1) }}
{{- fail "batch.scaleToZero runs one pod (the first of several to finish would scale TorchServe away under the others): set batch.parallelism=1 or scaleToZero.enabled=false" }}
{{- end }}
{{- range $name, $value := .Values.batch.env }}
{{- if has $name (list "REFUND_STORE" "REFUND_INBOX_PREFIX" "REFUND_DATABASE_URL" "REFUND_SHARD_COUNT" "REFUND_TORCHSERVE_URL" "REFUND_SCALE_DEPLOYMENT" "REFUND_SCALE_REPLICAS" "REFUND_SCALE_TIMEOUT") }}
{{- fail (printf "batch.env.%s: the chart sets this variable itself from batch.store, batch.database, batch.torchserveUrl, batch.parallelism or batch.scaleToZero; set the value there" $name) }}
{{- end }}
{{- end }}
{{- if and .Values.serving.autoscaling.enabled (gt (int .Values.serving.autoscaling.minReplicas) (int .Values.serving.autoscaling.maxReplicas)) }}
{{- fail "serving.autoscaling.minReplicas must not exceed serving.autoscaling.maxReplicas" }}
{{- end }}
{{- end }}
