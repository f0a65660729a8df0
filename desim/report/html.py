"""``report.html``: one self-contained file (figures embedded as base64 PNG, CSS inline, no
scripts, no network), so it opens offline in any browser and can be mailed as is.
"""

from __future__ import annotations

import jinja2

TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{{ title }}</title>
<style>
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1200px; padding: 0 1em; color: #222; line-height: 1.45;
       overflow-wrap: anywhere; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ddd; margin-top: 2em; }
figure { margin: 1.5em 0 2.5em 0; } figure img { max-width: 100%; height: auto; }
figcaption { font-size: 0.92em; color: #444; max-width: 60em; }
figcaption a { color: #666; }
table { border-collapse: collapse; font-size: 0.85em; margin: 1em 0; }
/* A wide table scrolls inside its own box; the page itself never scrolls sideways. */
.scroll { overflow-x: auto; max-width: 100%; margin: 1em 0; }
.scroll table { margin: 0; }
table.headline td { white-space: nowrap; font-variant-numeric: tabular-nums; }
table.headline th { min-width: 4.5em; overflow-wrap: normal; }
table.headline th:first-child, table.headline td:first-child { position: sticky; left: 0;
  background: #fff; } table.headline th:first-child { background: #f4f4f4; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; vertical-align: top; }
th { background: #f4f4f4; } td.l, th.l { text-align: left; }
.skip { color: #666; font-size: 0.92em; } .swatch { display: inline-block; width: 0.8em;
height: 0.8em; margin-right: 0.3em; border-radius: 2px; vertical-align: baseline; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 0.82em; }
dl.gloss dt { font-weight: bold; float: left; clear: left; width: 9em; }
dl.gloss dd { margin-left: 10em; } .note { color: #8a5a00; }
details { margin: 0.5em 0; }
</style>
</head>
<body>
<h1>{{ title }}</h1>
<p>{{ subtitle }}</p>
{% for n in notes %}<p class="note">{{ n }}</p>{% endfor %}
<p>Designs:
{% for d, c in designs %}<span class="swatch" style="background: {{ c }}"></span>{{ d }}{% if not loop.last %}, {% endif %}{% endfor %}
(each design keeps this colour in every figure).</p>
<details><summary>Abbreviations and terms</summary>
<dl class="gloss">{% for k, v in glossary %}<dt>{{ k }}</dt><dd>{{ v }}</dd>{% endfor %}</dl>
</details>

<h2>Figures</h2>
{% for f in figures %}
<figure id="{{ f.name }}">
<img alt="{{ f.title }}" src="data:image/png;base64,{{ f.png_b64 }}">
<figcaption><b>{{ f.title }}.</b> {{ f.caption }}
<a href="{{ f.png }}">PNG</a> · <a href="{{ f.svg }}">SVG</a></figcaption>
</figure>
{% endfor %}
{% if skipped %}
<h3>Not drawn</h3>
<ul class="skip">{% for s in skipped %}<li id="{{ s.name }}"><b>{{ s.title }}</b>: {{ s.reason }}.</li>{% endfor %}</ul>
{% endif %}

<h2>Headline metrics</h2>
<p>Mean over replications ± half-width of the 95% confidence interval (Student t); no ± when a
point has a single run; – where a run has no value. Each column has one unit, in its header.
Latencies are as the caller sees them; memory figures are time-weighted means after warm-up, or
exact peaks (kept at every change since the warm-up).</p>
<div class="scroll" id="headline-box">
<table class="headline" id="headline">
<tr>{% for h in head %}<th class="{{ 'l' if loop.index0 < key_cols else '' }}">{{ h }}</th>{% endfor %}</tr>
{% for r in rows %}<tr>{% for c in r %}<td class="{{ 'l' if loop.index0 < key_cols else '' }}">{{ c }}</td>{% endfor %}</tr>
{% endfor %}
</table>
</div>
<p>All numbers, in base units (ns, bytes): <a href="headline.csv">headline.csv</a>.</p>

{% if violations %}
<h2>Safety violations (first {{ violations|length }})</h2>
<div class="scroll"><table>
<tr><th class="l">run</th><th class="l">design</th><th>time</th><th>CPU</th><th class="l">kind</th><th class="l">what happened</th></tr>
{% for v in violations %}<tr><td class="l">{{ v.run }}</td><td class="l">{{ v.design }}</td><td>{{ v.t }}</td>
<td>{{ v.cpu }}</td><td class="l">{{ v.kind }}</td><td class="l">{{ v.message }}
{% if v.history %}<details><summary>history</summary><pre>{{ v.history|join('\\n') }}</pre></details>{% endif %}</td></tr>
{% endfor %}
</table></div>
{% endif %}

<h2>Provenance</h2>
<table>{% for k, v in provenance %}<tr><th class="l">{{ k }}</th><td class="l">{{ v }}</td></tr>{% endfor %}</table>
{% if experiment %}<h3>Experiment file</h3><pre>{{ experiment }}</pre>{% endif %}
<h3>Resolved config</h3>
<pre>{{ config }}</pre>
<p class="skip">Written by <code>desim report</code> in {{ seconds }} s, {{ generated }}.</p>
</body>
</html>
"""


def render(**values) -> str:
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    return env.from_string(TEMPLATE).render(**values)
