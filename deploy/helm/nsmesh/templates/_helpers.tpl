{{/*
Labels of every object. No release- or Helm-specific labels: deploy/kustomize/base is this chart's rendering and
must describe the same objects.
*/}}
{{- define "nsmesh.labels" -}}
app.kubernetes.io/name: {{ .name }}
app.kubernetes.io/part-of: nsmesh
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
{{- end -}}

{{/* The labels a workload's selector matches: stable across upgrades, unlike the version label. */}}
{{- define "nsmesh.selectorLabels" -}}
app.kubernetes.io/name: {{ .name }}
app.kubernetes.io/part-of: nsmesh
{{- end -}}

{{- define "nsmesh.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* unix:// URL of the SPIRE agent socket as mounted in pods (same path as on the host). */}}
{{- define "nsmesh.spiffeSocket" -}}
unix://{{ .Values.spire.agentSocketDir }}/{{ .Values.spire.agentSocketName }}
{{- end -}}

{{/* Container securityContext shared by every container that needs no privilege. */}}
{{- define "nsmesh.restrictedContainerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* nsmd's NSM_REGISTRY_URL: by default (or given as bare k8s://) the custom resources in the chart's namespace. */}}
{{- define "nsmesh.registryUrl" -}}
{{- $url := .Values.nsmd.registryUrl | default "" -}}
{{- if or (eq $url "") (eq $url "k8s://") -}}
k8s://{{ .Values.namespace }}
{{- else -}}
{{ $url }}
{{- end -}}
{{- end -}}
