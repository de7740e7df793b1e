"""The translandseg web app: upload → automatic mask → click corrections → review → save → export.

UI wiring only: the work is done by ``annotations.labeling`` and the ``translandseg`` package.
Per-browser state lives in ``gr.State``; the model and the embedding cache are shared.
"""

import argparse
import inspect
import json
import logging
import os
import tempfile
import time
import typing
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from a labeling tool
import gradio as gr  # noqa: E402
import pandas as pd  # noqa: E402  (gradio's own dependency, for its plots)

from annotations.accounts import Accounts  # noqa: E402
from annotations.exporting import FORMATS, describe_export, export_training_set  # noqa: E402
from annotations.labeling import WHOLE_IMAGE, LabelingSession, Limits, Workspace  # noqa: E402
from annotations.store import STATUSES  # noqa: E402
from annotations.training_runs import (  # noqa: E402
    RetrainRefused,
    activate,
    auto_activate,
    current_run,
    lineage,
    request_cancel,
    set_auto_activate,
)

from ..default_model import choose_model  # noqa: E402
from ..interactive.correction import Box, Prompt  # noqa: E402
from ..interactive.embedding_cache import EmbeddingCache  # noqa: E402
from ..interactive.painting import Polygon, Stroke  # noqa: E402
from ..loading import load_model  # noqa: E402
from ..predict import DEFAULT_THRESHOLD, PRECISIONS, SCALES, VIEWS  # noqa: E402
from ..sam_checkpoints import cache_dir  # noqa: E402
from ..training.retraining import RetrainSettings, start_retraining  # noqa: E402
from ..user_input import USER_ERRORS, probability_threshold, tile_side  # noqa: E402
from .canvas import Gesture, labeling_canvas, scene, to_prompt  # noqa: E402

log = logging.getLogger("translandseg.app")
EXAMPLE = Path(__file__).resolve().parents[2] / "assets" / "example_hillside.tif"  # in a checkout or a Space
STRETCHES = {"2-98 %": (2.0, 98.0), "0.5-99.5 %": (0.5, 99.5), "min-max": (0.0, 100.0)}
# After an image opens: bring the canvas and the review buttons into view if the page was scrolled
# (to the queue, say) so that their top is out of sight.
SHOW_CANVAS = """() => { const top = document.querySelector('#canvas-column')?.getBoundingClientRect().top;
  if (top !== undefined && (top < 0 || top > window.innerHeight / 2)) window.scrollBy({top: top - 4}); }"""
NAME_KEY = "translandseg-annotator"  # where the browser keeps the typed name (without accounts)
QUEUE_COLUMNS = ["name", "status", "who", "unsure", "id"]  # who labelled and reviewed; the active version's
# uncertainty (0-1 bits, "" where unscored); the id opens the row, unshown
QUEUE_ORDER = ("unlabelled", "pending", "needs-work", "rejected", "accepted")  # what waits comes first
ALL_IMAGES = "all images"
TILE_PROGRESS = gr.Progress(track_tqdm=True)  # handlers that open images show the automatic mask's tiles
CSS = """
.tls-problem {color: #b91c1c; font-weight: 600; border-left: 4px solid #dc2626; padding-left: 8px}
.tls-note {color: #92400e; border-left: 4px solid #f59e0b; padding-left: 8px}
#canvas-column, #review-column {position: sticky; top: 4px; align-self: flex-start}
#queue th:last-child, #queue td:last-child {display: none}
#queue table {font-size: 12px}
"""


def problem(text: str) -> str:
    """A message that says something was refused or went wrong, drawn in red."""
    return f'<div class="tls-problem">{text}</div>'


def note(text: str) -> str:
    """A message the analyst should notice (a fallback, unsaved work left), drawn in amber."""
    return f'<div class="tls-note">{text}</div>'


def banner(workspace: Workspace) -> str:
    """The model line above the app: bold when automatic masks are unavailable."""
    model, message = workspace.model, workspace.model_message.replace("\n", " ")
    return f"**{message}**" if model is None or model.version is None else message


def default_data_dir() -> Path:
    """``$TRANSLANDSEG_DATA_DIR``, else ``/data/translandseg`` (Hugging Face persistent storage), else
    ``~/.local/share/translandseg``."""
    if os.environ.get("TRANSLANDSEG_DATA_DIR"):
        return Path(os.environ["TRANSLANDSEG_DATA_DIR"])
    if os.path.isdir("/data") and os.access("/data", os.W_OK):
        return Path("/data/translandseg")
    return Path.home() / ".local/share/translandseg"


def open_workspace(args: argparse.Namespace) -> Workspace:
    """Load the model (or explain why not) and open the store."""
    try:
        choice = choose_model(args.sam, args.sam_checkpoint, args.adapter, args.cache_dir)
        loaded = load_model(choice.model_type, args.sam_checkpoint, choice.adapter, device=args.device,
                            cache=args.cache_dir)  # fmt: skip
        message = f"Model: {loaded.describe()}." + (f" ({choice.reason[0].upper()}{choice.reason[1:]}.)"
                                                    if choice.reason else "")  # fmt: skip
        if loaded.version is None:
            message += (" No trained adapter was given, so there are no automatic masks; SAM clicks work. "
                        "Train one with `translandseg train` and start the app with `--adapter FILE`.")  # fmt: skip
    except USER_ERRORS as error:
        loaded, message = None, f"No model is loaded, so there are no automatic masks and clicks do nothing: {error}"
    log.info(message)
    data_dir = args.data_dir
    embeddings = EmbeddingCache(args.embedding_cache_mb, cache_dir(args.cache_dir) / "embeddings")
    limits = Limits(max_bytes=int(args.max_file_mb * 2**20), max_pixels=args.max_pixels)
    accounts = Accounts(args.users) if args.users else None
    return Workspace(args.db or data_dir / "labels.db", data_dir / "images", loaded, message, embeddings, limits,
                     cache_dir=args.cache_dir, accounts=accounts, automatic_views=args.views,
                     automatic_threshold=args.threshold, automatic_precision=args.precision,
                     automatic_scale=args.scale, automatic_tile_size=args.tile_size,
                     focus_min_side=args.focus_side)  # fmt: skip


