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


def test_int8_model_stays_close_to_float32(encoder, foolbox_photos):
    from lookalike.encoders import load_encoder

    assert encoder.model_id.endswith(":int8")
    full = load_encoder("efficientnet-lite0:avg")
    arrays = np.stack([encoder.preprocess(decode_image(path)) for path, _ in foolbox_photos])
    cosines = np.sum(encoder.embed_arrays(arrays) * full.embed_arrays(arrays), axis=1)
    assert cosines.min() > 0.95 and cosines.mean() > 0.98


def test_mobilenet_and_concatenated_models(foolbox_photos):
    from lookalike.encoders import load_encoder

    mobilenet = load_encoder("mobilenetv2:avg")
    both = load_encoder("efficientnet-lite0:avg+mobilenetv2:avg")
    lite0 = load_encoder("efficientnet-lite0:avg")
    images = [decode_image(path) for path, _ in foolbox_photos]
    vectors = {name: model.embed_arrays(np.stack([model.preprocess(image) for image in images]))
               for name, model in (("mobilenet", mobilenet), ("both", both), ("lite0", lite0))}
    assert vectors["mobilenet"].shape == (20, 1280) and vectors["both"].shape == (20, 2560)
    # Same as embedding with each model and joining the unit vectors.
    joined = np.concatenate([vectors["lite0"], vectors["mobilenet"]], axis=1) / np.sqrt(2)
    assert np.allclose(vectors["both"], joined, atol=1e-4)
    # MobileNetV2's weights are real: a crop of a photo is nearest to that photo.
    crops = np.stack([mobilenet.preprocess(image.crop((0, 0, int(image.width * 0.8), int(image.height * 0.8))))
                      for image in images])
    nearest = np.argmax(mobilenet.embed_arrays(crops) @ vectors["mobilenet"].T, axis=1)
    assert np.mean(nearest == np.arange(20)) >= 0.9


def test_query_views_prepared_together_match_views_prepared_one_by_one(encoder, foolbox_photos):
    """The query's views are prepared from one resize per crop size; each is the same picture as its crop
    resized alone, up to the resampling at its border."""
    from lookalike.encoders.views import query_views, view_boxes

    for path, _ in foolbox_photos[:5]:
        image = decode_image(path, target_size=2 * encoder.decode_size)
        together = encoder.preprocess_views(image, view_boxes(image.size, "crops"))
        alone = np.stack([encoder.preprocess(view) for view in query_views(image, "crops")])
        assert together.shape == alone.shape == (33, 3, 224, 224)
        assert np.abs(together - alone).mean() < 0.05  # pixels are in [-1, 1]
        cosines = (encoder.embed_arrays(together) * encoder.embed_arrays(alone)).sum(axis=1)
        assert cosines.min() > 0.95 and np.median(cosines) > 0.99
