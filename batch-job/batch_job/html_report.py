"""The HTML report people look at after a night: counts, confidence, review queue, failures, drift."""

from __future__ import annotations

import base64
import io
from html import escape

from obstore.store import ObjectStore
from PIL import Image

from batch_job.ledger import NEEDS_REVIEW, Result
from common.objectstore import read_object

MAX_THUMBNAILS = 200
THUMBNAIL = (96, 128)

STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#222;max-width:1100px}
h1{font-size:1.5rem} h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse} td,th{padding:.25rem .75rem;text-align:left;border-bottom:1px solid #eee}
td.n{text-align:right} .kpi{display:inline-block;margin:0 2rem 1rem 0} .kpi b{display:block;font-size:1.6rem}
.bar{background:#4a7bd0;height:1rem} .warn{background:#fff3cd;padding:.5rem 1rem;border-left:4px solid #e0a800}
.grid{display:flex;flex-wrap:wrap;gap:1rem} .item{width:180px;font-size:.8rem} .item img{border:1px solid #ccc}
"""


def thumbnail(store: ObjectStore, key: str) -> str:
    """A small inline JPEG, so the report is one self-contained file."""
    try:
        image = Image.open(io.BytesIO(read_object(store, key)))
        image.draft("RGB", THUMBNAIL)
        image = image.convert("RGB")
        image.thumbnail(THUMBNAIL)
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=80)
    except Exception:  # a thumbnail is decoration: never fail the report for it
        return ""
    return f'<img src="data:image/jpeg;base64,{base64.b64encode(buffer.getvalue()).decode()}" alt="">'


def render(summary: dict, rows: list[Result], store: ObjectStore) -> str:
    statuses = summary["statuses"]
    share = summary["auto_sorted_share"]
    kpis = [
        ("images", summary["processed"]),
        ("auto-sorted", f"{share:.0%}" if share is not None else "–"),
        ("to review", statuses.get(NEEDS_REVIEW, 0)),
        ("failed", statuses.get("failed", 0) + statuses.get("dead", 0)),
        ("left pending", statuses.get("pending", 0)),
    ]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>refund-sorter run {escape(summary['run_id'])}</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>Nightly run {escape(summary['run_id'])}</h1>",
        f"<p>model {escape(summary['model']['name'])} {escape(summary['model']['version'])}, "
        f"review below probability {summary['review_threshold']:.2f}, shard {escape(summary['shard'])}, "
        f"{summary['seconds']:.1f} s</p>",
        "".join(f"<div class='kpi'><b>{escape(str(value))}</b>{name}</div>" for name, value in kpis),
    ]
    parts += [f"<p class='warn'>{escape(warning)}</p>" for warning in summary["drift"]["warnings"]]

    parts.append("<h2>Categories</h2><table><tr><th>category</th><th>items</th><th>to review</th><th></th></tr>")
    most = max(summary["category_counts"].values(), default=1)
    for category, count in summary["category_counts"].items():
        review = summary["review_counts"].get(category, 0)
        width = 200 * count / most
        parts.append(
            f"<tr><td>{escape(category)}</td><td class='n'>{count}</td><td class='n'>{review}</td>"
            f"<td><div class='bar' style='width:{width:.0f}px'></div></td></tr>"
        )
    parts.append("</table>")

    parts.append("<h2>Confidence</h2><table><tr><th>probability</th><th>items</th><th></th></tr>")
    histogram = summary["confidence_histogram"]
    peak = max(histogram, default=1) or 1
    for index, count in enumerate(histogram):
        low, high = index / len(histogram), (index + 1) / len(histogram)
        parts.append(
            f"<tr><td>{low:.1f}–{high:.1f}</td><td class='n'>{count}</td>"
            f"<td><div class='bar' style='width:{200 * count / peak:.0f}px'></div></td></tr>"
        )
    parts.append("</table>")

    review = sorted((row for row in rows if row.status == NEEDS_REVIEW), key=lambda row: row.probability)
    parts.append(f"<h2>Needs review ({len(review)})</h2><div class='grid'>")
    for row in review[:MAX_THUMBNAILS]:
        guesses = "<br>".join(f"{escape(g['category'])} {g['probability']:.0%}" for g in row.top3 or [])
        picture = thumbnail(store, row.object_key)
        parts.append(f"<div class='item'>{picture}<br><code>{escape(row.object_key)}</code><br>{guesses}</div>")
    parts.append("</div>")

    parts.append(
        f"<h2>Failures ({len(summary['failures'])})</h2><table><tr><th>image</th><th>status</th><th>reason</th></tr>"
    )
    parts += [
        f"<tr><td><code>{escape(item['key'])}</code></td><td>{escape(item['status'])}</td>"
        f"<td>{escape(item['error'] or '')}</td></tr>"
        for item in summary["failures"]
    ]
    parts.append("</table>")

    drift = summary["drift"]
    parts.append("<h2>Drift</h2><table>")
    for name in ("psi_vs_training", "psi_vs_recent_runs", "mean_confidence_change"):
        if name in drift:
            parts.append(f"<tr><td>{name.replace('_', ' ')}</td><td class='n'>{drift[name]:.3f}</td></tr>")
    history = ", ".join(f"{value:.2f}" for value in drift.get("mean_confidence_history", []) if value is not None)
    parts.append(f"<tr><td>mean confidence, oldest to this run</td><td>{history}</td></tr></table>")
    parts.append("</body></html>")
    return "\n".join(parts)