# --- handlers: (state, outputs...) in, updates out ------------------------------------------------


def bind(handler: Callable, *leading) -> Callable:
    """``handler`` with its first arguments given, for an event listener.

    Unlike ``functools.partial`` it keeps the rest of the handler's signature and type hints, which
    is how Gradio knows to pass a ``gr.Request`` (who is signed in), ``gr.EventData`` or
    ``gr.Progress``: behind a partial those parameters silently stay at their defaults.
    """

    def bound(*args, **kwargs):
        return handler(*leading, *args, **kwargs)

    signature = inspect.signature(handler)
    names = list(signature.parameters)[: len(leading)]
    bound.__signature__ = signature.replace(parameters=list(signature.parameters.values())[len(leading) :])
    bound.__annotations__ = {k: v for k, v in typing.get_type_hints(handler).items() if k not in names}
    bound.__name__ = bound.__qualname__ = handler.__name__
    return bound


def signed_in(request: Optional[gr.Request]) -> str:
    """The user signed in through the app's login (``--users`` or ``--auth``), or ""."""
    return getattr(request, "username", None) or ""


def annotator_field(remembered: str, request: gr.Request = None):
    """The name box as a page opens: the signed-in user, not editable; else the name this browser
    typed last."""
    user = signed_in(request)
    if user:
        return gr.Textbox(value=user, label="Signed in as (recorded with every save)", interactive=False)
    return gr.Textbox(value=remembered) if remembered else gr.skip()  # never blank what is being typed


def _annotator(workspace: Workspace, name: str, request: Optional[gr.Request]) -> str:
    """Who is working: with accounts, always the signed-in user, whatever the name box says (an
    annotator cannot review as someone else); without, the signed-in or else the typed name."""
    if workspace.accounts is not None:
        return signed_in(request)
    return (signed_in(request) or name or "").strip()


def queue_rows(workspace: Workspace, shown: str = ALL_IMAGES) -> List[List[str]]:
    """The store's images for the queue table, what waits for work first; ``shown`` filters by status."""
    rows = [[r["name"], r["status"] if r["labelled"] else "unlabelled", _who(r), _uncertainty(r["uncertainty"]), r["id"]]
            for r in workspace.queue()]  # fmt: skip
    rows.sort(key=lambda row: QUEUE_ORDER.index(row[1]))  # stable: in the store's queue order within a status
    return [row for row in rows if shown in (ALL_IMAGES, row[1])]


def _who(row: Dict) -> str:
    """Who labelled a queue row's image and who reviewed it, with the reviewer's reason."""
    who, reviewer, reason = row["annotator"] or "", row["reviewer"] or "", row["reason"] or ""
    if reviewer and (reviewer != who or reason):
        who += f"; {reviewer}" + (f": {reason}" if reason else "")
    return who


def review_note(session: Optional[LabelingSession]) -> str:
    """The open image's latest review, beside the canvas: status, who, when and why."""
    if session is None:
        return ""
    review = session.latest_review()
    if review is None:
        return "Not reviewed yet."
    when = review["created_at"][:16].replace("T", " ")
    reason = f": “{review['reason']}”" if review["reason"] else ""
    return f"Latest review: **{review['status']}** by {review['reviewer'] or 'someone'}, {when} UTC{reason}"


def _view(session: Optional[LabelingSession], message: str):
    return scene(session), message


def _describe(session: LabelingSession) -> str:
    image = session.image
    georef = f", {image.crs.to_string()}" if image.is_georeferenced else ", not georeferenced"
    return (f"**{session.name}**: {image.width}x{image.height} px, {image.count} band(s) shown as "
            f"{image.rendering}{georef}. {session.message}")  # fmt: skip


def upload(workspace: Workspace, files, name: str, bands: str, stretch: str,
           session: Optional[LabelingSession], request: gr.Request = None,
           progress=TILE_PROGRESS):  # fmt: skip
    """Register uploaded images in the store; open the first new one that can be read (else the
    first one already stored)."""
    files = [files] if isinstance(files, (str, Path)) else list(files or [])
    if not files:
        return session, *_view(session, "Choose one or more images to upload.")
    messages, added = [], []
    for path in files:
        uploaded = Path(path).name  # Gradio keeps the name the analyst's file had
        try:
            added.append(workspace.add_upload(Path(path), uploaded, _annotator(workspace, name, request)))
        except USER_ERRORS as error:
            messages.append(problem(str(error) if str(error).startswith(uploaded) else f"{uploaded}: {error}"))
    picture = gr.skip()
    if added:
        first = next((image_id for image_id, known in added if not known), added[0][0])
        author = _annotator(workspace, name, request)
        session, picture, opened = _open_stored(workspace, first, bands, stretch, session, author)
        messages.insert(0, opened + _upload_counts([known for _, known in added]))
    return session, picture, "\n\n".join(messages)


