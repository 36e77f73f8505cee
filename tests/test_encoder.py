"""The encoder loads the real ImageNet weights and gives unit vectors."""

from __future__ import annotations

import numpy as np
import skimage.data
from PIL import Image

from lookalike.images import decode_image

ESPRESSO = 967
CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


def top1(encoder, image: Image.Image) -> int:
    _, logits = encoder.run(encoder.preprocess(image)[None])
    return int(np.argmax(logits[0]))


def test_coffee_is_espresso_and_chelsea_is_a_cat(encoder):
    assert top1(encoder, Image.fromarray(skimage.data.coffee())) == ESPRESSO
    assert top1(encoder, Image.fromarray(skimage.data.chelsea())) in CAT_CLASSES


def test_labelled_imagenet_photos_are_classified(encoder, foolbox_photos):
    assert len(foolbox_photos) == 20
    correct = sum(top1(encoder, decode_image(path)) == label for path, label in foolbox_photos)
    assert correct >= 17, f"only {correct} of 20 ImageNet photos classified correctly"


def test_vectors_are_unit_length_and_deterministic(encoder):
    image = Image.fromarray(skimage.data.astronaut())
    first = encoder.embed_arrays(encoder.preprocess(image)[None])
    second = encoder.embed_arrays(np.stack([encoder.preprocess(image)] * 3))
    assert first.shape == (1, encoder.dim) == (1, 1280)
    assert np.allclose(np.linalg.norm(second, axis=1), 1.0, atol=1e-5)
    assert np.allclose(first[0], second[2], atol=1e-5)


def test_model_id_names_model_pooling_and_preprocessing(encoder):
    assert encoder.model_id.startswith("efficientnet-lite0:avg:224:p")
