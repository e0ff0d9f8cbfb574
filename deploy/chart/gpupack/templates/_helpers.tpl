{{/* Names, labels and images shared by the templates. */}}

{{- define "gpupack.chart" -}}
{{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels every object carries; "component" is passed as .component. */}}
{{- define "gpupack.labels" -}}
app.kubernetes.io/name: {{ .component }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/part-of: gpupack
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ include "gpupack.chart" .root }}
{{- end }}

{{- define "gpupack.selector" -}}
app.kubernetes.io/name: {{ .component }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end }}

{{- define "gpupack.schedulerName" -}}
{{ .Values.scheduler.name }}
{{- end }}

{{- define "gpupack.devicePluginName" -}}
gpupack-device-plugin
{{- end }}

{{- define "gpupack.signingSecret" -}}
{{ .Values.extender.signingKey.existingSecret | default (printf "%s-signing-key" .Values.scheduler.name) }}
{{- end }}

{{- define "gpupack.hasSigningKey" -}}
{{- if or .Values.extender.signingKey.create .Values.extender.signingKey.existingSecret }}true{{ end }}
{{- end }}

{{/* kube-scheduler's image: the cluster's version unless a tag is given
(build metadata such as +k3s1 or -eks-... is cut off). */}}
{{- define "gpupack.schedulerImage" -}}
{{- $tag := .Values.scheduler.image.tag | default (regexFind "^v[0-9]+\\.[0-9]+\\.[0-9]+" .Capabilities.KubeVersion.Version) -}}
{{ .Values.scheduler.image.repository }}:{{ $tag }}
{{- end }}

{{- define "gpupack.image" -}}
{{ .image.repository }}:{{ .image.tag | default .root.Chart.AppVersion }}
{{- end }}