def _upload_counts(known: List[bool]) -> str:
    """How many uploads were new to the queue and how many it held already."""
    old = sum(known)
    if len(known) == 1:
        return " It was in the queue already." if old else ""
    return f" {len(known) - old} new image(s) added to the queue" + (f", {old} already in it." if old else ".")


def open_example(workspace: Workspace, name: str, bands: str, stretch: str,
                 session: Optional[LabelingSession], request: gr.Request = None,
                 progress=TILE_PROGRESS):  # fmt: skip
    """Upload the project's generated example scene."""
    return upload(workspace, [str(EXAMPLE)], name, bands, stretch, session, request, progress)


def _uncertainty(score: Optional[float]) -> str:
    return "" if score is None else f"{score:.2f}"


def open_from_queue(workspace: Workspace, evt: gr.SelectData, name: str, bands: str, stretch: str,
                    session: Optional[LabelingSession], request: gr.Request = None,
                    progress=TILE_PROGRESS):  # fmt: skip
    row = evt.row_value if evt is not None else None
    if not row:
        return session, *_view(session, "Pick an image in the queue.")
    return _open_stored(workspace, row[-1], bands, stretch, session, _annotator(workspace, name, request))


def _open_stored(workspace: Workspace, image_id: str, bands: str, stretch: str,
                 session: Optional[LabelingSession], author: str, leave: bool = False):  # fmt: skip
    """Open a stored image for ``author``, with their draft of it replayed. While the open image has
    unsaved edits, another image is not opened unless ``leave``: the session asks first (``leaving_for``)."""
    if session is not None and session.edited_unsaved and not leave and image_id != session.image_id:
        session.leaving_for = image_id
        return session, gr.skip(), note(f"{session.name} has unsaved edits: save them, discard them, or stay "
                                        "(the buttons under the review column).")  # fmt: skip
    try:
        new = LabelingSession.open_stored(workspace, image_id, _bands(bands), STRETCHES[stretch])
    except USER_ERRORS as error:
        return session, *_view(session, problem(f"Cannot open {workspace.image_name(image_id)}: {error}"))
    restored = new.restore_draft(author)
    _close(session)
    return new, *_view(new, _describe(new) + (note(restored) if restored else ""))


def leave_offer(session: Optional[LabelingSession]):
    """The save / discard / stay choice, shown while an image waits to open over unsaved edits."""
    return gr.Column(visible=bool(session is not None and session.leaving_for))


def leave(workspace: Workspace, choice: str, name: str, reason: str, bands: str, stretch: str,
          session: Optional[LabelingSession], request: gr.Request = None, progress=TILE_PROGRESS):  # fmt: skip
    """Answer the question before leaving an image with unsaved edits: "save" them (then open the
    waiting image; a refused save stays), "discard" them (drops the draft) or "stay"."""
    waiting = session.leaving_for if session is not None else None
    if waiting is None:
        return session, gr.skip(), "Nothing waits to open."
    session.leaving_for = None
    if choice == "stay":
        return session, gr.skip(), f"Still on {session.name}, with its unsaved edits."
    done = f"Discarded the unsaved edits on {session.name}."
    if choice == "save":
        done, _ = save(workspace, None, name, reason, session, request)
        if session.unsaved:
            return session, gr.skip(), done
    else:
        session.discard_edits()
    session, picture, opened = _open_stored(workspace, waiting, bands, stretch, session, session.author, leave=True)
    return session, picture, f"{done} {opened}"


def gesture(evt: gr.EventData, session: Optional[LabelingSession]):
    """A finished gesture on the canvas: a point, box, brush or eraser stroke, or polygon."""
    if session is None:
        return gr.skip(), problem("Upload or pick an image first.")
    try:
        prompt = to_prompt(session, Gesture.from_event(evt._data))
    except USER_ERRORS as error:
        return gr.skip(), problem(f"Edit not applied: {error}")
    what, start = describe_prompt(session, prompt), time.perf_counter()
    try:
        session.correction.apply(prompt)
    except USER_ERRORS as error:
        return gr.skip(), problem(f"{what} not applied: {error}")
    milliseconds = (time.perf_counter() - start) * 1000
    session.keep_draft()
    done = f"{what}: mask updated in {milliseconds:.0f} ms."
    fallback = note(f"Note: {session.correction.note}.") if session.correction.note else ""
    return scene(session), done + fallback


def describe_prompt(session: LabelingSession, prompt: Prompt) -> str:
    """A prompt in words; a click with its pixel and, when georeferenced, its map coordinates."""
    sign = "Positive" if prompt.positive else "Negative"
    if isinstance(prompt, Box):
        return f"{sign} box"
    if isinstance(prompt, Stroke):
        return f"{'Brush' if prompt.positive else 'Eraser'} stroke ({2 * prompt.radius:g} px wide)"
    if isinstance(prompt, Polygon):
        return f"Polygon {'filled' if prompt.positive else 'cleared'}"
    where = session.map_coordinates(prompt.x, prompt.y)
    return (f"{sign} click at pixel ({prompt.x:g}, {prompt.y:g})"
            + (f" = ({where[0]:.2f}, {where[1]:.2f}) {where[2]}" if where else ""))  # fmt: skip


