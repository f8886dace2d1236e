"""Griffe extension: Sphinx roles in docstrings become Markdown before mkdocstrings renders them.

The package's docstrings are Google style with a few Sphinx roles (``:class:`~a.b.C```,
``:func:``, ``:meth:``, ``:attr:``, ``:data:``, ``:mod:``, ``:math:`...```). mkdocstrings would
show them raw; this extension rewrites them in every docstring it loads:

- a role naming an object of ``lightning_srop`` becomes an optional cross-reference (a link when
  the object is documented on the site, plain code otherwise), titled with the last component
  when the target starts with ``~``, else with the full path;
- a role naming anything else (``torch``, ``numpy``, ...) becomes inline code;
- ``:math:`x``` becomes ``$x$`` (rendered by ``pymdownx.arithmatex`` and the KaTeX hook).

Registered in ``mkdocs.yml`` under the Python handler's ``extensions``.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?P<role>class|func|meth|attr|data|mod|obj|exc|const):`(?P<target>[^`]+)`")
_MATH = re.compile(r":math:`(?P<tex>[^`]+)`")
_CALLABLE = {"func", "meth"}


def _reference(match: re.Match[str]) -> str:
    role, target = match.group("role"), match.group("target").strip()
    short = target.startswith("~")
    path = target.lstrip("~.")
    title = path.rsplit(".", 1)[-1] if short else path
    if role in _CALLABLE:
        title += "()"
    if path.startswith("lightning_srop"):
        return f'<autoref identifier="{path}" optional><code>{title}</code></autoref>'
    return f"`{title}`"


def rewrite(text: str) -> str:
    """``text`` with its Sphinx roles as Markdown.

    >>> rewrite(":class:`~lightning_srop.report.SROPReport` and :math:`\\\\kappa` of :func:`torch.fft.fft2`")
    '<autoref identifier="lightning_srop.report.SROPReport" optional><code>SROPReport</code></autoref> and $\\\\kappa$ of `torch.fft.fft2()`'
    """
    text = _MATH.sub(lambda m: f"${m.group('tex').strip()}$", text)
    return _ROLE.sub(_reference, text)


class SphinxRoles(griffe.Extension):
    """Rewrite Sphinx roles in every docstring griffe loads."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = rewrite(obj.docstring.value)
