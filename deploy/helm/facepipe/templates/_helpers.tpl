{{/* Names and labels. */}}

{{- define "facepipe.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "facepipe.fullname" -}}
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

{{/* <fullname>-<component>. Takes (dict "root" $ "name" "detector"). */}}
{{- define "facepipe.componentName" -}}
{{- printf "%s-%s" (include "facepipe.fullname" .root) .name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The name a bundled subchart gives its objects (its own fullname rule). Takes (dict "root" $ "chart" "nats"). */}}
{{- define "facepipe.dependencyName" -}}
{{- $values := index .root.Values .chart }}
{{- if $values.fullnameOverride }}
{{- $values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains .chart .root.Release.Name }}
{{- .root.Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .root.Release.Name .chart | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "facepipe.selectorLabels" -}}
app.kubernetes.io/name: {{ include "facepipe.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .name }}
{{- end }}

{{- define "facepipe.labels" -}}
{{ include "facepipe.selectorLabels" . }}
app.kubernetes.io/part-of: facepipe
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
{{- end }}

{{/* Backend endpoints: the external one when set, else the bundled subchart. */}}

{{- define "facepipe.natsUrl" -}}
{{- if .Values.external.nats.url }}
{{- .Values.external.nats.url }}
{{- else if .Values.nats.enabled }}
{{- $natsTls := not (empty (dig "tls" "secretName" "" .Values.nats)) }}
{{- if and $natsTls (not .Values.tls.nats.enabled) }}
{{- fail "nats.tls.secretName makes the bundled NATS serve TLS only: set tls.nats.enabled so that the services dial it with TLS" }}
{{- end }}
{{- if and .Values.tls.nats.enabled (not $natsTls) }}
{{- fail "tls.nats.enabled: the bundled NATS serves plain; set nats.tls.secretName (or external.nats.url)" }}
{{- end }}
{{- printf "%s://%s:4222" (ternary "tls" "nats" $natsTls) (include "facepipe.dependencyName" (dict "root" . "chart" "nats")) }}
{{- else }}
{{- fail "NATS: set external.nats.url or nats.enabled=true" }}
{{- end }}
{{- end }}

{{/* The Secret holding the NATS users' passwords, one key per user; empty: NATS without users. */}}
{{- define "facepipe.natsAuthSecret" -}}
{{- if .Values.external.nats.url }}
{{- .Values.external.nats.authSecret }}
{{- else if and .Values.nats.enabled (dig "auth" "enabled" true .Values.nats) }}
{{- printf "%s-auth" (include "facepipe.dependencyName" (dict "root" . "chart" "nats")) }}
{{- end }}
{{- end }}

{{- define "facepipe.natsMonitoringEndpoint" -}}
{{- if .Values.external.nats.monitoringEndpoint }}
{{- .Values.external.nats.monitoringEndpoint }}
{{- else if and .Values.nats.enabled (not .Values.external.nats.url) }}
{{- printf "%s.%s.svc:8222" (include "facepipe.dependencyName" (dict "root" . "chart" "nats")) .Release.Namespace }}
{{- else }}
{{- fail "KEDA reads consumer lag from the NATS monitoring port: set external.nats.monitoringEndpoint" }}
{{- end }}
{{- end }}

{{- define "facepipe.qdrantUrl" -}}
{{- if .Values.external.qdrant.url }}
{{- .Values.external.qdrant.url }}
{{- else if .Values.qdrant.enabled }}
{{- printf "http://%s:6333" (include "facepipe.dependencyName" (dict "root" . "chart" "qdrant")) }}
{{- else }}
{{- fail "vectorStore=qdrant: set external.qdrant.url or qdrant.enabled=true (or vectorStore=edge)" }}
{{- end }}
{{- end }}

{{/* Secret and key holding the Qdrant API key, as YAML {name, key}; empty when there is none. */}}
{{- define "facepipe.qdrantApiKeyRef" -}}
{{- if .Values.external.qdrant.existingSecret }}
name: {{ .Values.external.qdrant.existingSecret }}
key: {{ .Values.external.qdrant.apiKeyKey }}
{{- else if and .Values.qdrant.enabled (not .Values.external.qdrant.url) (dig "apiKey" "enabled" false .Values.qdrant) }}
name: {{ include "facepipe.dependencyName" (dict "root" . "chart" "qdrant") }}
key: api-key
{{- end }}
{{- end }}

{{- define "facepipe.s3Endpoint" -}}
{{- if .Values.external.s3.endpoint }}
{{- .Values.external.s3.endpoint }}
{{- else if .Values.minio.enabled }}
{{- printf "%s:9000" (include "facepipe.dependencyName" (dict "root" . "chart" "minio")) }}
{{- else }}
{{- fail "objectStore=s3: set external.s3.endpoint or minio.enabled=true" }}
{{- end }}
{{- end }}

{{/* Secret and keys holding the S3 credentials, as YAML {name, accessKey, secretKey}; empty when there is none. */}}
{{- define "facepipe.s3CredentialsRef" -}}
{{- if .Values.external.s3.existingSecret }}
name: {{ .Values.external.s3.existingSecret }}
accessKey: {{ .Values.external.s3.accessKeyKey }}
secretKey: {{ .Values.external.s3.secretKeyKey }}
{{- else if and .Values.minio.enabled (not .Values.external.s3.endpoint) }}
name: {{ include "facepipe.dependencyName" (dict "root" . "chart" "minio") }}
accessKey: root-user
secretKey: root-password
{{- end }}
{{- end }}

{{- define "facepipe.otlpEndpoint" -}}
{{- if .Values.config.otlpEndpoint }}
{{- .Values.config.otlpEndpoint }}
{{- else if .Values.otelCollector.enabled }}
{{- printf "http://%s:4317" (include "facepipe.componentName" (dict "root" . "name" "otel-collector")) }}
{{- end }}
{{- end }}

{{- define "facepipe.inferenceNodes" -}}
{{- $c := include "facepipe.component" (dict "root" . "name" "node") | fromYaml }}
{{- printf "%s:%v" (include "facepipe.componentName" (dict "root" . "name" "node")) $c.port }}
{{- end }}

{{/*
The effective settings of one component: serviceDefaults, then its own values
(services.<name>, or inferenceNodes for "node"), then what the deployment mode
forces. Returns YAML; callers use `fromYaml`. Takes (dict "root" $ "name" "detector").
*/}}
{{- define "facepipe.component" -}}
{{- $root := .root }}
{{- $own := ternary $root.Values.inferenceNodes (index $root.Values.services .name | default dict) (eq .name "node") }}
{{- $c := mergeOverwrite (deepCopy $root.Values.serviceDefaults) (deepCopy $own) }}
{{- /* Qdrant Edge: one process per shard folder, the indexer's faces and the recognizer's gallery. */}}
{{- if and (has .name (list "indexer" "recognizer")) (eq $root.Values.vectorStore "edge") }}
{{- $_ := set $c.persistence "enabled" true }}
{{- end }}
{{- if $c.persistence.enabled }}
{{- /* One writer per ReadWriteOnce volume. */}}
{{- $_ := set $c "replicas" 1 }}
{{- $_ := set $c.autoscaling "enabled" false }}
{{- $_ := set $c "consumer" "" }}
{{- end }}
{{- if not (hasKey $c "os") }}
{{- $_ := set $c "os" "linux" }}
{{- end }}
{{- $_ := set $c "keda" (and $root.Values.keda.enabled (ne $c.consumer "")) }}
{{- toYaml $c }}
{{- end }}

{{- define "facepipe.image" -}}
{{- $root := .root }}
{{- $repo := .c.image.repository }}
{{- if not $repo }}
{{- $repo = printf "%s/%s" $root.Values.image.repositoryPrefix .name }}
{{- if $root.Values.image.registry }}
{{- $repo = printf "%s/%s" $root.Values.image.registry $repo }}
{{- end }}
{{- end }}
{{- printf "%s:%s" $repo (.c.image.tag | default $root.Values.image.tag | default $root.Chart.AppVersion) }}
{{- end }}

{{/* Secret of the service credential. */}}
{{- define "facepipe.serviceKeySecret" -}}
{{- .Values.serviceKey.existingSecret | default (printf "%s-service-key" (include "facepipe.fullname" .)) }}
{{- end }}

{{/* Whether pods mount the TLS Secret: gRPC TLS, or NATS TLS. Takes the root context; "true" or "". */}}
{{- define "facepipe.tlsMounted" -}}
{{- if or .Values.tls.enabled .Values.tls.nats.enabled }}true{{ end }}
{{- end }}

{{/* The kubernetes.io/tls Secret of one component. Takes (dict "root" $ "name" ... "c" ...). */}}
{{- define "facepipe.tlsSecret" -}}
{{- .c.tlsSecret | default .root.Values.tls.secretName | required (printf "tls: set tls.secretName (a kubernetes.io/tls Secret with tls.crt, tls.key and ca.crt) or services.%s.tlsSecret" .name) }}
{{- end }}

{{/* The components the release runs, as a YAML list of names. */}}
{{- define "facepipe.components" -}}
{{- $names := list }}
{{- range $name, $_ := .Values.services }}
{{- $c := include "facepipe.component" (dict "root" $ "name" $name) | fromYaml }}
{{- if $c.enabled }}
{{- $names = append $names $name }}
{{- end }}
{{- end }}
{{- if .Values.inferenceNodes.enabled }}
{{- $names = append $names "node" }}
{{- end }}
{{- toYaml $names }}
{{- end }}

{{/* A NetworkPolicy peer: the pods of the given components. Takes (dict "root" $ "names" (list ...)). */}}
{{- define "facepipe.componentPeer" -}}
- podSelector:
    matchLabels:
      app.kubernetes.io/name: {{ include "facepipe.name" .root }}
      app.kubernetes.io/instance: {{ .root.Release.Name }}
    matchExpressions:
      - key: app.kubernetes.io/component
        operator: In
        values:
          {{- toYaml .names | nindent 10 }}
{{- end }}
