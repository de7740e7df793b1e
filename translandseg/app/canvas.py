"""The labeling canvas: zoom and pan, a mask drawn as outline over a light fill, and point, box,
brush, eraser and polygon tools.

Gradio's ``gr.Image`` reports only single clicks on a picture shown at one scale, and
``gr.ImageEditor`` returns painted layers as pictures, not the strokes that made them, and cannot
send a click to SAM; neither maps clicks, drags and strokes to full-resolution pixels at every zoom
level. So the canvas is a small custom component: ``gr.HTML`` with its own script (``canvas.js``).

The server sends a **scene** (``scene``): the shown picture (the quicklook or a full-resolution
window; sent again only when it changes), the mask and the automatic mask as fill and outline
layers at the picture's resolution, and the prompts in picture pixels. The browser zooms and pans
without asking the server. Each finished gesture comes back in canvas pixels with the zoom and
pan in effect (``Gesture``); ``to_prompt`` maps it to full-resolution image pixels, so the mapping
lives, and is tested, here.
"""

import base64
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import gradio as gr
import numpy as np
from PIL import Image

from annotations.labeling import LabelingSession
from translandseg.interactive.correction import Box, Click, CorrectionError, Prompt
from translandseg.interactive.painting import Polygon, Stroke

MAX_GESTURE_POINTS = 20_000
FILL = (255, 60, 60)  # drawn light (fill opacity), under a yellow outline (canvas.js)
TOOLS = (("point", "Point", "c"), ("box", "Box", "b"), ("brush", "Brush", "d"), ("eraser", "Eraser", "e"),
         ("polygon", "Polygon", "l"), ("pan", "Pan", "h"))  # fmt: skip
KEYS = [("c / b / d / e / l / h", "point, box, brush, eraser, polygon, pan"), ("p / n", "add / remove"),
        ("wheel, + / -, f", "zoom at the pointer, in / out, fit"), ("arrows, space + drag, middle drag", "pan"),
        ("[ / ]", "brush smaller / larger"), ("o / a", "outline on/off, show the automatic mask"),
        ("z / y, Ctrl+Z / Ctrl+Y", "undo / redo"), ("Enter / double-click, Esc", "close / drop a polygon")]  # fmt: skip

TOOL_BUTTONS = "".join(f'<button type="button" data-tool="{tool}" id="tool-{tool}" title="{title} ({key})">'
                       f"{title}</button>" for tool, title, key in TOOLS)  # fmt: skip
KEY_LIST = " · ".join(f"<kbd>{keys}</kbd> {what}" for keys, what in KEYS)
TEMPLATE = f"""
<div class="tls-canvas">
  <div class="tls-toolbar">
    <span class="tls-group" aria-label="Tool">{TOOL_BUTTONS}</span>
    <span class="tls-group" aria-label="Add or remove">
      <button type="button" data-sign="positive" id="sign-positive" title="Add landslide (p)">+ Add</button>
      <button type="button" data-sign="negative" id="sign-negative" title="Remove landslide (n)">&minus; Remove</button>
    </span>
    <label title="Brush and eraser diameter in full-resolution pixels ([ and ])">Brush
      <input class="tls-brush" id="brush-size" type="range" min="1" max="200" value="8">
      <span class="tls-brush-value">8 px</span></label>
    <span class="tls-group" aria-label="Zoom">
      <button type="button" data-zoom="out" id="zoom-out" title="Zoom out (-)">&minus;</button>
      <span class="tls-zoom" id="zoom-level">100%</span>
      <button type="button" data-zoom="in" id="zoom-in" title="Zoom in (+)">+</button>
      <button type="button" data-zoom="fit" id="zoom-fit" title="Fit the picture (f)">Fit</button>
    </span>
    <label title="Fill opacity">Fill <input class="tls-opacity" id="fill-opacity" type="range" min="0" max="100"
      value="30"></label>
    <label><input class="tls-outline" id="show-outline" type="checkbox" checked> Outline (o)</label>
    <label><input class="tls-before" id="show-automatic" type="checkbox"> Automatic mask (a)</label>
  </div>
  <div class="tls-stage"><canvas id="canvas-surface"></canvas>
    <div class="tls-empty">Upload an image or pick one from the queue.</div></div>
  <div class="tls-keys">{KEY_LIST}</div>
</div>
"""
CSS = """
.tls-toolbar {display: flex; flex-wrap: wrap; gap: 6px 14px; align-items: center; margin-bottom: 6px; font-size: 13px}
.tls-group {display: inline-flex; gap: 2px; align-items: center}
.tls-toolbar button {padding: 3px 9px; border: 1px solid #9ca3af; border-radius: 4px; background: #f9fafb;
  color: #111827; cursor: pointer}
.tls-toolbar button.tls-on {background: #1f2937; color: #fff; border-color: #1f2937}
.tls-toolbar label {display: inline-flex; gap: 4px; align-items: center}
.tls-toolbar input[type="checkbox"] {appearance: auto; -webkit-appearance: checkbox; width: 14px; height: 14px}
.tls-brush, .tls-opacity {width: 90px}
.tls-stage {position: relative; height: clamp(280px, calc(100vh - 300px), 720px); background: #374151; border-radius: 4px; overflow: hidden;
  touch-action: none}
.tls-stage canvas {position: absolute; inset: 0; width: 100%; height: 100%; cursor: crosshair}
.tls-stage[data-tool="pan"] canvas {cursor: grab}
.tls-empty {position: absolute; inset: 0; display: flex; align-items: center; justify-content: center; color: #e5e7eb}
.tls-keys {font-size: 12px; color: #4b5563; margin-top: 4px}
.tls-keys kbd {font-family: inherit; font-weight: 600}
"""


