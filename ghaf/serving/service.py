"""The serving domain's one platform-side action: may this caller invoke served models?

Every served route but health asks it, in-process (a serving app beside the platform,
ghaf/serving/auth.py) or over HTTP (``ghaf serve`` on another machine, through
``GET /api/v1/projects/{project}/deployments:check-invoke``; docs/adr/0020).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ghaf.core.names import validate_name
from ghaf.serving.schemas import InvokeGrant

if TYPE_CHECKING:
    # Only a type here: a bundle's replica (no platform) imports this module through
    # its authorizers, and the platform's security context costs it ~0.3 s of start.
    from ghaf.security.context import Context

INVOKE = "deployment:invoke"


def check_invoke(ctx: Context, project: str, model: str | None = None) -> InvokeGrant:
    """The caller, if it holds ``deployment:invoke`` in ``project``; else the refusal
    (audited): 404 for a project it cannot see, 403 without the permission."""
    if model is not None:
        validate_name(model, field="model")
    pctx = ctx.in_project(project)
    resource = f"project/{project}/model/{model}" if model else f"project/{project}"
    pctx.require(INVOKE, resource=resource)
    assert pctx.caller is not None  # require() refuses an anonymous context
    return InvokeGrant(
        project=project, model=model, principal=pctx.caller.name, kind=pctx.caller.kind
    )
