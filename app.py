"""translandseg web app: upload an image, see and download its automatic landslide mask.

UI wiring only; the work is done by the ``translandseg`` package.
"""

import argparse
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

import numpy as np
from rasterio.windows import Window

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from a labeling tool
import gradio as gr  # noqa: E402

from translandseg.cli import USER_ERRORS
from translandseg.loading import LoadedModel, load_model
from translandseg.predict import Predictor, default_output, encode_mask, mask_output
from translandseg.raster import RasterImage

log = logging.getLogger("translandseg.app")
OVERLAY_COLOUR = np.array([255, 40, 40], np.float32)


@dataclass
class ModelStatus:
    loaded: Optional[LoadedModel]
    message: str


def load_status(args: argparse.Namespace) -> ModelStatus:
    """The model to serve, or the reason there is none (shown in the UI and the log)."""
    if args.adapter is None:
        return ModelStatus(None, "No trained adapter given: train one with `translandseg train DATA --out RUN` "
                                 "and start the app with `--adapter RUN/adapter.safetensors`.")  # fmt: skip
    try:
        loaded = load_model(args.sam, args.sam_checkpoint, args.adapter, device=args.device, cache=args.cache_dir)
    except USER_ERRORS as error:
        return ModelStatus(None, f"The model could not be loaded: {error}")
    return ModelStatus(loaded, f"Model: {loaded.describe()}")


def overlay(rgb: np.ndarray, mask: np.ndarray, opacity: float) -> np.ndarray:
    """``rgb`` with landslide pixels tinted red at ``opacity``."""
    out = rgb.astype(np.float32)
    out[mask] = (1 - opacity) * out[mask] + opacity * OVERLAY_COLOUR
    return out.round().astype(np.uint8)


def segment(file_path: Optional[str], bands_text: str, opacity: float, status: ModelStatus,
            out_dir: Path) -> Tuple[Optional[np.ndarray], Optional[str], str]:  # fmt: skip
    """Event handler: (overlay image, mask file to download, message)."""
    if status.loaded is None:
        return None, None, status.message
    if not file_path:
        return None, None, "Upload a PNG, JPEG or GeoTIFF image first."
    try:
        bands = tuple(int(b) for b in bands_text.split(",")) if bands_text.strip() else None
        with RasterImage(Path(file_path), bands) as image:
            rgb, valid = image.read_whole()  # decoded once: for the model and for the overlay
            prob = Predictor(status.loaded.model).predict_array(rgb, valid)
            output = default_output(Path(file_path), out_dir, image.is_georeferenced)
            with mask_output(image, output) as writer:
                writer.write(Window(0, 0, image.width, image.height), encode_mask(prob, probability=False))
        mask = prob > 0.5
    except USER_ERRORS as error:
        return None, None, f"Cannot segment this file: {error}"
    share = 100 * mask.mean()
    return overlay(rgb, mask, opacity), str(output), f"{share:.1f} % of the image is landslide. {status.message}"


def build_ui(status: ModelStatus, out_dir: Path) -> gr.Blocks:
    with gr.Blocks(title="translandseg") as demo:
        gr.Markdown("# translandseg\nAutomatic landslide masks from TransLandSeg (SAM + adaptive transfer learning).")
        banner = gr.Markdown(status.message if status.loaded else f"**{status.message}**")
        with gr.Row():
            with gr.Column():
                upload = gr.File(label="Image (PNG, JPEG, GeoTIFF)", type="filepath")
                bands = gr.Textbox(label="Bands as R,G,B (blank: automatic, 4,3,2 for 4+ bands)")
                opacity = gr.Slider(0, 1, value=0.45, label="Mask opacity")
                run = gr.Button("Segment", variant="primary")
            with gr.Column():
                shown = gr.Image(label="Automatic mask", type="numpy")
                download = gr.File(label="Mask (GeoTIFF keeps CRS and transform)")
        run.click(lambda f, b, o: segment(f, b, o, status, out_dir), [upload, bands, opacity],
                  [shown, download, banner], concurrency_limit=1)  # fmt: skip
    return demo


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="translandseg web app")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    parser.add_argument("--sam", default=os.environ.get("TRANSLANDSEG_SAM"), help="SAM size (default: the adapter's)")
    parser.add_argument("--sam-checkpoint", type=Path, default=os.environ.get("TRANSLANDSEG_SAM_CHECKPOINT"))
    parser.add_argument("--adapter", type=Path, default=os.environ.get("TRANSLANDSEG_ADAPTER"))
    parser.add_argument("--cache-dir", type=Path, help="checkpoint cache (default $TRANSLANDSEG_CACHE_DIR)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    if args.sam is None and args.adapter is not None and args.adapter.is_file():
        from translandseg.adapter import read_adapter_info

        args.sam = read_adapter_info(args.adapter).base_model
    args.sam = args.sam or "vit_b"
    return args


def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    status = load_status(args)
    log.info(status.message)
    out_dir = Path(tempfile.mkdtemp(prefix="translandseg-masks-"))
    build_ui(status, out_dir).queue().launch(server_name=args.host, server_port=args.port)


if __name__ == "__main__":
    main()
