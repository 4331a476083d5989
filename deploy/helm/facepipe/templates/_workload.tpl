{{/*
Objects every facepipe component gets. Each template takes
(dict "root" $ "name" "<component>" "c" <facepipe.component>).
*/}}

{{/* The component's FACEPIPE_* environment as a YAML map of strings.
Services listen on loopback unless told otherwise; in a pod they must listen on every interface. */}}
{{- define "facepipe.env" -}}
{{- $root := .root }}
{{- $v := $root.Values }}
{{- $c := .c }}
{{- $env := dict
  "FACEPIPE_GRPC_HOST" "0.0.0.0"
  "FACEPIPE_HTTP_PORT" (add $c.port 1000 | toString)
  "FACEPIPE_LOG_LEVEL" $v.config.logLevel
  "FACEPIPE_NATS_URL" (include "facepipe.natsUrl" $root)
  "FACEPIPE_OBJECT_STORE" $v.objectStore
  "FACEPIPE_VECTOR_STORE" $v.vectorStore
  "FACEPIPE_ALLOW_PRIVATE_NETWORKS" (toString $v.config.allowPrivateNetworks)
}}
{{- if eq $v.objectStore "s3" }}
{{- $_ := set $env "FACEPIPE_S3_ENDPOINT" (include "facepipe.s3Endpoint" $root) }}
{{- $_ := set $env "FACEPIPE_S3_SECURE" (toString $v.external.s3.secure) }}
{{- with $v.external.s3.region }}
{{- $_ := set $env "FACEPIPE_S3_REGION" . }}
{{- end }}
{{- else }}
{{- $_ := set $env "FACEPIPE_OBJECT_DIR" "/srv/facepipe/objects" }}
{{- end }}
{{- if eq $v.vectorStore "qdrant" }}
{{- $_ := set $env "FACEPIPE_QDRANT_URL" (include "facepipe.qdrantUrl" $root) }}
{{- end }}
{{- with include "facepipe.otlpEndpoint" $root }}
{{- $_ := set $env "FACEPIPE_OTLP_ENDPOINT" . }}
{{- end }}
{{- if $c.models }}
{{- $_ := set $env "FACEPIPE_MODEL_PACK" $v.models.pack }}
{{- $_ := set $env "FACEPIPE_MODELS_DIR" "/opt/facepipe/models" }}
{{- end }}
{{- if $c.persistence.enabled }}
{{- $_ := set $env "FACEPIPE_HOME" "/var/lib/facepipe" }}
{{- end }}
{{- $_ := set $env "FACEPIPE_SERVICE_KEY_FILE" "/etc/facepipe/keys/service.key" }}
{{- /* The recognizer enrols from a person's faces through the persons service, when the release runs one. */}}
{{- if and (eq .name "recognizer") (has "persons" (include "facepipe.components" $root | fromYamlArray)) }}
{{- $persons := include "facepipe.component" (dict "root" $root "name" "persons") | fromYaml }}
{{- $_ := set $env "FACEPIPE_RECOGNIZER_PERSONS_ADDR" (printf "%s:%v" (include "facepipe.componentName" (dict "root" $root "name" "persons")) $persons.port) }}
{{- end }}
{{- if $v.natsCredentials.existingSecret }}
{{- /* The URL carries the component's NATS user: it comes from the Secret, not the ConfigMap. */}}
{{- $_ := unset $env "FACEPIPE_NATS_URL" }}
{{- end }}
{{- if $v.tls.enabled }}
{{- $_ := set $env "FACEPIPE_TLS_CERT" "/etc/facepipe/tls/tls.crt" }}
{{- $_ := set $env "FACEPIPE_TLS_KEY" "/etc/facepipe/tls/tls.key" }}
{{- $_ := set $env "FACEPIPE_TLS_CA" "/etc/facepipe/tls/ca.crt" }}
{{- $_ := set $env "FACEPIPE_TLS_CLIENT_AUTH" $v.tls.clientAuth }}
{{- end }}
{{- if $v.tls.nats.enabled }}
{{- $_ := set $env "FACEPIPE_NATS_TLS_CA" "/etc/facepipe/tls/ca.crt" }}
{{- if $v.tls.nats.clientCertificate }}
{{- $_ := set $env "FACEPIPE_NATS_TLS_CERT" "/etc/facepipe/tls/tls.crt" }}
{{- $_ := set $env "FACEPIPE_NATS_TLS_KEY" "/etc/facepipe/tls/tls.key" }}
{{- end }}
{{- end }}
{{- if eq .name "persons" }}
{{- $indexer := include "facepipe.component" (dict "root" $root "name" "indexer") | fromYaml }}
{{- $_ := set $env "FACEPIPE_PERSONS_INDEXER_ADDR" (printf "%s:%v" (include "facepipe.componentName" (dict "root" $root "name" "indexer")) $indexer.port) }}
{{- end }}
{{- if and $v.inferenceNodes.enabled (has .name $v.inferenceNodes.clients) }}
{{- $_ := set $env "FACEPIPE_INFERENCE_NODES" (include "facepipe.inferenceNodes" $root) }}
{{- end }}
{{- $providers := $c.providers | default $v.config.providers }}
{{- if $providers }}
{{- $_ := set $env "FACEPIPE_PROVIDERS" $providers }}
{{- end }}
{{- range $key, $name := dict "maxBatch" "FACEPIPE_MAX_BATCH" "maxWaitMs" "FACEPIPE_MAX_WAIT_MS" "maxInflight" "FACEPIPE_MAX_INFLIGHT" "dedupMaxHamming" "DEDUP_MAX_HAMMING" "enableGlobalDedup" "ENABLE_GLOBAL_DEDUP" }}
{{- $value := index $v.config $key }}
{{- if not (kindIs "invalid" $value) }}
{{- $_ := set $env $name (toString $value) }}
{{- end }}
{{- end }}
{{- range $key, $value := merge (deepCopy $c.env) $v.config.extraEnv }}
{{- $_ := set $env $key (toString $value) }}
{{- end }}
{{- toYaml $env }}
{{- end }}