def labeling_canvas() -> gr.HTML:
    """The canvas component; its ``gesture`` event carries each finished gesture."""
    script = Path(__file__).with_name("canvas.js").read_text()
    return gr.HTML(None, html_template=TEMPLATE, css_template=CSS, js_on_load=script, elem_id="canvas",
                   apply_default_css=False, padding=False)  # fmt: skip


# --- server → browser ----------------------------------------------------------------------------


def scene(session: Optional[LabelingSession]) -> Dict[str, Any]:
    """What the canvas draws for ``session`` (an empty canvas without one). The shown picture is
    included only when the browser does not have it yet."""
    if session is None:
        return {}
    backdrop = session.backdrop
    height, width = backdrop.shape[:2]
    view_key = f"{session.image_id}:{session.view}:{session.image.rendering}"
    data = {"image_id": session.image_id, "view_key": view_key, "width": width, "height": height,
            "scale": width / session.view[2], "prompts": _prompts(session),
            "backdrop": None if session.sent_view == view_key else _png(backdrop)}  # fmt: skip
    session.sent_view = view_key
    data["mask_fill"], data["mask_edges"] = _fill_and_edges(session.shown(session.mask))
    if data["backdrop"] is not None:  # the automatic mask changes only with the view
        data["automatic_fill"], data["automatic_edges"] = _fill_and_edges(session.shown(session.correction.automatic))
    return data


def _fill_and_edges(mask: np.ndarray) -> Tuple[str, List[int]]:
    """The mask as a fill layer (PNG) and its outline as segments along pixel edges."""
    rgba = np.zeros((*mask.shape, 4), np.uint8)
    rgba[mask] = (*FILL, 255)
    return _png(rgba), edges(mask)


def edges(mask: np.ndarray) -> List[int]:
    """The boundary between landslide and background (the picture's border counts as background)
    as straight segments along pixel edges, flattened [x0, y0, x1, y1, ...]; runs along a row or
    column are merged into one segment, so the browser draws a thin outline at any zoom."""
    padded = np.pad(mask, 1)
    segments = []
    for axis in (0, 1):  # 0: edges between rows (horizontal), 1: edges between columns (vertical)
        change = np.diff(padded, axis=0)[:, 1:-1] if axis == 0 else np.diff(padded, axis=1)[1:-1, :].T
        steps = np.diff(np.pad(change, ((0, 0), (1, 1))).astype(np.int8), axis=1)  # runs lie along rows of `change`
        lines, starts = np.nonzero(steps == 1)
        stops = np.nonzero(steps == -1)[1]
        for line, start, stop in zip(lines, starts, stops, strict=True):
            segments += [start, line, stop, line] if axis == 0 else [line, start, line, stop]
    return [int(v) for v in segments]


