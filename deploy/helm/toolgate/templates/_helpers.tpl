{{/*
Names, labels, and the pieces both modes share. The containers and their settings are the
Kustomize kit's (deploy/kubernetes/deployment.yaml and sidecars/sidecars.yaml explain each);
tests/test_helm.py fails when a rendering differs from the kit's.
*/}}

{{- define "toolgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "toolgate.fullname" -}}
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

{{- define "toolgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "toolgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "toolgate.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "toolgate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "toolgate.image" -}}
{{- $tag := .image.tag | default .default -}}
{{ .image.repository }}:{{ $tag }}
{{- end }}

{{/* The policy's ConfigMap: the chart's, or the one named by existingPolicyConfigMap. */}}
{{- define "toolgate.policyConfigMap" -}}
{{- .Values.existingPolicyConfigMap | default (printf "%s-policy" (include "toolgate.fullname" .)) }}
{{- end }}

{{/* The policy's text: values.policy (JSON text, or a mapping), else files/policy.json. */}}
{{- define "toolgate.policyText" -}}
{{- if kindIs "string" .Values.policy }}
{{- .Values.policy | default (.Files.Get "files/policy.json") }}
{{- else }}
{{- .Values.policy | toPrettyJson }}
{{- end }}
{{- end }}

{{/* The Redis's own name label, so that the toolgate pods' selector does not select it. */}}
{{- define "toolgate.redisSelectorLabels" -}}
app.kubernetes.io/name: {{ include "toolgate.name" . }}-redis
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "toolgate.redisLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "toolgate.redisSelectorLabels" . }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "toolgate.redisName" -}}
{{- printf "%s-redis" (include "toolgate.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The Redis URL the values give (the chart's Redis, or store.url); "" for a Secret's. */}}
{{- define "toolgate.storeUrl" -}}
{{- if .Values.store.redis.enabled }}
{{- printf "redis://%s:6379/0" (include "toolgate.redisName" .) }}
{{- else if .Values.store.url }}
{{- .Values.store.url }}
{{- end }}
{{- end }}

{{/* Whether counters are shared in Redis: "true" or "". */}}
{{- define "toolgate.sharedStore" -}}
{{- if or .Values.store.redis.enabled .Values.store.url .Values.store.existingSecret }}true{{ end }}
{{- end }}

{{- define "toolgate.replicas" -}}
{{- $shared := include "toolgate.sharedStore" . }}
{{- $replicas := .Values.replicas | default (ternary 3 1 (eq $shared "true")) | int }}
{{- if and (gt $replicas 1) (ne $shared "true") }}
{{- fail "replicas > 1 needs counters in Redis (store.redis.enabled, store.url or store.existingSecret): each replica would allow a limit's max on its own" }}
{{- end }}
{{- $replicas }}
{{- end }}

{{- define "toolgate.networkPolicy" -}}
{{- if kindIs "invalid" .Values.networkPolicy.enabled }}{{ if eq .Values.mode "sidecars" }}true{{ end }}
{{- else if .Values.networkPolicy.enabled }}true{{ end }}
{{- end }}

{{- define "toolgate.checkMode" -}}
{{- if not (has .Values.mode (list "allInOne" "sidecars")) }}
{{- fail (printf "mode must be allInOne or sidecars, not %q" .Values.mode) }}
{{- end }}
{{- if and .Values.envoyModule.enabled (ne .Values.mode "sidecars") }}
{{- fail "envoyModule.enabled: mode sidecars only (Envoy decides with the module beside your MCP server's containers)" }}
{{- end }}
{{- if and (eq .Values.mode "sidecars") (not .Values.existingPolicyConfigMap) (not .Values.policy) }}
{{- fail "mode sidecars: the policy is yours: set policy (--set-file policy=policy.json) or existingPolicyConfigMap" }}
{{- end }}
{{- if and .Values.store.redis.enabled (or .Values.store.url .Values.store.existingSecret) }}
{{- fail "store: set one of redis.enabled, url and existingSecret" }}
{{- end }}
{{- if and .Values.store.url .Values.store.existingSecret }}
{{- fail "store: set one of redis.enabled, url and existingSecret" }}
{{- end }}
{{- end }}

{{/* The restricted container settings (the kit's). */}}
{{- define "toolgate.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities: {drop: [ALL]}
{{- end }}

{{/* toolgate's `serve` arguments: decisions on loopback, metrics at $metrics. */}}
{{- define "toolgate.serveArgs" -}}
{{- $ := .root -}}
- serve
- --policy
- /etc/toolgate/policy.json
- --listen
- 127.0.0.1:9191
- --metrics-listen
- {{ .metrics }}
- --reload-interval
- {{ $.Values.toolgate.reloadInterval | quote }}
- --log-format
- {{ $.Values.toolgate.logFormat }}
{{- if include "toolgate.sharedStore" $ }}
- --store
{{- with include "toolgate.storeUrl" $ }}
- {{ . | quote }}
{{- else }}
- $(TOOLGATE_STORE)
{{- end }}
- --store-unavailable
- {{ $.Values.store.unavailable }}
{{- with $.Values.store.timeoutMs }}
- --store-timeout-ms
- {{ . | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/* toolgate's environment: the store URL from a Secret (for `$(TOOLGATE_STORE)`), and
toolgate.options, each as its TOOLGATE_* variable (what `toolgate serve` reads for an option
its command line does not give). A whole number is written without a decimal point. */}}
{{- define "toolgate.env" -}}
{{- $secret := and .Values.store.existingSecret (not .Values.store.redis.enabled) (not .Values.store.url) }}
{{- if or $secret .Values.toolgate.options }}
env:
{{- if $secret }}
  - name: TOOLGATE_STORE
    valueFrom:
      secretKeyRef: {name: {{ .Values.store.existingSecret }}, key: {{ .Values.store.existingSecretKey }}}
{{- end }}
{{- range $name, $value := .Values.toolgate.options }}
  - name: {{ printf "TOOLGATE_%s" ($name | upper | replace "-" "_") }}
    value: {{ ternary ($value | int64 | toString) ($value | toString) (and (kindIs "float64" $value) (eq (floor $value) $value)) | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/* toolgate's probes, preStop, resources: the same in both modes. */}}
{{- define "toolgate.toolgateRuntime" -}}
readinessProbe:
  exec:
    command: [toolgate, health, --target, "127.0.0.1:9191", --service, toolgate.v1.Decider]
  periodSeconds: 5
  timeoutSeconds: 5
livenessProbe:
  exec:
    command: [toolgate, health, --target, "127.0.0.1:9191", --service, ""]
  periodSeconds: 10
  timeoutSeconds: 5
  failureThreshold: 3
lifecycle:
  preStop: {sleep: {seconds: 5}}
resources:
  {{- toYaml .Values.toolgate.resources | nindent 2 }}
{{- end }}

{{/* Envoy's options after its config: workers, no hot restart, log level. */}}
{{- define "toolgate.envoyOptions" -}}
- --concurrency
- {{ .Values.envoy.concurrency | quote }}
- --disable-hot-restart
- --log-level
- {{ .Values.envoy.logLevel }}
{{- end }}

{{/* Envoy's bootstrap, the kit's: the base's, the sidecars component's, or the module
component's. */}}
{{- define "toolgate.envoyFile" -}}
{{- if .Values.envoyModule.enabled }}files/envoy-module.yaml
{{- else if eq .Values.mode "sidecars" }}files/envoy-sidecars.yaml
{{- else }}files/envoy.yaml
{{- end }}
{{- end }}

{{/* Envoy's bootstrap as the pod mounts it: the kit's file, and with envoyModule and a Redis
store, the module's filter given the sidecar's store settings, so that both count in Redis (one
counter table: the calls the sidecar decides for approvals and the module's). A Secret's URL
cannot be written into this ConfigMap: refused. */}}
{{- define "toolgate.envoyBootstrap" -}}
{{- $text := .Files.Get (include "toolgate.envoyFile" .) }}
{{- if and .Values.envoyModule.enabled (include "toolgate.sharedStore" .) }}
{{- $url := include "toolgate.storeUrl" . }}
{{- if not $url }}
{{- fail "envoyModule with store.existingSecret: the module reads its Redis URL from Envoy's bootstrap, a ConfigMap; use store.url or store.redis.enabled" }}
{{- end }}
{{- $settings := dict "store" $url "store_unavailable" .Values.store.unavailable }}
{{- with .Values.store.timeoutMs }}
{{- $_ := set $settings "store_timeout_ms" (. | int64) }}
{{- end }}
{{- $boot := $text | fromYaml }}
{{- range $listener := $boot.static_resources.listeners }}
{{- range $chain := $listener.filter_chains }}
{{- range $network := $chain.filters }}
{{- range $http := (dig "typed_config" "http_filters" list $network) }}
{{- if eq $http.name "envoy.filters.http.dynamic_modules" }}
{{- $_ := set $http.typed_config.filter_config.value "settings" $settings }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- printf "%s\n" ($boot | toYaml) }}
{{- else }}
{{- $text }}
{{- end }}
{{- end }}

{{/* The pod's checksum of what Envoy reads at start only: a change rolls the pods. */}}
{{- define "toolgate.envoyChecksum" -}}
{{- include "toolgate.envoyBootstrap" . | sha256sum }}
{{- end }}

{{/*
The two sidecar containers of mode sidecars, as a list of containers: include them in a pod
template's `containers` (README.md, "Sidecars in your own chart"), with the chart's context
(`.Subcharts.toolgate` from a parent chart).
*/}}
{{- define "toolgate.sidecars.containers" -}}
- name: toolgate-envoy
  image: {{ include "toolgate.image" (dict "image" .Values.images.envoy "default" "") }}
  command: [/usr/local/bin/envoy]
  args:
    - -c
    - /etc/toolgate-envoy/envoy.yaml
    - --config-yaml
    - |-
      static_resources:
        clusters:
          - name: mcp
            type: STATIC
            connect_timeout: 1s
            load_assignment:
              cluster_name: mcp
              endpoints:
                - lb_endpoints:
                    - endpoint:
                        address:
                          socket_address:
                            address: 127.0.0.1
                            port_value: {{ .Values.sidecars.mcpPort | int }}
    {{- include "toolgate.envoyOptions" . | nindent 4 }}
  {{- if .Values.envoyModule.enabled }}
  env:
    - {name: ENVOY_DYNAMIC_MODULES_SEARCH_PATH, value: /var/lib/toolgate-envoy}
  {{- end }}
  ports:
    - {name: toolgate-mcp, containerPort: 10000, protocol: TCP}
    - {name: toolgate-probes, containerPort: 9902, protocol: TCP}
  readinessProbe:
    httpGet: {path: /ready, port: toolgate-probes}
    periodSeconds: 5
  livenessProbe:
    httpGet: {path: /ready, port: toolgate-probes}
    periodSeconds: 10
    failureThreshold: 3
  lifecycle:
    preStop: {sleep: {seconds: 5}}
  resources:
    {{- $resources := deepCopy .Values.envoy.resources }}
    {{- if .Values.envoyModule.enabled }}
    {{- $resources = mergeOverwrite $resources (deepCopy .Values.envoyModule.envoyResources) }}
    {{- end }}
    {{- toYaml $resources | nindent 4 }}
  securityContext:
    runAsNonRoot: true
    runAsUser: 10001
    runAsGroup: 10001
    {{- include "toolgate.containerSecurity" . | nindent 4 }}
    seccompProfile: {type: RuntimeDefault}
  volumeMounts:
    {{- if .Values.envoyModule.enabled }}
    - {name: toolgate-envoy-module, mountPath: /var/lib/toolgate-envoy, readOnly: true}
    - {name: toolgate-policy, mountPath: /etc/toolgate, readOnly: true}
    {{- end }}
    - {name: toolgate-envoy, mountPath: /etc/toolgate-envoy, readOnly: true}
- name: toolgate
  image: {{ include "toolgate.image" (dict "image" .Values.images.toolgate "default" .Chart.AppVersion) }}
  args:
    {{- include "toolgate.serveArgs" (dict "root" . "metrics" "127.0.0.1:9464") | nindent 4 }}
  {{- with include "toolgate.env" . | trim }}{{ . | nindent 2 }}{{ end }}
  {{- include "toolgate.toolgateRuntime" . | nindent 2 }}
  securityContext:
    runAsNonRoot: true
    runAsUser: 10001
    runAsGroup: 10001
    {{- include "toolgate.containerSecurity" . | nindent 4 }}
    seccompProfile: {type: RuntimeDefault}
  volumeMounts:
    - {name: toolgate-policy, mountPath: /etc/toolgate, readOnly: true}
    - {name: toolgate-tmp, mountPath: /tmp}
{{- end }}

{{/* The sidecars' volumes, for a pod template's `volumes`. */}}
{{- define "toolgate.sidecars.volumes" -}}
- name: toolgate-policy
  configMap: {name: {{ include "toolgate.policyConfigMap" . }}}
- name: toolgate-envoy
  configMap: {name: {{ include "toolgate.fullname" . }}-envoy}
- name: toolgate-tmp
  emptyDir: {sizeLimit: 16Mi}
{{- if .Values.envoyModule.enabled }}
- name: toolgate-envoy-module
  emptyDir: {sizeLimit: 32Mi}
{{- end }}
{{- end }}

{{/* The sidecars' init containers, for a pod template's `initContainers`: with envoyModule, the
one that copies the toolgate image's module into the volume Envoy loads it from (written under
another name and renamed: an Envoy never maps half a file); else none ([]). */}}
{{- define "toolgate.sidecars.initContainers" -}}
{{- if .Values.envoyModule.enabled -}}
- name: toolgate-envoy-module
  image: {{ include "toolgate.image" (dict "image" .Values.images.toolgate "default" .Chart.AppVersion) }}
  command:
    - sh
    - -c
    - >-
      cp /opt/toolgate/envoy/libtoolgate.so /var/lib/toolgate-envoy/.libtoolgate.so.new
      && mv -f /var/lib/toolgate-envoy/.libtoolgate.so.new
      /var/lib/toolgate-envoy/libtoolgate.so
  resources:
    requests: {cpu: 10m, memory: 16Mi}
    limits: {cpu: 100m, memory: 32Mi}
  securityContext:
    runAsNonRoot: true
    runAsUser: 10001
    runAsGroup: 10001
    {{- include "toolgate.containerSecurity" . | nindent 4 }}
    seccompProfile: {type: RuntimeDefault}
  volumeMounts:
    - {name: toolgate-envoy-module, mountPath: /var/lib/toolgate-envoy}
{{- else -}}
[]
{{- end }}
{{- end }}

{{/* The labels a pod with the sidecars carries (the NetworkPolicy and the metrics Service
select it), and the annotation that rolls it when Envoy's config changes. */}}
{{- define "toolgate.sidecars.podLabels" -}}
toolgate/sidecars: enabled
{{- end }}

{{- define "toolgate.sidecars.podAnnotations" -}}
checksum/toolgate-envoy: {{ include "toolgate.envoyChecksum" . }}
{{- end }}
