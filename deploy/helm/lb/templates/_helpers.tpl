{{/* Labels of every object, also the DaemonSet's selector: the app and the release. */}}
{{- define "lb.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The image reference: repository and tag, the tag defaulting to the chart's appVersion. */}}
{{- define "lb.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}