def edit(action: str, session: Optional[LabelingSession]):
    """Undo, redo or reset to the automatic mask."""
    if session is None:
        return gr.skip(), problem("Upload or pick an image first.")
    try:
        getattr(session.correction, action)()
    except USER_ERRORS as error:
        return gr.skip(), str(error).capitalize() + "."
    session.keep_draft()
    done = {"undo": "Undone", "redo": "Redone", "reset": "Back to the automatic mask"}[action]
    return scene(session), f"{done}; {len(session.correction.prompts)} edit(s) in effect."


def save(workspace: Workspace, status: Optional[str], name: str, reason: str,
         session: Optional[LabelingSession], request: gr.Request = None):  # fmt: skip
    """Save the mask (with a review status when given). Needs no model, so it never waits behind
    another session's model work; ``open_next`` follows a review. Returns (message, reason): the
    reason box is emptied once it is stored."""
    if session is None:
        return problem("Upload or pick an image first."), reason
    annotator = _annotator(workspace, name, request)
    if not annotator:
        return problem("Sign in before saving." if workspace.accounts else "Enter your name before saving."), reason
    if workspace.accounts is not None and not workspace.accounts.may_review(annotator, status):
        return problem(f"Not saved: only reviewers can mark an image {status}; {annotator} is an annotator. "
                       "Save, or mark it Needs work, for a reviewer to decide."), reason  # fmt: skip
    try:
        annotation_id = session.save(annotator, status, reason.strip())
    except USER_ERRORS as error:
        return problem(f"Not saved: {error}"), reason
    return f"Saved {session.name} as annotation {annotation_id}" + (
        f", {status}." if status else "."), ""


def reapply(session: Optional[LabelingSession]):
    """After a stale save: reopen the image at its latest label and re-apply this session's edits
    on top, shown for the analyst to check and save."""
    if session is None or not session.stale:
        return session, gr.skip(), "Nothing to re-apply: the last save was not refused."
    try:
        latest, skipped = session.reapplied_to_latest()
    except USER_ERRORS as error:
        return session, gr.skip(), problem(f"Cannot reopen {session.name}: {error}")
    applied = len(session.edits_since_open()) - skipped
    latest.author = session.author
    latest.keep_draft()
    _close(session)
    message = (f"{latest.message} Re-applied {applied} of your edit(s) on top"
               + (f"; {skipped} no longer apply" if skipped else "") + ". Check the mask, then save.")  # fmt: skip
    return latest, scene(latest), message


def stale_offer(session: Optional[LabelingSession]):
    """The re-apply button, shown while the open image's last save was refused as stale."""
    return gr.Button(visible=bool(session is not None and session.stale))


def open_next(workspace: Workspace, message: str, bands: str, stretch: str,
              session: Optional[LabelingSession], progress=TILE_PROGRESS):  # fmt: skip
    """After a stored review, open the next pending image (its automatic mask is model work)."""
    if session is None or session.reviewed is None:  # no review stored by the last save
        return session, gr.skip(), gr.skip()
    following = workspace.next_pending(session.image_id)
    if following is None or following == session.image_id:
        return session, gr.skip(), message + " No image is waiting for review."
    session, picture, opened = _open_stored(workspace, following, bands, stretch, session, session.author)
    return session, picture, f"{message} Next: {opened}"


def view_choices(session: Optional[LabelingSession]):
    """The views of the open image, for the view picker (reset to the whole image)."""
    return gr.Dropdown(choices=session.views() if session else [WHOLE_IMAGE], value=WHOLE_IMAGE)


def show_view(view: str, session: Optional[LabelingSession]):
    if session is None:
        return None
    session.show(view)
    return scene(session)


def export(workspace: Workspace, statuses: List[str], formats: List[str]):
    if not statuses or not formats:
        return None, problem("Choose at least one status and one format.")
    out = Path(tempfile.mkdtemp(prefix="translandseg-export-")) / "translandseg-export"
    try:
        with workspace.store() as store:
            archive = export_training_set(store, out, formats, statuses, make_zip=True)
    except USER_ERRORS as error:
        return None, problem(f"Nothing exported: {error}")
    return str(archive), f"Exported {', '.join(statuses)} labels: {describe_export(out, formats)}"


def model_report(workspace: Workspace) -> str:
    """The model in use in a few lines: base, adapter, and its headline figures."""
    model = workspace.model
    if model is None:
        return f"**{workspace.model_message}**"
    lines = [f"- Base: `{model.model_type}` (`{model.sam_checkpoint.name}`), input {model.model.image_size} px, "
             f"ATL `{model.model.atl.variant.name}`"]  # fmt: skip
    if model.adapter is None:
        lines.append("- Adapter: **none** (no automatic masks; clicks use SAM alone)")
        return "\n".join(lines)
    lines.append(f"- Adapter: `{model.version}`, trained on {_snapshot_words(model.adapter.training_snapshot)}")
    lines.append("- " + headline(model.adapter.metrics))
    return "\n".join(lines)


def headline(metrics: Dict[str, float]) -> str:
    """The figures an analyst asks first: how good the automatic mask is, and how many clicks it takes."""
    if "iou" not in metrics:
        return "No figures were recorded for it."
    text = f"On images it was not trained on: automatic mask IoU **{metrics['iou']:.2f}**"
    if "noc85_from_automatic" in metrics:
        text += f"; clicks to reach IoU 0.85 from it: **{metrics['noc85_from_automatic']:.1f}** on average"
    return text + "."


