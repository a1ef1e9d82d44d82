"""``spright deploy``: the image and the manifests that run an app beyond one machine.

Three ways to run an app (docs/deploy.md): processes on one machine (``spright run``), one node
per Kubernetes pod replica (``spright deploy k8s``), a Knative Service per function (``spright
deploy knative``). ``plan.command_line`` is the one place that writes how containers start spright.
"""

from spright.ops.deploy.cli import deploy_app
from spright.ops.deploy.plan import command_line

__all__ = ["command_line", "deploy_app"]
