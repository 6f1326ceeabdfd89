{{/*
Shared pieces. Object names are fixed ("auditflow-<component>"); see values.yaml.
*/}}

{{/* Labels of every object: include "auditflow.labels" (dict "root" $ "component" "broker") */}}
{{- define "auditflow.labels" -}}
{{ include "auditflow.selectorLabels" . }}
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/part-of: auditflow
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end }}

{{/* The labels a selector matches on. */}}
{{- define "auditflow.selectorLabels" -}}
app.kubernetes.io/name: auditflow-{{ .component }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end }}

{{/* One of our images: include "auditflow.image" (dict "root" $ "component" "agent") */}}
{{- define "auditflow.image" -}}
{{- $tag := required "image.tag must be set to a release" .root.Values.image.tag | toString -}}
{{- if eq $tag "latest" -}}{{- fail "image.tag: pin a release, not latest" -}}{{- end -}}
{{- printf "%s/auditflow-%s:%s" .root.Values.image.registry .component $tag -}}
{{- end }}

{{/* A third-party image, which must carry a pinned tag. */}}
{{- define "auditflow.pinnedImage" -}}
{{- $parts := splitList ":" . -}}
{{- if or (lt (len $parts) 2) (eq (last $parts) "latest") -}}
{{- fail (printf "image %s: pin a tag, not latest" .) -}}
{{- end -}}
{{- . -}}
{{- end }}

{{/* Pod-level security context: include "auditflow.podSecurityContext" (dict "user" 10001 "group" 10001) */}}
{{- define "auditflow.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .user }}
runAsGroup: {{ .group }}
fsGroup: {{ .group }}
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Container-level security context, the same for every container. */}}
{{- define "auditflow.containerSecurityContext" -}}
allowPrivilegeEscalation: false
privileged: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Prometheus scrape annotations: include "auditflow.scrape" (dict "root" $ "port" 9100) */}}
{{- define "auditflow.scrape" -}}
{{- if .root.Values.scrapeAnnotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .port | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- end }}

{{/* URLs of the services, with the password taken from an earlier env var.
The AMQP URL is a component's own: include "auditflow.amqpUrl" (dict "root" $ "user" "broker") */}}
{{- define "auditflow.amqpUrl" -}}
{{- with .root.Values.rabbitmq -}}
amqp://{{ index .users $.user }}:$(RABBITMQ_PASSWORD)@{{ .host }}:{{ .port }}/{{ .vhost }}
{{- end -}}
{{- end }}
{{- define "auditflow.databaseUrl" -}}
{{- with .Values.postgres -}}
postgres://{{ .username }}:$(POSTGRES_PASSWORD)@{{ .host }}:{{ .port }}/{{ .database }}
{{- end -}}
{{- end }}
{{- define "auditflow.redisUrl" -}}
{{- with .Values.redis -}}
redis://:$(REDIS_PASSWORD)@{{ .host }}:{{ .port }}/0
{{- end -}}
{{- end }}

{{/* env entries reading a password from one of the Secrets. */}}
{{- define "auditflow.secretEnv" -}}
- name: {{ .env }}
  valueFrom:
    secretKeyRef:
      name: {{ .secret }}
      key: {{ .key }}
{{- end }}

{{/* The broker's credentials file: broker.offClusterCredentials, one `node:sha256:<hex>` line
each; a plaintext password (or anything else) fails the render, naming only the node. */}}
{{- define "auditflow.offClusterCredentials" -}}
{{- range .Values.broker.offClusterCredentials }}
{{- if not (regexMatch "^[A-Za-z0-9][A-Za-z0-9._-]*:sha256:[0-9a-f]{64}$" .) }}
{{- fail (printf "broker.offClusterCredentials: the line for %q is not `node:sha256:<64 lowercase hex>` (the SHA-256 of the node's password, never the password)" (regexReplaceAll ":.*$" . "")) }}
{{- end }}
{{ . }}
{{- end }}
{{- end }}

{{/* The broker's [mqtt.kubernetes] section: the agents' projected service-account tokens are
checked against the cluster's key set (ConfigMap auditflow-cluster-jwks), for the agents'
ServiceAccount in this release's namespace. */}}
{{- define "auditflow.brokerKubernetesAuth" -}}
{{- with .Values.broker.kubernetesAuth -}}
[mqtt.kubernetes]
# Added by the chart (broker.kubernetesAuth): agents in the cluster log in with their pod's
# projected service-account token, which names their node; checked offline against the
# cluster's key set (ConfigMap auditflow-cluster-jwks, made by k8s/create-secrets.sh).
jwks_file = "/etc/auditflow/cluster-jwks/jwks.json"
issuer = {{ required "broker.kubernetesAuth.issuer: the cluster's service-account issuer" .issuer | quote }}
audience = {{ required "broker.kubernetesAuth.audience" .audience | quote }}
service_accounts = ["system:serviceaccount:{{ $.Release.Namespace }}:auditflow-agent"]
{{- end }}
{{- end }}