def _png(array: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _prompts(session: LabelingSession) -> List[Dict[str, Any]]:
    """The prompts in effect, in picture pixels, for drawing."""
    col, row, width, _ = session.view
    scale = session.backdrop.shape[1] / width

    def shown(x: float, y: float) -> List[float]:
        return [(x - col) * scale, (y - row) * scale]

    drawn = []
    for p in session.correction.prompts:
        if isinstance(p, Click):
            x, y = shown(p.x + 0.5, p.y + 0.5)  # the clicked pixel's centre
            drawn.append({"kind": "point", "positive": p.positive, "x": x, "y": y})
        elif isinstance(p, Box):
            (x0, y0), (x1, y1) = shown(p.x0, p.y0), shown(p.x1, p.y1)
            drawn.append({"kind": "box", "positive": p.positive, "x0": x0, "y0": y0, "x1": x1, "y1": y1})
        else:
            kind = "stroke" if isinstance(p, Stroke) else "polygon"
            drawn.append({"kind": kind, "positive": p.positive, "points": [shown(x, y) for x, y in p.points]})
    return drawn


# --- browser → server -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Gesture:
    """A finished gesture as the canvas sends it: points in canvas pixels, and the zoom (canvas
    pixels per picture pixel) and pan (where the picture's corner is, in canvas pixels) in effect."""

    kind: str  # point, box, stroke or polygon
    positive: bool
    points: Tuple[Tuple[float, float], ...]
    zoom: float
    pan: Tuple[float, float]
    radius: float = 0.0  # strokes: full-resolution pixels

    @classmethod
    def from_event(cls, data: Dict[str, Any]) -> "Gesture":
        """Read the canvas's event data; anything malformed is a ``CorrectionError``."""
        try:
            points = tuple((float(x), float(y)) for x, y in data["points"])
            gesture = cls(str(data["kind"]), bool(data["positive"]), points, float(data["zoom"]),
                          (float(data["pan"][0]), float(data["pan"][1])), float(data.get("radius") or 0))  # fmt: skip
        except (KeyError, TypeError, ValueError, IndexError) as error:
            raise CorrectionError(f"the canvas sent an unreadable gesture ({error})") from None
        needed = {"point": (1, 1), "box": (2, 2), "stroke": (1, MAX_GESTURE_POINTS), "polygon": (3, MAX_GESTURE_POINTS)}
        if gesture.kind not in needed:
            raise CorrectionError(f"the canvas sent an unknown gesture {gesture.kind!r}")
        low, high = needed[gesture.kind]
        if not low <= len(points) <= high:
            raise CorrectionError(f"a {gesture.kind} needs {low}" + (f" to {high}" if high > low else "")
                                  + f" points, not {len(points)}")  # fmt: skip
        if not all(map(math.isfinite, (gesture.zoom, *gesture.pan, *(v for p in points for v in p)))):
            raise CorrectionError("the gesture has coordinates that are not finite numbers")
        if gesture.zoom <= 0:
            raise CorrectionError("the canvas sent a gesture at zoom 0")
        return gesture


def to_prompt(session: LabelingSession, gesture: Gesture) -> Prompt:
    """The prompt a gesture means, in full-resolution image pixels."""
    points = image_points(session, gesture.points, gesture.zoom, gesture.pan)
    if gesture.kind == "point":
        (x, y), = points  # fmt: skip
        return Click(math.floor(x), math.floor(y), gesture.positive)
    if gesture.kind == "box":
        (x0, y0), (x1, y1) = points[0], points[-1]
        return Box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1), gesture.positive)
    if gesture.kind == "stroke":
        return Stroke(points, gesture.radius, gesture.positive)
    return Polygon(points, gesture.positive)


def image_points(session: LabelingSession, points: Sequence[Tuple[float, float]], zoom: float,
                 pan: Tuple[float, float]) -> Tuple[Tuple[float, float], ...]:  # fmt: skip
    """Canvas pixels at ``zoom`` and ``pan`` → full-resolution image coordinates (pixel i spans [i, i + 1))."""
    col, row, width, height = session.view
    shown_height, shown_width = session.backdrop.shape[:2]
    return tuple((col + (x - pan[0]) / zoom * width / shown_width, row + (y - pan[1]) / zoom * height / shown_height)
                 for x, y in points)  # fmt: skip