def model_details(workspace: Workspace) -> str:
    """Every figure recorded in the adapter, as a table in words, and the base's checksum."""
    model = workspace.model
    if model is None or model.adapter is None:
        return "No figures recorded."
    table = metrics_table(model.adapter.metrics) if model.adapter.metrics else "No figures recorded."
    return f"Base checkpoint SHA-256 `{model.sam_sha256[:16]}…`.\n\n{table}"


METRIC_NAMES = {"iou": "landslide IoU", "f1": "landslide F1", "miou": "mean IoU (landslide, background)",
                "precision": "precision", "recall": "recall", "oa": "overall accuracy",
                "harmful_clicks": "share of clicks that lower IoU by more than 0.02",
                "fallback_clicks": "share of clicks answered by the local fallback",
                "landslide_free_pixels_marked": "share of the landslide-free images' pixels marked",
                "landslide_free_images_marked": "share of the landslide-free images with any mark"}  # fmt: skip


def metric_label(key: str) -> str:
    """A metric key as words: ``noc85_from_automatic`` → clicks to reach IoU 0.85, from the automatic
    mask; ``bijie-full/iou`` → landslide IoU on bijie-full."""
    sample_set, _, key = key.rpartition("/")
    name, _, start = key.partition("_from_")
    if name.startswith("noc") and name[3:].isdigit():
        text = f"clicks to reach IoU 0.{name[3:]} (NoC@{name[3:]})"
    elif name.startswith("iou@"):
        text = f"IoU after {name[4:]} click(s)"
    else:
        text = METRIC_NAMES.get(name, name.replace("_", " "))
    return text + (f", from the {start} mask" if start else "") + (f" on {sample_set}" if sample_set else "")


def metrics_table(metrics: Dict[str, float]) -> str:
    """Test-side or validation metrics as a Markdown table."""
    rows = [f"| {metric_label(k)} | {v:.3f} |" for k, v in metrics.items()]
    return "| metric | value |\n| --- | --- |\n" + "\n".join(rows)


def _snapshot_words(snapshot: str) -> str:
    """An adapter's training snapshot in words: a recipe's JSON is summarised by its image counts."""
    if snapshot.startswith("{"):
        recipe = json.loads(snapshot)
        return (f"{len(recipe.get('training', []))} images by the recorded recipe "
                f"({len(recipe.get('test', recipe.get('held_out', [])))} kept apart for the figures below)")  # fmt: skip
    return snapshot or "unrecorded data"


# --- retraining ---------------------------------------------------------------------------------------

TRAINS_CHOICES = [("The ATL and the decoder (the paper's; epochs and budget above)", "adapter"),
                  ("The decoder alone, on the active version's embeddings (a round of minutes)", "decoder")]
VERSION_COLUMNS = ["version", "active", "created", "trained on", "validation mIoU", "IoU", "F1", "what changed"]


def retrain(workspace: Workspace, name: str, statuses: List[str], epochs: float, minutes: float,
            trains: str = "adapter", request: gr.Request = None) -> str:  # fmt: skip
    """Start a retraining run in its own process; says why when it cannot start."""
    model = workspace.model
    if model is None:
        return "**No model is loaded, so there is nothing to retrain.**"
    cache = str(workspace.cache_dir) if workspace.cache_dir else None
    settings = RetrainSettings(model.model_type, str(model.sam_checkpoint), cache, str(model.model.device),
                               tuple(statuses or ["accepted"]), int(epochs), max_minutes=float(minutes),
                               trains=trains)  # fmt: skip
    try:
        run_id, _ = start_retraining(workspace.db_path, settings, _annotator(workspace, name, request))
    except RetrainRefused as error:
        return f"**{error}**"
    return f"Retraining run {run_id} started."


def cancel_retraining(workspace: Workspace) -> str:
    with workspace.store() as store:
        run_id = request_cancel(store)
    return f"Cancelling run {run_id}." if run_id else "No retraining is running."


def training_status(workspace: Workspace) -> str:
    """The newest run: status, epoch, loss, validation metrics, ETA; or how to start one."""
    with workspace.store() as store:
        run = current_run(store)
    if run is None:
        return "No retraining yet."
    active = run["status"] in ("queued", "running")
    line = f"Run {run['id']} ({run['snapshot']}): **{run['status']}**"
    if active and run["message"]:
        line += f": {run['message']}"  # the phase, from the first second
    if run["epoch"]:
        line += f"; epoch {run['epoch']}/{run['epochs']} done, loss {run['loss']:.3f}"
        line += "".join(f", val {k} {v:.3f}" for k, v in run["val_metrics"].items())
    if active and run["eta_seconds"] is not None:
        line += f"; about {run['eta_seconds'] / 60:.0f} min left"
    elif not active and run["message"]:
        line += f": {run['message']}"
    return line + "."


def version_rows(workspace: Workspace) -> List[List[str]]:
    """The versions, newest first: figures on their validation images and what changed from their base."""
    with workspace.store() as store:
        versions = lineage(store)
    rows = []
    for m in reversed(versions):
        metrics = m["metrics"]
        rows.append([m["version"], "yes" if m["active"] else "", m["created_at"][:19], _trained_on(m),
                     *(f"{metrics[k]:.3f}" if k in metrics else "" for k in ("miou", "iou", "f1")), _change(m)])  # fmt: skip
    return rows