{{/* The broker's MQTT port: 8883 with TLS, 1883 without. */}}
{{- define "auditflow.mqttPort" -}}
{{- if .Values.tls.enabled }}8883{{ else }}1883{{ end -}}
{{- end }}

{{/* The agents' broker URL (AUDITFLOW_MQTT_URL). The Service's short name: the same in every
namespace, resolved through the pod's search path, and one of the certificate's names. */}}
{{- define "auditflow.mqttUrl" -}}
{{- if .Values.tls.enabled }}mqtts://auditflow-broker:8883{{ else }}mqtt://auditflow-broker:1883{{ end -}}
{{- end }}

{{/* The DNS names of the broker's certificate, as a JSON list. */}}
{{- define "auditflow.brokerTlsDnsNames" -}}
{{- $ns := .Release.Namespace -}}
{{- $names := list "auditflow-broker" (printf "auditflow-broker.%s" $ns) (printf "auditflow-broker.%s.svc" $ns) (printf "auditflow-broker.%s.svc.cluster.local" $ns) -}}
{{- concat $names (.Values.tls.extraDnsNames | default list) | uniq | toJson -}}
{{- end }}

{{/* The broker's [mqtt] section: the listener (TLS or not), the certificate files of the
Secret auditflow-broker-tls, the off-cluster agents' credentials, and broker.mqtt. */}}
{{- define "auditflow.brokerMqtt" -}}
[mqtt]
# Added by the chart (tls.enabled, broker.mqtt).
listen = "0.0.0.0:{{ include "auditflow.mqttPort" . }}"
{{- if .Values.tls.enabled }}
# MQTT over TLS only (TLS 1.2 and 1.3), with the Secret auditflow-broker-tls; both files are
# read again at every connection, so a renewed certificate needs no restart.
tls_cert = "/etc/auditflow/tls/tls.crt"
tls_key = "/etc/auditflow/tls/tls.key"
{{- end }}
# The off-cluster agents' `node:sha256:<hex>` lines, from the Secret auditflow-mqtt (key
# credentials). Agents in the cluster log in with their service-account token instead.
credentials_file = "/etc/auditflow/mqtt/credentials"
{{- range $key, $value := .Values.broker.mqtt }}
{{- if has $key (list "listen" "tls_cert" "tls_key" "credentials_file") }}
{{- fail (printf "broker.mqtt.%s: set by the chart" $key) }}
{{- end }}
{{ $key }} = {{ toJson $value }}
{{- end }}
{{- end }}

{{/* A TOML value from values: strings, numbers, booleans and lists through toJson (a JSON
string or array is a TOML one), with Go's HTML escapes of <, > and & undone where they are
escapes (a mailbox's "Name <a@example.org>" stays readable; one left escaped is still valid
TOML); a map becomes an inline table. */}}
{{- define "auditflow.tomlValue" -}}
{{- if kindIs "map" . -}}
{{- $parts := list -}}
{{- range $k, $v := . -}}
{{- $parts = append $parts (printf "%s = %s" $k (include "auditflow.tomlValue" $v)) -}}
{{- end -}}
{ {{ join ", " $parts }} }
{{- else -}}
{{- $s := toJson . -}}
{{- range $hex, $char := dict "003c" "<" "003e" ">" "0026" "&" -}}
{{- $s = regexReplaceAll (printf "((?:^|[^\\\\])(?:\\\\\\\\)*)\\\\u%s" $hex) $s (printf "${1}%s" $char) -}}
{{- end -}}
{{- $s -}}
{{- end -}}
{{- end }}

{{/* The chart's keys of a notify.channels entry that name a key of the Secret
notify.secretName, and the TOML key each becomes (a path under /etc/auditflow/notify). */}}
{{- define "auditflow.notifySecretKeys" -}}
{{- toJson (dict "urlKey" "url_file" "secretKey" "secret_file" "smtpPasswordKey" "smtp_password_file" "caKey" "ca_file") -}}
{{- end }}

{{/* The keys of the Secret notify.secretName that notify.channels name, sorted, as JSON: the
aggregator mounts these and no others. */}}
{{- define "auditflow.notifyKeys" -}}
{{- $keys := list -}}
{{- $chartKeys := keys (include "auditflow.notifySecretKeys" . | fromJson) -}}
{{- range .Values.notify.channels -}}
{{- $ch := . -}}
{{- range $chartKeys -}}
{{- with index $ch . -}}{{- $keys = append $keys (toString .) -}}{{- end -}}
{{- end -}}
{{- end -}}
{{- $keys | uniq | sortAlpha | toJson -}}
{{- end }}

