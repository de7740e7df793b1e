import json

import numpy as np
import rasterio

from conftest import write_geotiff, write_pairs
from translandseg.cli import main


def test_info_reports_vit_l_share_without_a_checkpoint(capsys):
    assert main(["info", "--sam", "vit_l"]) == 0
    out = capsys.readouterr().out
    assert "ATL mlp2_res" in out and "4,200,228 trainable (1.34 %)" in out  # the default on SAM bases
    assert out.count("\n  mlp") == 8 and "conv" in out


def test_train_evaluate_predict_from_the_command_line(tiny_sam_checkpoint, tmp_path, capsys):
    data = write_pairs(tmp_path / "data", 6)
    model = ["--sam", "tiny", "--sam-checkpoint", str(tiny_sam_checkpoint)]
    assert main(["train", str(data), "--out", str(tmp_path / "run"), "--epochs", "2", "--image-size", "64", *model]) == 0
    trained = json.loads(capsys.readouterr().out)
    adapter = trained["adapter"]

    assert main(["evaluate", str(data), "--adapter", adapter, "--sam-checkpoint", str(tiny_sam_checkpoint)]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["images"] == 6 and 0 <= metrics["miou"] <= 1

    scene = write_geotiff(tmp_path / "scene.tif", np.random.default_rng(0).integers(0, 255, (4, 100, 120), dtype=np.uint8))
    png = data / "image" / "s0.png"
    args = ["predict", str(scene), str(png), "--out", str(tmp_path / "masks"), "--adapter", adapter,
            "--sam-checkpoint", str(tiny_sam_checkpoint)]  # fmt: skip
    assert main(args) == 0
    assert capsys.readouterr().out.split() == [str(tmp_path / "masks" / "scene_mask.tif"), str(tmp_path / "masks" / "s0_mask.png")]
    with rasterio.open(tmp_path / "masks" / "scene_mask.tif") as mask:
        assert mask.crs.to_epsg() == 32648 and mask.shape == (100, 120)


def test_train_can_keep_the_last_epoch_of_every_image(tiny_sam_checkpoint, tmp_path, capsys):
    data = write_pairs(tmp_path / "data", 3)
    model = ["--sam", "tiny", "--sam-checkpoint", str(tiny_sam_checkpoint), "--image-size", "64"]
    assert main(["train", str(data), "--out", str(tmp_path / "run"), "--epochs", "2", "--keep-last-epoch", *model]) == 0
    captured = capsys.readouterr()
    assert "3 labelled images: 3 train, 0 validation" in captured.err
    assert json.loads(captured.out)["kept_epoch"] == 2


def test_user_errors_exit_2_with_a_message(tiny_sam_checkpoint, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("hello")
    assert main(["info", "--adapter", str(tmp_path / "notes.txt")]) == 2
    assert "not a readable safetensors adapter" in capsys.readouterr().err
    assert main(["train", str(tmp_path), "--out", str(tmp_path / "o"), "--sam", "tiny",
                 "--sam-checkpoint", str(tiny_sam_checkpoint)]) == 2  # fmt: skip
    assert "needs image/ and label/ folders" in capsys.readouterr().err


def test_import_export_and_db_info_from_the_command_line(samples, tmp_path, capsys):
    db = tmp_path / "labels.db"
    assert main(["import", str(samples / "landslide4sense"), "--db", str(db)]) == 0
    assert "14 new labels" in capsys.readouterr().out
    assert main(["db", "info", "--db", str(db)]) == 0
    assert "accepted   14" in capsys.readouterr().out
    assert main(["export", "--db", str(db), "--out", str(tmp_path / "out"), "--formats", "png", "--zip"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "out.zip")
    assert len(list((tmp_path / "out" / "png" / "label").iterdir())) == 14
    (tmp_path / "bad.db").write_bytes(b"garbage" * 200)
    assert main(["db", "info", "--db", str(tmp_path / "bad.db")]) == 2
    assert "not a usable translandseg database" in capsys.readouterr().err