def _trained_on(version: Dict) -> str:
    if version["labels"]:
        return f"{version['labels']} labels of this store ({version['training_snapshot']})"
    return _snapshot_words(version["training_snapshot"])


def _change(version: Dict) -> str:
    """What a retrained version changed: its base and the validation mIoU before and after."""
    if not version["labels"]:
        return "registered from its file"
    text = f"from {version['base_version'] or 'a fresh adapter'}"
    before, after = version["base_metrics"].get("miou"), version["metrics"].get("miou")
    if before is not None and after is not None:
        text += f": validation mIoU {before:.3f} -> {after:.3f} on the same images"
    return text


def version_plot(workspace: Workspace) -> pd.DataFrame:
    """Each version's validation mIoU against the labels it learnt from, the active one marked."""
    with workspace.store() as store:
        versions = lineage(store)
    rows = [{"labels": m["labels"], "validation mIoU": m["metrics"]["miou"], "version": m["version"],
             "state": "active" if m["active"] else "other"} for m in versions if "miou" in m["metrics"]]  # fmt: skip
    return pd.DataFrame(rows, columns=["labels", "validation mIoU", "version", "state"])


def activate_version(workspace: Workspace, version: str) -> str:
    """Make ``version`` the active one (a rollback when it is older); new images use it."""
    if not version:
        return "Choose a version first."
    with workspace.store() as store:
        activate(store, version)
    workspace.follow_active_model()
    return f"Version {version} is active: images opened from now on get its automatic masks. {workspace.model_message}"


def set_auto(workspace: Workspace, enabled: bool) -> None:
    with workspace.store() as store:
        set_auto_activate(store, enabled)


def _model_tab(workspace: Workspace, name: gr.Textbox) -> None:
    """Retraining first; then the versions; then the model in use, its figures behind a toggle."""
    gr.Markdown("### Retrain the adapter from the labels\nRuns in its own process; labeling goes on. "
                "Validation images are fixed per image, so versions compare on the same images.")  # fmt: skip
    with gr.Row():
        statuses = gr.CheckboxGroup(list(STATUSES), value=["accepted"], label="Train on latest labels with status")
        epochs = gr.Number(10, precision=0, minimum=1, label="Epochs")
        minutes = gr.Number(30, minimum=1, label="Time budget (minutes)")
    trains = gr.Radio(TRAINS_CHOICES, value=TRAINS_CHOICES[0][1], label="What trains")
    with gr.Row():
        start = gr.Button("Retrain adapter", variant="primary", elem_id="retrain")
        cancel = gr.Button("Cancel retraining", elem_id="cancel-retrain")
    outcome = gr.Markdown(elem_id="retrain-outcome")  # a refusal or a start, right under the buttons
    status = gr.Markdown(training_status(workspace), elem_id="retrain-status")
    with workspace.store() as store:
        auto = gr.Checkbox(auto_activate(store), label="Activate a new version automatically when its validation "
                           "mIoU beats the active version's")  # fmt: skip
    rows = version_rows(workspace)
    plot = gr.ScatterPlot(version_plot(workspace), x="labels", y="validation mIoU", color="state",
                          color_map={"active": "#d62728", "other": "#1f77b4"}, tooltip="all", height=220,
                          x_title="labels learnt from", label="Versions by the labels they learnt from")  # fmt: skip
    versions = gr.Dataframe(rows, headers=VERSION_COLUMNS, label="Model versions", interactive=False)
    with gr.Row():
        pick = gr.Dropdown([r[0] for r in rows], label="Version", allow_custom_value=False)
        activate_button = gr.Button("Activate / roll back to this version")
    gr.Markdown("### The model in use")
    report = gr.Markdown(model_report(workspace), elem_id="model-report")
    with gr.Accordion("All recorded figures", open=False):
        details = gr.Markdown(model_details(workspace))
    start.click(bind(retrain, workspace), [name, statuses, epochs, minutes, trains], outcome, api_name="retrain")
    cancel.click(bind(cancel_retraining, workspace), None, outcome, api_name="cancel-retrain")
    auto.input(bind(set_auto, workspace), auto, None, api_name=False)
    activated = activate_button.click(bind(activate_version, workspace), pick, outcome, api_name="activate")
    activated.then(bind(model_report, workspace), None, report, api_name=False)
    activated.then(bind(version_plot, workspace), None, plot, api_name=False)
    activated.then(bind(model_details, workspace), None, details, api_name=False)

    def poll():
        rows = version_rows(workspace)
        return training_status(workspace), rows, gr.update(choices=[r[0] for r in rows]), version_plot(workspace)

    gr.Timer(2.0).tick(poll, None, [status, versions, pick, plot], api_name=False, show_progress="hidden")


def _bands(text: str) -> Optional[Tuple[int, ...]]:
    text = (text or "").strip()
    if not text:
        return None
    try:
        return tuple(int(b) for b in text.replace(" ", "").split(","))
    except ValueError:
        raise ValueError(f"bands must be three numbers like 4,3,2, not {text!r}") from None


def _close(session: Optional[LabelingSession]) -> None:
    if session is not None:
        session.close()


# --- layout ------------------------------------------------------------------------------------------


