"""Reports as Markdown plus a single self-contained HTML file (images inlined), from one description.

A ``Report`` is a list of blocks (headings, paragraphs, formulas, figures, tables). ``markdown()``
gives the primary, diff-friendly form (PNG files next to it, formulas as $$...$$); ``html()`` gives
one file that opens offline in any browser: CSS inline, figures as base64 PNG, and each formula
rendered to an image with matplotlib's mathtext (its LaTeX source underneath; a formula mathtext
cannot parse is shown as source only).

Text understands a little Markdown: blank lines between paragraphs, `inline code`, **bold** and
[links](#anchor) to headings.
"""

import base64
import html
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Report", "latex_png", "slug"]


@dataclass
class Report:
    title: str
    blocks: list = field(default_factory=list)

    # -- building ------------------------------------------------------------------------------
    def heading(self, text, level=2):
        """A section heading; its anchor is GitHub's slug of the text (``slug``), in both formats."""
        self.blocks.append(("heading", level, text, slug(text)))

    def paragraph(self, text):
        self.blocks.append(("paragraph", text))

    def formula(self, caption, latex):
        self.blocks.append(("formula", caption, latex))

    def figure(self, path, caption):
        """A PNG file; the Markdown links it by file name (keep it in the report's folder)."""
        self.blocks.append(("figure", Path(path), caption))

    def table(self, header, rows, classes=None, collapsed=None, open_=False):
        """rows: lists of cells (str; `code`, **bold** and [links](#anchor) are understood); classes:
        optional CSS class per row (e.g. 'fail'); collapsed: a summary line, to put the table in an
        HTML <details> element (open if ``open_``)."""
        self.blocks.append(
            ("table", list(header), [list(map(str, r)) for r in rows], classes, collapsed, open_)
        )

    # -- Markdown ------------------------------------------------------------------------------
    def markdown(self):
        out = [f"# {self.title}", ""]
        for block in self.blocks:
            kind = block[0]
            if kind == "heading":
                _, level, text, _ = block
                out += ["#" * level + " " + text, ""]
            elif kind == "paragraph":
                out += [block[1], ""]
            elif kind == "formula":
                _, caption, latex = block
                out += [f"{caption}:", "", "$$", latex, "$$", ""]
            elif kind == "figure":
                _, path, caption = block
                out += [f"![{caption}]({path.name})", "", f"*{caption}*", ""]
            elif kind == "table":
                _, header, rows, _, collapsed, _ = block
                if collapsed:
                    out += [f"*{collapsed}*", ""]
                out.append("| " + " | ".join(header) + " |")
                out.append("|" + "|".join("---" for _ in header) + "|")
                out += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
                out.append("")
        return "\n".join(out)

    # -- HTML ----------------------------------------------------------------------------------
    def html(self):
        body = [f"<h1>{html.escape(self.title)}</h1>"]
        for block in self.blocks:
            kind = block[0]
            if kind == "heading":
                _, level, text, anchor = block
                ident = f' id="{html.escape(anchor)}"' if anchor else ""
                body.append(f"<h{level}{ident}>{html.escape(text)}</h{level}>")
            elif kind == "paragraph":
                body += [f"<p>{_inline(p)}</p>" for p in block[1].split("\n\n")]
            elif kind == "formula":
                _, caption, latex = block
                png = latex_png(latex)
                img = (
                    f'<img class="formula" alt="{html.escape(latex)}" src="data:image/png;base64,{png}">'
                    if png
                    else ""
                )
                body.append(
                    f'<div class="formula"><div class="caption">{html.escape(caption)}</div>{img}'
                    f'<code class="latex">{html.escape(latex)}</code></div>'
                )
            elif kind == "figure":
                _, path, caption = block
                data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
                body.append(
                    f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(caption)}">'
                    f"<figcaption>{html.escape(caption)}</figcaption></figure>"
                )
            elif kind == "table":
                _, header, rows, classes, collapsed, open_ = block
                head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
                lines = []
                for k, row in enumerate(rows):
                    cls = f' class="{classes[k]}"' if classes and classes[k] else ""
                    lines.append(f"<tr{cls}>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>")
                table = f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(lines)}</tbody></table>"
                if collapsed:
                    table = (
                        f"<details{' open' if open_ else ''}><summary>{_inline(collapsed)}</summary>"
                        f"{table}</details>"
                    )
                body.append(table)
        return (
            f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(self.title)}</title><style>{_CSS}</style></head>\n<body>\n"
            + "\n".join(body)
            + "\n</body></html>\n"
        )

    def write(self, out_dir, stem="report"):
        """Write stem.md and stem.html into out_dir; returns their paths."""
        out_dir = Path(out_dir)
        md, page = out_dir / f"{stem}.md", out_dir / f"{stem}.html"
        md.write_text(self.markdown(), encoding="utf-8")
        page.write_text(self.html(), encoding="utf-8")
        return md, page


def slug(text):
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def _inline(text):
    """HTML-escape, keeping `code` spans, **bold** and [text](#anchor) links."""
    parts = re.split(r"(`[^`]+`)", text)
    out = []
    for part in parts:
        if part.startswith("`") and part.endswith("`") and len(part) > 1:
            out.append(f"<code>{html.escape(part[1:-1])}</code>")
        else:
            part = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", html.escape(part))
            out.append(re.sub(r"\[([^\]]+)\]\((#[\w\-]+)\)", r'<a href="\2">\1</a>', part))
    return "".join(out)


def latex_png(latex, dpi=130):
    """The formula rendered by matplotlib's mathtext as base64 PNG, or None if mathtext cannot parse it."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import mathtext

    buf = io.BytesIO()
    try:
        mathtext.math_to_image(f"${latex}$", buf, dpi=dpi, format="png")
    except Exception:  # mathtext raises ValueError and others for what it cannot parse
        return None
    return base64.b64encode(buf.getvalue()).decode("ascii")


_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; max-width: 1180px;
       margin: 2em auto; padding: 0 1em; color: #1d1d1f; line-height: 1.45; }
h1 { border-bottom: 2px solid #ddd; padding-bottom: .3em; }
h2 { border-bottom: 1px solid #e4e4e4; padding-bottom: .2em; margin-top: 2em; }
code { background: #f4f4f6; padding: 0 .25em; border-radius: 3px; font-size: 90%; }
table { border-collapse: collapse; font-size: 12.5px; margin: 1em 0; width: 100%; }
th, td { border: 1px solid #ddd; padding: 3px 6px; text-align: left; vertical-align: top; }
th { background: #f0f0f3; }
tr.fail td { background: #fde2e1; }
tr.ok td:first-child { color: #1a7f37; font-weight: 600; }
tr.fail td:first-child { color: #b42318; font-weight: 700; }
figure { margin: 1.2em 0; }
figure img { max-width: 100%; border: 1px solid #e4e4e4; }
figcaption { font-size: 13px; color: #555; }
div.formula { margin: .8em 0; padding: .4em .6em; background: #fafafa; border-left: 3px solid #ccd; }
div.formula .caption { font-size: 13px; color: #555; }
img.formula { display: block; margin: .3em 0; max-width: 100%; }
details > summary { cursor: pointer; color: #333; margin: .6em 0; }
a { color: #0b57d0; text-decoration: none; }
code.latex { display: block; font-size: 11px; color: #666; background: none; white-space: pre-wrap; }
"""