{{- define "facepipe.configmap" -}}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ include "facepipe.componentName" . }}
  labels:
    {{- include "facepipe.labels" . | nindent 4 }}
data:
  {{- range $key, $value := include "facepipe.env" . | fromYaml }}
  {{ $key }}: {{ $value | quote }}
  {{- end }}
{{- end }}

{{- define "facepipe.serviceaccount" -}}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ include "facepipe.componentName" . }}
  labels:
    {{- include "facepipe.labels" . | nindent 4 }}
# The services never call the Kubernetes API.
automountServiceAccountToken: false
{{- end }}

{{- define "facepipe.service" -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "facepipe.componentName" . }}
  labels:
    {{- include "facepipe.labels" . | nindent 4 }}
  {{- with .c.service.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  {{- if eq .name "node" }}
  # Headless: DNS returns every node pod, so clients spread calls over them.
  clusterIP: None
  {{- else }}
  type: {{ .c.service.type }}
  {{- end }}
  selector:
    {{- include "facepipe.selectorLabels" . | nindent 4 }}
  ports:
    - name: grpc
      port: {{ .c.port }}
      targetPort: grpc
      protocol: TCP
      {{- if not .root.Values.tls.enabled }}
      appProtocol: kubernetes.io/h2c
      {{- end }}
      {{- if and (eq .c.service.type "NodePort") .c.service.nodePort (ne .name "node") }}
      nodePort: {{ .c.service.nodePort }}
      {{- end }}
    - name: metrics
      port: {{ add .c.port 1000 }}
      targetPort: metrics
      protocol: TCP
      appProtocol: http
{{- end }}

{{- define "facepipe.pvc" -}}
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: {{ include "facepipe.componentName" . }}-data
  labels:
    {{- include "facepipe.labels" . | nindent 4 }}
  annotations:
    # Data outlives `helm uninstall`; delete the claim by hand to drop it.
    helm.sh/resource-policy: keep
spec:
  accessModes: [ReadWriteOnce]
  {{- with .c.persistence.storageClass }}
  storageClassName: {{ . }}
  {{- end }}
  resources:
    requests:
      storage: {{ .c.persistence.size }}
{{- end }}

{{- define "facepipe.podSecurityContext" -}}
{{- if eq .c.os "windows" }}
runAsNonRoot: true
windowsOptions:
  runAsUserName: ContainerUser
{{- else }}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end }}
{{- end }}

{{- define "facepipe.containerSecurityContext" -}}
{{- if eq .c.os "windows" }}
runAsNonRoot: true
{{- else }}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end }}
{{- end }}

{{- define "facepipe.deployment" -}}
{{- $root := .root }}
{{- $c := .c }}
{{- $env := include "facepipe.env" . }}
{{- $s3 := include "facepipe.s3CredentialsRef" $root | fromYaml }}
{{- $qdrantKey := include "facepipe.qdrantApiKeyRef" $root | fromYaml }}
{{- $natsAuth := include "facepipe.natsAuthSecret" $root -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "facepipe.componentName" . }}
  labels:
    {{- include "facepipe.labels" . | nindent 4 }}