def build_ui(workspace: Workspace) -> gr.Blocks:
    with gr.Blocks(title="translandseg") as demo:
        gr.Markdown("**translandseg**: landslide labeling with TransLandSeg automatic masks and SAM click "
                    "corrections. " + banner(workspace), elem_id="model-banner")  # fmt: skip
        session = gr.State(None)
        with gr.Tab("Label"):
            with gr.Row(equal_height=False):
                with gr.Column(scale=1, min_width=260):  # who, what to open, the queue first
                    name = gr.Textbox(label="Your name (recorded with every save)", elem_id="annotator",
                                      interactive=workspace.accounts is None)  # fmt: skip
                    remembered = gr.BrowserState("", storage_key=NAME_KEY, secret=NAME_KEY)  # a name, no secret
                    files = gr.File(label="Upload images (PNG, JPEG, GeoTIFF)", file_count="multiple",
                                    type="filepath", elem_id="upload", height=110)  # fmt: skip
                    example = gr.Button("Try the example scene", size="sm", visible=EXAMPLE.is_file())
                    queue_filter = gr.Dropdown([ALL_IMAGES, *QUEUE_ORDER], value=ALL_IMAGES, label="Queue: show",
                                               elem_id="queue-filter")  # fmt: skip
                    queue = gr.Dataframe(queue_rows(workspace), headers=QUEUE_COLUMNS, label="Queue (click to open)",
                                         interactive=False, elem_id="queue", max_height=360,
                                         column_widths=["36%", "24%", "26%", "14%", "0%"])  # fmt: skip
                    with gr.Accordion("Bands, stretch and view", open=False):
                        bands = gr.Textbox(label="Bands shown as R,G,B", placeholder="automatic: 4,3,2 for 4+ bands")
                        stretch = gr.Dropdown(list(STRETCHES), value="2-98 %", label="Stretch (non-8-bit data)")
                        view_picker = gr.Dropdown([WHOLE_IMAGE], value=WHOLE_IMAGE, label="View (large images: "
                                                  "a full-resolution window)", elem_id="view")  # fmt: skip
                with gr.Column(scale=3, elem_id="canvas-column"):  # sticky: in view while the queue scrolls
                    canvas = labeling_canvas()
                with gr.Column(scale=1, min_width=240, elem_id="review-column"):  # beside the canvas, in view
                    with gr.Row():
                        undo = gr.Button("Undo (z)", elem_id="undo", size="sm", min_width=60)
                        redo = gr.Button("Redo (y)", elem_id="redo", size="sm", min_width=60)
                        reset = gr.Button("Reset", elem_id="reset", size="sm", min_width=60)
                    info = gr.Markdown(elem_id="info")
                    with gr.Row():
                        save_button = gr.Button("Save", variant="primary", elem_id="save", min_width=100)
                        accept = gr.Button("Accept", elem_id="accept", min_width=100)
                    with gr.Row():
                        needs_work = gr.Button("Needs work", elem_id="needs-work", min_width=100)
                        reject = gr.Button("Reject", variant="stop", elem_id="reject", min_width=100)
                    reason = gr.Textbox(label="Reason (needed to reject)", elem_id="reason", lines=2)
                    reapply_button = gr.Button("Reopen the latest and re-apply my edits", visible=False,
                                               elem_id="reapply", variant="primary")  # fmt: skip
                    with gr.Column(visible=False, elem_id="leave") as leave_panel:
                        gr.Markdown("**Unsaved edits.** Open the other image after:")
                        with gr.Row():
                            leave_buttons = {choice: gr.Button(label, elem_id=f"leave-{choice}", size="sm", min_width=60,
                                                               variant="primary" if choice == "save" else "secondary")
                                             for choice, label in (("save", "Save"), ("discard", "Discard"),
                                                                   ("stay", "Stay"))}  # fmt: skip
                    review = gr.Markdown(elem_id="latest-review")
        with gr.Tab("Export"):
            statuses = gr.CheckboxGroup(list(STATUSES), value=["accepted"], label="Latest review status")
            formats = gr.CheckboxGroup(list(FORMATS), value=list(FORMATS), label="Formats")
            export_button = gr.Button("Export", variant="primary")
            archive = gr.File(label="Training set (zip)")
            export_info = gr.Markdown()
        with gr.Tab("Model"):
            _model_tab(workspace, name)

        view = [session, canvas, info]
        model_work = {"concurrency_id": "model", "concurrency_limit": 1}
        opened = [
            files.upload(bind(upload, workspace), [files, name, bands, stretch, session], view,
                         api_name="upload", **model_work),
            example.click(bind(open_example, workspace), [name, bands, stretch, session], view,
                          api_name="example", **model_work),
            queue.select(bind(open_from_queue, workspace), [name, bands, stretch, session], view, api_name="open",
                         **model_work),
        ]  # fmt: skip
        opened[0].then(lambda: None, None, files, api_name=False)  # the next upload sends only new files
        canvas.gesture(gesture, session, [canvas, info], api_name=False, concurrency_id="edits", concurrency_limit=4)
        for button, action in ((undo, "undo"), (redo, "redo"), (reset, "reset")):
            button.click(bind(edit, action), session, [canvas, info], api_name=action, concurrency_id="edits",
                         concurrency_limit=4)  # fmt: skip
        for button, status in ((save_button, None), (accept, "accepted"), (needs_work, "needs-work"),
                               (reject, "rejected")):  # fmt: skip
            event = button.click(bind(save, workspace, status), [name, reason, session],
                                 [info, reason], api_name=status or "save", concurrency_id="store",
                                 concurrency_limit=8)  # fmt: skip
            event.then(bind(queue_rows, workspace), queue_filter, queue, api_name=False)
            event.then(review_note, session, review, api_name=False)
            event.then(stale_offer, session, reapply_button, api_name=False)
            if status is not None:
                opened.append(event.then(bind(open_next, workspace), [info, bands, stretch, session],
                                         view, api_name=False, **model_work))  # fmt: skip
        opened.append(reapply_button.click(reapply, session, view, api_name="reapply", **model_work))
        for choice, button in leave_buttons.items():
            opened.append(button.click(bind(leave, workspace, choice), [name, reason, bands, stretch, session], view,
                                       api_name=f"leave-{choice}", **model_work))  # fmt: skip
        for event in opened:  # a new image may be open: whole view, fresh queue (the canvas resets its tools)
            event.then(view_choices, session, view_picker, api_name=False)
            event.then(None, js=SHOW_CANVAS, api_name=False)
            event.then(review_note, session, review, api_name=False)
            event.then(stale_offer, session, reapply_button, api_name=False)
            event.then(leave_offer, session, leave_panel, api_name=False)
            event.then(bind(queue_rows, workspace), queue_filter, queue, api_name=False)
        queue_filter.input(bind(queue_rows, workspace), queue_filter, queue, api_name=False)
        demo.load(bind(queue_rows, workspace), queue_filter, queue, api_name=False)  # every new browser session
        demo.load(annotator_field, remembered, name, api_name=False)
        name.change(lambda typed: typed, name, remembered, api_name=False)  # kept across reloads
        view_picker.input(show_view, [view_picker, session], canvas, api_name="view")
        export_button.click(bind(export, workspace), [statuses, formats], [archive, export_info], api_name="export")
    return demo


