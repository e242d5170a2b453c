"""Deployment artefacts: Kubernetes / Argo Workflows manifests that run a project's pipelines with the Tarn image.

:func:`tarn.deploy.argo.export_argo` builds, from a project folder, a ConfigMap with the project's files, an Argo
``WorkflowTemplate`` (a DAG of pipelines following their table dependencies, each step ``tarn run PIPELINE`` in the
Tarn image) and a ``CronWorkflow`` on a schedule. Manifests are plain dicts (no Kubernetes client needed); secrets
are always ``secretKeyRef`` references, never values.
"""

from tarn.deploy.argo import ArgoExport, ArgoOptions, export_argo

__all__ = ["ArgoExport", "ArgoOptions", "export_argo"]