spec:
  {{- if not (or $c.autoscaling.enabled $c.keda) }}
  replicas: {{ $c.replicas }}
  {{- end }}
  revisionHistoryLimit: 5
  strategy:
    {{- if $c.persistence.enabled }}
    # The old pod must release the ReadWriteOnce volume first.
    type: Recreate
    {{- else }}
    type: RollingUpdate
    rollingUpdate:
      maxSurge: 1
      maxUnavailable: 0
    {{- end }}
  selector:
    matchLabels:
      {{- include "facepipe.selectorLabels" . | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "facepipe.labels" . | nindent 8 }}
        {{- with $c.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        checksum/config: {{ $env | sha256sum }}
        {{- if $root.Values.metrics.podAnnotations }}
        prometheus.io/scrape: "true"
        prometheus.io/port: {{ add $c.port 1000 | quote }}
        prometheus.io/path: /metrics
        {{- end }}
        {{- with $c.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ include "facepipe.componentName" . }}
      automountServiceAccountToken: false
      # Service links would inject FACEPIPE_*_PORT variables that look like settings.
      enableServiceLinks: false
      terminationGracePeriodSeconds: {{ $c.terminationGracePeriodSeconds }}
      {{- if eq $c.os "windows" }}
      os:
        name: windows
      {{- end }}
      {{- with $c.runtimeClassName }}
      runtimeClassName: {{ . }}
      {{- end }}
      {{- with $c.priorityClassName }}
      priorityClassName: {{ . }}
      {{- end }}
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        {{- include "facepipe.podSecurityContext" . | trim | nindent 8 }}
      {{- $pullModels := and $c.models (eq $root.Values.models.source "pull") }}
      {{- $provision := and $natsAuth (ne .name "node") }}
      {{- if or $pullModels $provision }}
      initContainers:
      {{- end }}
      {{- if $provision }}
        # The streams, consumers and KV buckets, made or updated as the supervisor user:
        # the service's own user may not.
        - name: topology
          image: {{ include "facepipe.image" . }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          command: [facepipe, provision]
          envFrom:
            - configMapRef:
                name: {{ include "facepipe.componentName" . }}
          env:
            - name: FACEPIPE_NATS_USER
              value: supervisor
            - name: FACEPIPE_NATS_PASSWORD
              valueFrom:
                secretKeyRef: {name: {{ $natsAuth }}, key: supervisor}
          resources:
            requests: {cpu: 50m, memory: 128Mi}
            limits: {memory: 512Mi}
          securityContext:
            {{- include "facepipe.containerSecurityContext" . | trim | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
      {{- end }}
      {{- if $pullModels }}
        - name: models
          image: {{ include "facepipe.image" . }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          command: [facepipe, models, pull, {{ $root.Values.models.pack | quote }}]
          env:
            - name: FACEPIPE_HOME
              value: /var/lib/facepipe
          resources:
            requests: {cpu: 100m, memory: 256Mi}
            limits: {memory: 1Gi}
          securityContext:
            {{- include "facepipe.containerSecurityContext" . | trim | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
            - name: models
              mountPath: /var/lib/facepipe/models
      {{- end }}
      containers:
        - name: {{ .name }}
          image: {{ include "facepipe.image" . }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          args: ["--port", {{ $c.port | quote }}]
          ports:
            - name: grpc
              containerPort: {{ $c.port }}
              protocol: TCP
            - name: metrics
              containerPort: {{ add $c.port 1000 }}
              protocol: TCP
          envFrom:
            - configMapRef:
                name: {{ include "facepipe.componentName" . }}
          env:
            - name: POD_NAME
              valueFrom: {fieldRef: {fieldPath: metadata.name}}
            - name: POD_NAMESPACE
              valueFrom: {fieldRef: {fieldPath: metadata.namespace}}
            - name: OTEL_RESOURCE_ATTRIBUTES
              value: k8s.pod.name=$(POD_NAME),k8s.namespace.name=$(POD_NAMESPACE)
            {{- with $root.Values.natsCredentials.existingSecret }}
            - name: FACEPIPE_NATS_URL
              valueFrom:
                secretKeyRef: {name: {{ . }}, key: {{ $.name }}}
            {{- end }}
            {{- if $c.models }}
            # One ONNX Runtime thread per requested core (rounded up), not one per node CPU.
            - name: FACEPIPE_INTRA_OP_THREADS
              valueFrom:
                resourceFieldRef:
                  containerName: {{ .name }}
                  resource: requests.cpu
            {{- end }}
            {{- /* Inference nodes only run models: no store credentials. */}}
            {{- if and (eq $root.Values.objectStore "s3") $s3 (ne .name "node") }}
            - name: FACEPIPE_S3_ACCESS_KEY
              valueFrom:
                secretKeyRef: {name: {{ $s3.name }}, key: {{ $s3.accessKey }}}
            - name: FACEPIPE_S3_SECRET_KEY
              valueFrom:
                secretKeyRef: {name: {{ $s3.name }}, key: {{ $s3.secretKey }}}
            {{- end }}
            {{- if and $natsAuth (ne .name "node") }}
            # Its own NATS user: permissions over its own subjects only.
            - name: FACEPIPE_NATS_USER
              value: {{ .name }}
            - name: FACEPIPE_NATS_PASSWORD
              valueFrom:
                secretKeyRef: {name: {{ $natsAuth }}, key: {{ .name }}}
            {{- end }}
            {{- if and (eq $root.Values.vectorStore "qdrant") $qdrantKey (ne .name "node") }}
            - name: FACEPIPE_QDRANT_API_KEY
              valueFrom:
                secretKeyRef: {name: {{ $qdrantKey.name }}, key: {{ $qdrantKey.key }}}
            {{- end }}
          {{- if $root.Values.tls.enabled }}
          # Kubelet's gRPC probes cannot talk TLS: the plain HTTP port answers instead,
          # /readyz once models are loaded and dependencies connected.
          startupProbe:
            httpGet:
              path: /readyz
              port: metrics
            periodSeconds: 5
            timeoutSeconds: {{ $c.probes.timeoutSeconds }}
            failureThreshold: {{ $c.probes.startupFailureThreshold }}
          livenessProbe:
            httpGet:
              path: /healthz
              port: metrics
          {{- else }}
          # SERVING on grpc.health.v1 once models are loaded and dependencies connected.
          startupProbe:
            grpc:
              port: {{ $c.port }}
            periodSeconds: 5
            timeoutSeconds: {{ $c.probes.timeoutSeconds }}
            failureThreshold: {{ $c.probes.startupFailureThreshold }}
          livenessProbe:
            grpc:
              port: {{ $c.port }}
          {{- end }}
            periodSeconds: {{ $c.probes.periodSeconds }}
            timeoutSeconds: {{ $c.probes.timeoutSeconds }}
            failureThreshold: {{ $c.probes.failureThreshold }}
          # /readyz also checks NATS, the stores and the models.
          readinessProbe:
            httpGet:
              path: /readyz
              port: metrics
            periodSeconds: {{ $c.probes.periodSeconds }}
            timeoutSeconds: {{ $c.probes.timeoutSeconds }}
            failureThreshold: {{ $c.probes.failureThreshold }}
          resources:
            {{- toYaml $c.resources | nindent 12 }}
          securityContext:
            {{- include "facepipe.containerSecurityContext" . | trim | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
            - name: service-key
              mountPath: /etc/facepipe/keys
              readOnly: true
            {{- if include "facepipe.tlsMounted" $root }}
            - name: tls
              mountPath: /etc/facepipe/tls
              readOnly: true
            {{- end }}
            {{- if and $c.models (ne $root.Values.models.source "image") }}
            - name: models
              mountPath: /opt/facepipe/models
              subPath: {{ $root.Values.models.pack }}
              readOnly: true
            {{- end }}
            {{- if $c.persistence.enabled }}
            - name: data
              mountPath: /var/lib/facepipe
            {{- end }}
            {{- if eq $root.Values.objectStore "local" }}
            - name: objects
              mountPath: /srv/facepipe/objects
            {{- end }}
            {{- if $c.shmSize }}
            - name: shm
              mountPath: /dev/shm
            {{- end }}
      volumes:
        - name: tmp
          emptyDir:
            sizeLimit: 1Gi
        # Readable by the service's group only (fsGroup).
        - name: service-key
          secret:
            secretName: {{ include "facepipe.serviceKeySecret" $root }}
            defaultMode: 288  # 0440
            items:
              - key: {{ $root.Values.serviceKey.key }}
                path: service.key
        {{- if include "facepipe.tlsMounted" $root }}
        - name: tls
          secret:
            secretName: {{ include "facepipe.tlsSecret" . }}
            defaultMode: 288  # 0440
        {{- end }}
        {{- if and $c.models (eq $root.Values.models.source "pull") }}
        - name: models
          emptyDir:
            sizeLimit: {{ $root.Values.models.sizeLimit }}
        {{- else if and $c.models (eq $root.Values.models.source "volume") }}
        - name: models
          persistentVolumeClaim:
            claimName: {{ required "models.source=volume needs models.existingClaim" $root.Values.models.existingClaim }}
            readOnly: true
        {{- end }}
        {{- if $c.persistence.enabled }}
        - name: data
          persistentVolumeClaim:
            claimName: {{ include "facepipe.componentName" . }}-data
        {{- end }}
        {{- if eq $root.Values.objectStore "local" }}
        - name: objects
          persistentVolumeClaim:
            claimName: {{ required "objectStore=local needs localObjectStore.existingClaim (ReadWriteMany)" $root.Values.localObjectStore.existingClaim }}
        {{- end }}
        {{- if $c.shmSize }}
        - name: shm
          emptyDir:
            medium: Memory
            sizeLimit: {{ $c.shmSize }}
        {{- end }}
      {{- with $c.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $c.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $c.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- if $c.topologySpread }}
      topologySpreadConstraints:
        - maxSkew: 1
          topologyKey: kubernetes.io/hostname
          whenUnsatisfiable: ScheduleAnyway
          labelSelector:
            matchLabels:
              {{- include "facepipe.selectorLabels" . | nindent 14 }}
      {{- end }}
{{- end }}

{{- define "facepipe.hpa" -}}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ include "facepipe.componentName" . }}
  labels:
    {{- include "facepipe.labels" . | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ include "facepipe.componentName" . }}
  minReplicas: {{ .c.autoscaling.minReplicas }}
  maxReplicas: {{ .c.autoscaling.maxReplicas }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ .c.autoscaling.targetCPUUtilizationPercentage }}
  behavior:
    # Model loading makes new pods slow to help; do not flap.
    scaleDown:
      stabilizationWindowSeconds: 300
{{- end }}

{{- define "facepipe.scaledobject" -}}
{{- $root := .root -}}
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  name: {{ include "facepipe.componentName" . }}
  labels:
    {{- include "facepipe.labels" . | nindent 4 }}
spec:
  scaleTargetRef:
    name: {{ include "facepipe.componentName" . }}
  minReplicaCount: {{ .c.autoscaling.minReplicas }}
  maxReplicaCount: {{ .c.autoscaling.maxReplicas }}
  pollingInterval: {{ $root.Values.keda.pollingInterval }}
  cooldownPeriod: {{ $root.Values.keda.cooldownPeriod }}
  triggers:
    - type: nats-jetstream
      metadata:
        natsServerMonitoringEndpoint: {{ include "facepipe.natsMonitoringEndpoint" $root | quote }}
        account: {{ $root.Values.keda.account | quote }}
        stream: {{ $root.Values.keda.stream | quote }}
        consumer: {{ .c.consumer | quote }}
        lagThreshold: {{ .c.lagThreshold | quote }}
        activationLagThreshold: {{ $root.Values.keda.activationLagThreshold | quote }}
{{- end }}

{{- define "facepipe.pdb" -}}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "facepipe.componentName" . }}
  labels:
    {{- include "facepipe.labels" . | nindent 4 }}
spec:
  {{- if hasKey .c.pdb "minAvailable" }}
  minAvailable: {{ .c.pdb.minAvailable }}
  {{- else }}
  maxUnavailable: {{ .c.pdb.maxUnavailable }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "facepipe.selectorLabels" . | nindent 6 }}
{{- end }}

{{/* Every object of one component, as one multi-document YAML. */}}
{{- define "facepipe.workload" -}}
{{- if .c.persistence.enabled }}
---
{{ include "facepipe.pvc" . }}
{{- end }}
---
{{ include "facepipe.serviceaccount" . }}
---
{{ include "facepipe.configmap" . }}
---
{{ include "facepipe.service" . }}
---
{{ include "facepipe.deployment" . }}
{{- if .c.keda }}
---
{{ include "facepipe.scaledobject" . }}
{{- else if .c.autoscaling.enabled }}
---
{{ include "facepipe.hpa" . }}
{{- end }}
{{- if .c.pdb.enabled }}
---
{{ include "facepipe.pdb" . }}
{{- end }}
{{- end }}
