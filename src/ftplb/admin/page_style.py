"""The stats page's CSS: readable on a laptop, and on a phone without sideways scrolling.

Wide tables scroll inside their own box (``div.scroll``), so the page itself
is never wider than the screen; the header's facts wrap.
"""

from __future__ import annotations

__all__ = ["STYLE"]

STYLE = """
* { box-sizing: border-box; }
body { font: 13px sans-serif; margin: 0.8em; color: #222; }
h1 { font-size: 18px; margin: 0 0 0.3em; } h2 { font-size: 15px; margin: 1.1em 0 0.3em; }
h1, h2, p { overflow-wrap: anywhere; }
p.process { margin: 0.2em 0; display: flex; flex-wrap: wrap; gap: 0.2em 1.2em; }
p.process span b { font-weight: normal; color: #666; margin-right: 0.3em; }
p.links { margin: 0.2em 0 0.6em; color: #555; }
div.scroll { max-width: 100%; overflow-x: auto; -webkit-overflow-scrolling: touch; }
table { border-collapse: collapse; }
th, td { border: 1px solid #bbb; padding: 2px 6px; text-align: right; white-space: nowrap; }
th { background: #dde; font-weight: 600; } tr.groups th { background: #ccd; }
td.name, th.name, td.text, th.text, td.check, td.state { text-align: left; }
th.gs, td.gs { border-left: 2px solid #778; }
td.path, td.check { max-width: 22em; overflow: hidden; text-overflow: ellipsis; }
tr.total td { background: #eef; font-weight: bold; }
.up { background: #c8f0c8; } .down { background: #f4b0b0; }
.drain { background: #f0e0a0; } .maint { background: #c8c8f0; }
.mixed { background: #f0c890; } .unknown { background: #eee; }
tr.transfer td { background: #f4f8ff; }
p.detail { margin: 0.3em 0; color: #555; }
p.empty { color: #555; font-style: italic; }
td.admin.set { font-weight: bold; }
td.act { white-space: nowrap; padding: 1px 4px; }
td.act form { margin: 0; display: inline; }
td.act button { font: 12px sans-serif; margin: 0 2px 0 0; padding: 0 7px;
  border: 1px solid #889; border-radius: 3px; background: #f7f7fb; color: #222; cursor: pointer; }
td.act button:hover:enabled { background: #dde; }
td.act button:disabled { color: #999; border-color: #ccc; background: #eee; cursor: default; }
@media (max-width: 600px) {
  body { margin: 0.5em; font-size: 12px; }
  th, td { padding: 2px 4px; }
}
"""
