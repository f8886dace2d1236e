"""MkDocs hook: render the pages' math with KaTeX at build time (no JavaScript in the browser).

``pymdownx.arithmatex`` (``generic: true``) leaves math as ``<span class="arithmatex">\\(...\\)</span>``
and ``<div class="arithmatex">\\[...\\]</div>``; this hook replaces each with KaTeX's HTML, rendered
by the vendored ``docs/javascripts/katex/katex.min.js`` in an embedded V8 (the ``mini-racer``
package, a docs dependency). The page links KaTeX's stylesheet and fonts, vendored next to it,
so the site needs no network. Bad TeX fails the build with the page and the expression.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

_KATEX_JS = Path(__file__).resolve().parents[1] / "javascripts" / "katex" / "katex.min.js"
_MATH = re.compile(
    r'<(?P<tag>span|div) class="arithmatex">\s*(?:\\\((?P<inline>.*?)\\\)|\\\[(?P<block>.*?)\\\])\s*</(?P=tag)>',
    re.DOTALL,
)
_context: Any = None


def _katex() -> Any:
    global _context
    if _context is None:
        from py_mini_racer import MiniRacer

        _context = MiniRacer()
        _context.eval(_KATEX_JS.read_text(encoding="utf-8"))
    return _context


def render(tex: str, *, display: bool) -> str:
    """KaTeX's HTML for ``tex`` (raises on invalid TeX)."""
    options = json.dumps({"displayMode": display, "throwOnError": True, "output": "htmlAndMathml"})
    return str(_katex().eval(f"katex.renderToString({json.dumps(tex)}, {options})"))


def on_post_page(output: str, page: Any, config: Any) -> str:
    def replace(match: re.Match[str]) -> str:
        display = match.group("block") is not None
        tex = html.unescape(match.group("block") if display else match.group("inline"))
        try:
            rendered = render(tex, display=display)
        except Exception as err:  # a JavaScript ParseError: name the page and the expression
            raise ValueError(f"KaTeX cannot render {tex!r} on {page.file.src_uri}: {err}") from err
        return f'<div class="katex-block">{rendered}</div>' if display else rendered

    return _MATH.sub(replace, output)


def _close() -> None:
    """Free the V8 context while the interpreter still runs: left to ``MiniRacer.__del__`` at
    interpreter exit, freeing it can wait forever on mini-racer's event-loop thread."""
    global _context
    context, _context = _context, None
    if context is not None:
        context.close()


def on_post_build(config: Any) -> None:
    _close()


def on_build_error(error: Exception) -> None:
    _close()
