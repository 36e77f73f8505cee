"""Bring your own model: Hugging Face CLIP and DINOv2 checkpoints from a local
folder (offline), text search with CLIP's text tower, and a Python encoder.

Real CLIP/DINOv2 weights are not installable here, so the checkpoints are
small, randomly initialised models that this test writes in the real Hugging
Face format (config.json, model.safetensors, preprocessor_config.json and a
tokenizer). They test the loading path and the pipeline, not retrieval quality.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import transformers

from tests.conftest import run_cli

WORDS = ["<start>", "<end>", "<unk>", "red", "green", "blue", "armchair", "chair", "table", "lamp", "vase", "clock", "old",
         "wooden", "a", "the"]


def write_tiny_clip(folder: Path) -> Path:
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    torch.manual_seed(0)
    config = transformers.CLIPConfig(
        text_config={"vocab_size": len(WORDS), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                     "num_attention_heads": 2, "max_position_embeddings": 16, "bos_token_id": 0, "eos_token_id": 1,
                     "pad_token_id": 1},
        vision_config={"image_size": 32, "patch_size": 8, "hidden_size": 32, "intermediate_size": 64,
                       "num_hidden_layers": 2, "num_attention_heads": 2},
        projection_dim=24)
    transformers.CLIPModel(config).eval().save_pretrained(folder)
    tokenizer = Tokenizer(models.WordLevel({word: i for i, word in enumerate(WORDS)}, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(single="<start> $A <end>", special_tokens=[("<start>", 0), ("<end>", 1)])
    transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<start>", eos_token="<end>", unk_token="<unk>",
                                         pad_token="<end>", model_max_length=16).save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "image_mean": [0.481, 0.458, 0.408], "image_std": [0.269, 0.261, 0.276], "size": {"shortest_edge": 32},
        "crop_size": {"height": 32, "width": 32}, "do_center_crop": True}))
    return folder


def write_tiny_dinov2(folder: Path) -> Path:
    import torch

    torch.manual_seed(0)
    config = transformers.Dinov2Config(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64,
                                       num_hidden_layers=2, num_attention_heads=2)
    transformers.Dinov2Model(config).eval().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def photos(tmp_path_factory, demo_folder) -> tuple[Path, list[Path]]:
    folder = tmp_path_factory.mktemp("custom-model-photos")
    sources = sorted((demo_folder / "photos" / "food").rglob("*.jpg"))[:12]
    for source in sources:
        (folder / source.name).write_bytes(source.read_bytes())
    return folder, sorted(folder.iterdir())


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory) -> Path:
    return write_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


def test_clip_checkpoint_indexes_searches_and_searches_by_text(tmp_path, photos, clip_folder):
    folder, files = photos
    catalog = str(tmp_path / "catalog")
    model = f"hf:{clip_folder}"
    indexed = run_cli("--catalog", catalog, "--model", model, "index", str(folder), "--quiet")
    assert indexed.returncode == 0, indexed.stderr
    info = json.loads(run_cli("--catalog", catalog, "info", "--json").stdout)
    assert info["items"] == len(files) and info["model_id"].startswith("hf:clip:")

    # No --model: the catalogue remembers how to load its model.
    found = run_cli("--catalog", catalog, "--query-mode", "single", "search", str(files[3]), "-k", "3", "--json")
    assert found.returncode == 0, found.stderr
    hits = json.loads(found.stdout)["results"]
    assert hits[0]["score"] == pytest.approx(1.0, abs=1e-4) and Path(hits[0]["image_path"]).name == files[3].name

    by_text = run_cli("--catalog", catalog, "search", "--text", "red armchair", "-k", "5", "--json")
    assert by_text.returncode == 0, by_text.stderr
    result = json.loads(by_text.stdout)
    assert result["query"] == "text: red armchair" and len(result["results"]) == 5
    scores = [hit["score"] for hit in result["results"]]
    assert scores == sorted(scores, reverse=True) and all(-1.0 <= score <= 1.0 for score in scores)
    again = json.loads(run_cli("--catalog", catalog, "search", "--text", "red armchair", "-k", "5", "--json").stdout)
    assert [hit["id"] for hit in again["results"]] == [hit["id"] for hit in result["results"]]


def test_text_and_image_vectors_share_one_space(clip_folder):
    from PIL import Image

    from lookalike.encoders import load_encoder

    encoder = load_encoder(f"hf:{clip_folder}")
    texts = encoder.embed_texts(["red armchair", "old wooden table lamp", "red armchair"])
    images = encoder.embed_arrays(np.stack([encoder.preprocess(Image.new("RGB", (64, 48), colour))
                                            for colour in ((200, 30, 30), (30, 30, 200))]))
    assert texts.shape == (3, encoder.dim) and images.shape == (2, encoder.dim) and encoder.dim == 24
    assert np.allclose(np.linalg.norm(texts, axis=1), 1, atol=1e-5)
    assert np.allclose(texts[0], texts[2], atol=1e-6) and not np.allclose(texts[0], texts[1], atol=1e-3)


def test_dinov2_checkpoint_and_its_limits(tmp_path, photos):
    folder, files = photos
    model = f"hf:{write_tiny_dinov2(tmp_path / 'tiny-dinov2')}"
    catalog = str(tmp_path / "catalog")
    indexed = run_cli("--catalog", catalog, "--model", model, "index", str(folder), "--quiet")
    assert indexed.returncode == 0, indexed.stderr
    found = json.loads(run_cli("--catalog", catalog, "--query-mode", "single", "search", str(files[0]), "--json").stdout)
    assert Path(found["results"][0]["image_path"]).name == files[0].name

    no_text = run_cli("--catalog", catalog, "search", "--text", "red armchair")
    assert no_text.returncode == 2 and "no text tower" in no_text.stderr and no_text.stderr.count("\n") == 1


def test_bad_model_sources_are_one_line_errors(tmp_path, photos):
    folder, _ = photos
    (tmp_path / "not-a-model").mkdir()
    cases = {
        "hf:/no/such/folder/or-repo": "not in the local Hugging Face cache",
        f"hf:{tmp_path / 'not-a-model'}": "no config.json",
        "efficientnet-lite9": "unknown model",
        "efficientnet-lite0:avg:100": "unknown model option",
        "python:no_such_module:make": "No module named",
    }
    for spec, message in cases.items():
        result = run_cli("--catalog", str(tmp_path / "catalog"), "--model", spec, "index", str(folder), "--quiet")
        assert result.returncode == 2, (spec, result.stderr)
        assert message in result.stderr and result.stderr.count("\n") == 1, (spec, result.stderr)
    default = run_cli("--catalog", str(tmp_path / "default"), "index", str(folder), "--quiet")
    assert default.returncode == 0
    refused = run_cli("--catalog", str(tmp_path / "default"), "search", "--text", "lamp")
    assert refused.returncode == 2 and "no text tower" in refused.stderr


def test_python_encoder_plugs_in(tmp_path, photos):
    folder, files = photos
    (tmp_path / "my_encoder.py").write_text(
        "import numpy as np\n"
        "class ColourHistogram:\n"
        "    model_id = 'colour-histogram:v1'\n"
        "    dim = 48\n"
        "    decode_size = 64\n"
        "    def preprocess(self, image):\n"
        "        pixels = np.asarray(image.convert('RGB').resize((64, 64)))\n"
        "        return np.concatenate([np.histogram(pixels[..., c], 16, (0, 256))[0] for c in range(3)]).astype('float32')\n"
        "    def embed_arrays(self, batch):\n"
        "        batch = np.asarray(batch, 'float32')\n"
        "        return batch / np.linalg.norm(batch, axis=1, keepdims=True)\n"
        "def make():\n"
        "    return ColourHistogram()\n")
    env = {"PYTHONPATH": str(tmp_path)}
    catalog = str(tmp_path / "catalog")
    indexed = run_cli("--catalog", catalog, "--model", "python:my_encoder:make", "index", str(folder), "--quiet", env=env)
    assert indexed.returncode == 0, indexed.stderr
    found = run_cli("--catalog", catalog, "--query-mode", "single", "search", str(files[5]), "--json", env=env)
    assert found.returncode == 0, found.stderr
    assert Path(json.loads(found.stdout)["results"][0]["image_path"]).name == files[5].name
