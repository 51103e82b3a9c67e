{{/* Names and labels shared by every template. */}}
{{- define "latentmesh.fullname" -}}
{{- printf "%s-operator" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "latentmesh.labels" -}}
app.kubernetes.io/name: latentmesh
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: latentmesh
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "latentmesh.selector" -}}
app.kubernetes.io/name: latentmesh
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "latentmesh.natsUrl" -}}
{{- if .Values.operator.natsUrl -}}
{{ .Values.operator.natsUrl }}
{{- else if .Values.nats.enabled -}}
{{ printf "nats://%s-nats:4222" .Release.Name }}
{{- end -}}
{{- end -}}