def parse_args(argv=None) -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(description="translandseg web app")
    parser.add_argument("--host", default=env("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(env("GRADIO_SERVER_PORT", 7860)))
    parser.add_argument("--db", type=Path, default=env("TRANSLANDSEG_DB"), help="label store (default DATA_DIR/labels.db)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="where the store and uploads persist (default: the folder of --db when given)")
    parser.add_argument("--sam", default=env("TRANSLANDSEG_SAM"),
                        help="base model: vit_b, vit_l, vit_h or lite (default: the adapter's; else vit_b when its "
                        "checkpoint is cached, else the offline default, LiteMedSAM with assets' adapter)")
    parser.add_argument("--sam-checkpoint", type=Path, default=env("TRANSLANDSEG_SAM_CHECKPOINT"))
    parser.add_argument("--adapter", type=Path, default=env("TRANSLANDSEG_ADAPTER"))
    parser.add_argument("--cache-dir", type=Path, help="checkpoints and embeddings (default $TRANSLANDSEG_CACHE_DIR)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--max-file-mb", type=float, default=1024, help="largest upload accepted")
    parser.add_argument("--max-pixels", type=int, default=100_000_000, help="largest image accepted, in pixels")
    parser.add_argument("--embedding-cache-mb", type=float, default=512, help="embeddings kept in memory")
    parser.add_argument("--views", type=int, choices=VIEWS, default=int(env("TRANSLANDSEG_VIEWS", 1)),
                        help="views each automatic mask averages: 8 is sharper and 8 times slower")  # fmt: skip
    parser.add_argument("--threshold", type=probability_threshold,
                        default=env("TRANSLANDSEG_THRESHOLD", str(DEFAULT_THRESHOLD)),
                        help="probability above which the automatic mask marks landslide (lower finds more)")
    parser.add_argument("--precision", choices=PRECISIONS, default=env("TRANSLANDSEG_PRECISION", "auto"),
                        help="the automatic mask's arithmetic: auto (default) takes bfloat16, about twice as fast, "
                        "on a CPU that computes it natively, else float32")  # fmt: skip
    parser.add_argument("--scale", choices=SCALES, default=env("TRANSLANDSEG_SCALE", "whole"),
                        help="how the automatic mask sees a scene: resized whole (default), or in native windows; "
                        "busy scenes of small landslides: --scale native --tile-size 128 (docs/labeling.md)")  # fmt: skip
    parser.add_argument("--tile-size", type=tile_side, default=env("TRANSLANDSEG_TILE_SIZE"),
                        help="the automatic mask's window side in pixels (default: the predictor's)")
    parser.add_argument("--focus-side", type=tile_side, default=env("TRANSLANDSEG_FOCUS_SIDE"),
                        help="the smallest window a click is answered in, enlarged to the model's input (default: "
                        "the whole image up to 1024 px); busy scenes of small landslides: 128")  # fmt: skip
    parser.add_argument("--auth", help="USER:PASSWORD to require one shared login (the user name is recorded)")
    parser.add_argument("--users", type=Path, help="users file of logins with roles (translandseg add-user); "
                        "only reviewers may accept or reject")  # fmt: skip
    args = parser.parse_args(argv)
    args.data_dir = args.data_dir or (args.db.parent if args.db else default_data_dir())  # uploads beside the store
    return args


def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    workspace = open_workspace(args)
    log.info("label store: %s", workspace.db_path)
    auth = workspace.accounts.login if workspace.accounts else (tuple(args.auth.split(":", 1)) if args.auth else None)
    build_ui(workspace).queue().launch(server_name=args.host, server_port=args.port, auth=auth, css=CSS,
                                       max_file_size=int(args.max_file_mb * 2**20))  # fmt: skip