{{/* The aggregator's [[notify.channels]] tables, one per notify.channels entry: its keys as
they are in TOML, the chart's keys (urlKey, secretKey, smtpPasswordKey, caKey) turned into
*_file paths into the Secret's mount, egressPort and egressTo left out (they shape the
NetworkPolicy only). Empty without channels. */}}
{{- define "auditflow.notifyChannels" -}}
{{- $secretKeys := include "auditflow.notifySecretKeys" . | fromJson -}}
{{- range $i, $ch := .Values.notify.channels }}
{{- $at := printf "notify.channels[%d]" $i }}
{{- if not (kindIs "map" $ch) }}
{{- fail (printf "%s: a channel is a map of its keys (name, kind, …)" $at) }}
{{- end }}
{{- if not (and $ch.name $ch.kind) }}
{{- fail (printf "%s: needs a name and a kind" $at) }}
{{- end }}
{{- if and (has (toString $ch.kind) (list "slack" "discord")) $ch.url }}
{{- fail (printf "%s (%s): a %s webhook URL is itself the secret: put it into the Secret notify.secretName and name its key in urlKey" $at $ch.name $ch.kind) }}
{{- end }}
{{- if and $ch.urlKey $ch.url }}
{{- fail (printf "%s (%s): url or urlKey, not both" $at $ch.name) }}
{{- end }}
{{- if eq $i 0 }}
# Added by the chart (notify.channels). Paths under /etc/auditflow/notify are keys of the
# Secret {{ $.Values.notify.secretName | default "(none)" }}, read at every delivery (a rotated Secret needs no restart).
{{- else }}
{{ "" }}
{{- end }}
[[notify.channels]]
name = {{ include "auditflow.tomlValue" $ch.name }}
kind = {{ include "auditflow.tomlValue" $ch.kind }}
{{- $table := omit $ch "name" "kind" "urlKey" "secretKey" "smtpPasswordKey" "caKey" "egressPort" "egressTo" }}
{{- range $chartKey, $tomlKey := $secretKeys }}
{{- with index $ch $chartKey }}
{{- if hasKey $ch $tomlKey }}
{{- fail (printf "%s (%s): %s or %s, not both" $at $ch.name $chartKey $tomlKey) }}
{{- end }}
{{- if not $.Values.notify.secretName }}
{{- fail (printf "%s (%s): %s names a key of notify.secretName, which is empty" $at $ch.name $chartKey) }}
{{- end }}
{{- if or (not (regexMatch "^[-._a-zA-Z0-9]+$" (toString .))) (has (toString .) (list "." "..")) }}
{{- fail (printf "%s (%s): %s %q is not a Secret key (letters, digits, '-', '_', '.')" $at $ch.name $chartKey .) }}
{{- end }}
{{- $_ := set $table $tomlKey (printf "/etc/auditflow/notify/%s" (toString .)) }}
{{- end }}
{{- end }}
{{- range $key, $value := $table }}
{{ $key }} = {{ include "auditflow.tomlValue" $value }}
{{- end }}
{{- end }}
{{- end }}

{{/* The aggregator's configuration file: aggregator.config, then notify.channels. Channels
written into aggregator.config itself would get no egress and no Secret mount: refused. */}}
{{- define "auditflow.aggregatorConfig" -}}
{{- if regexMatch "(?m)^\\s*(\\[\\[\\s*notify\\.channels\\s*\\]\\]|(notify\\.)?channels\\s*=)" .Values.aggregator.config }}
{{- fail "aggregator.config: notification channels belong in notify.channels, which also opens their egress and mounts their Secret keys; leave them out of the TOML" }}
{{- end }}
{{- .Values.aggregator.config }}
{{- include "auditflow.notifyChannels" . }}
{{- end }}

{{/* The TCP port a notification channel's receiver listens on: egressPort; else an email
channel's smtp port; 443 for a URL the aggregator reads from a file (the chart cannot see it;
egressPort says otherwise) and for PagerDuty's default Events API; else the url's own port or
its scheme's (https 443, http 80).
include "auditflow.notifyPort" (dict "ch" $channel "i" $index) */}}
{{- define "auditflow.notifyPort" -}}
{{- $ch := .ch -}}
{{- $port := "" -}}
{{- if $ch.egressPort -}}
{{- $port = toString $ch.egressPort -}}
{{- else if eq (toString $ch.kind) "email" -}}
{{- $port = regexFind "[0-9]+$" (regexFind ":[0-9]+$" (toString $ch.smtp)) -}}
{{- else if or $ch.urlKey $ch.url_file -}}
{{- $port = "443" -}}
{{- else if $ch.url -}}
{{- $u := urlParse (toString $ch.url) -}}
{{- $port = regexFind "[0-9]+$" (regexFind ":[0-9]+$" $u.host) | default (get (dict "https" "443" "http" "80") $u.scheme) -}}
{{- else if eq (toString $ch.kind) "pagerduty" -}}
{{- $port = "443" -}}
{{- end -}}
{{- if or (not (regexMatch "^[0-9]+$" $port)) (lt (atoi $port) 1) (gt (atoi $port) 65535) -}}
{{- fail (printf "notify.channels[%d] (%v): cannot tell which port its receiver listens on: give it an https:// or http:// url, a urlKey, an smtp host:port or an egressPort" .i $ch.name) -}}
{{- end -}}
{{- $port -}}
{{- end }}
