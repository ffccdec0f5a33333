"""Decoding and cropping: every mode ends as RGB, every bad or fuzzed input as ImageError."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from lookalike.server.vision.imaging import ALIGNED, Crop, CropMode, ImageError, decode, load
from tests.imagegen import GOOD, encode, noise_image, png_declaring


@pytest.mark.parametrize(
    "data",
    [
        encode(noise_image(), "JPEG"),
        encode(noise_image(), "PNG"),
        encode(noise_image().convert("CMYK"), "JPEG"),
        encode(noise_image().convert("L"), "PNG"),
        encode(noise_image().convert("P"), "PNG"),
        encode(noise_image().convert("RGBA"), "PNG"),
        encode(noise_image().convert("LA"), "PNG"),
        encode(Image.fromarray(np.full((30, 40), 40000, dtype=np.uint16)), "PNG"),
        encode(noise_image(), "WEBP"),
        encode(noise_image(), "BMP"),
        encode(noise_image(), "TIFF"),
    ],
    ids=["jpeg", "png", "cmyk", "gray", "palette", "rgba", "la", "16bit", "webp", "bmp", "tiff"],
)
def test_common_formats_and_modes_decode_to_rgb(data):
    image = decode(data)
    assert image.mode == "RGB"
    assert image.size == (40, 30)


def test_sixteen_bit_keeps_its_contrast():
    ramp = np.tile(np.linspace(0, 65535, 40, dtype=np.uint16), (30, 1))
    image = decode(encode(Image.fromarray(ramp), "PNG"))
    row = np.asarray(image)[0, :, 0]
    assert row[0] == 0 and row[-1] == 255


def test_transparency_is_flattened_onto_white():
    clear = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    assert decode(encode(clear, "PNG")).getpixel((0, 0)) == (255, 255, 255)


def test_animated_gif_gives_first_frame():
    frames = [Image.new("RGB", (16, 16), colour) for colour in [(255, 0, 0), (0, 0, 255)]]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    red, green, blue = decode(data).getpixel((8, 8))
    assert red > 200 and blue < 50


def test_exif_orientation_is_applied():
    image = noise_image((40, 20))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    assert decode(encode(image, "JPEG", exif=exif)).size == (20, 40)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"GIF89a but not really", "truncated or corrupt|not an image"),
        (b"\x00" * 1000, "not an image"),
        (encode(noise_image(), "PNG")[:60], "truncated"),
        (encode(noise_image(), "JPEG")[:200], "truncated"),
        (png_declaring(50_000, 50_000), "limit|too large"),
    ],
    ids=["empty", "fake-gif", "zeros", "truncated-png", "truncated-jpeg", "bomb"],
)
def test_bad_bytes_raise_image_error(data, message):
    with pytest.raises(ImageError, match=message):
        decode(data, max_pixels=10_000_000)


def test_pixel_cap_is_checked_before_decoding():
    with pytest.raises(ImageError, match="more than the limit of 1,000"):
        decode(encode(noise_image((40, 30)), "PNG"), max_pixels=1000)


def test_center_crop_takes_the_middle_square():
    crop = Crop("center", 0.5)
    assert crop.box(250, 250) == (62, 62, 187, 187)
    assert crop.box(200, 100) == (75, 25, 125, 75)
    assert Crop("none").box(200, 100) == (0, 0, 200, 100)


def test_load_resizes_the_crop_to_the_model_input():
    image = Image.new("RGB", (100, 100), (0, 0, 0))
    image.paste((255, 255, 255), (25, 25, 75, 75))
    prepared = load(encode(image, "PNG"), Crop("center", 0.5), size=32)
    assert prepared.pixels.shape == (32, 32, 3) and prepared.pixels.dtype == np.float32
    assert prepared.pixels.min() == 255.0  # only the white middle is left
    assert prepared.box == (25, 25, 75, 75)
    whole = load(encode(image, "PNG"), Crop("none"), size=32)
    assert whole.pixels.min() == 0.0


def test_invalid_crop_is_refused():
    with pytest.raises(ValueError, match="crop mode"):
        Crop("face")
    with pytest.raises(ValueError, match="fraction"):
        Crop("center", 0.0)


def test_a_crop_is_recorded_as_the_strings_it_always_was():
    """Manifests and model metadata hold {"mode": "<--crop value>", "fraction": F}."""
    assert json.dumps(ALIGNED.to_dict()) == '{"mode": "align", "fraction": 0.5}'
    assert [mode.value for mode in CropMode] == ["none", "center", "detect", "align"]
    for mode in CropMode:
        read = Crop.from_dict(json.loads(json.dumps(Crop(mode, 0.7).to_dict())))
        assert read == Crop(mode.value, 0.7) and read.mode is mode
    assert ALIGNED.aligned and not Crop(CropMode.DETECT).aligned


def traced_peak(work) -> int:
    """Peak bytes Python and numpy allocated while ``work`` ran (tracemalloc sees both)."""
    import tracemalloc

    tracemalloc.start()
    try:
        work()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_sixteen_bit_frames_convert_without_float64_copies():
    """#15 item 10: main held two float64 copies of the frame (16 bytes a pixel)."""
    from lookalike.server.vision.imaging import to_rgb

    frame = Image.fromarray(np.tile(np.linspace(0, 65535, 2000, dtype=np.uint16), (2000, 1)))
    pixels = frame.width * frame.height
    peak = traced_peak(lambda: to_rgb(frame))
    assert peak < 2 * pixels  # the 1-byte result and one small band of floats


def test_face_detection_runs_on_a_downscaled_copy():
    """The cascade sees at most 800 px: main gave it the whole 24 MP frame in grey."""
    pytest.importorskip("cv2")
    from lookalike.server.vision.faces import largest_face

    frame = Image.new("RGB", (6000, 4000), (128, 128, 128))
    peak = traced_peak(lambda: largest_face(frame))
    assert peak < 6000 * 4000 / 8


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.binary(max_size=2048),
        st.builds(
            lambda cut, flips: (cut, flips),
            st.integers(0, len(GOOD)),
            st.lists(st.tuples(st.integers(0, len(GOOD) - 1), st.integers(0, 255)), max_size=8),
        ),
    )
)
def test_fuzzed_bytes_decode_or_raise_image_error(sample):
    if isinstance(sample, tuple):  # a mutated real JPEG: truncated, with bytes flipped
        cut, flips = sample
        data = bytearray(GOOD[:cut])
        for position, value in flips:
            if position < len(data):
                data[position] = value
        sample = bytes(data)
    try:
        image = decode(sample, max_pixels=4_000_000)
    except ImageError:
        return
    assert image.mode == "RGB" and image.width > 0 and image.height > 0
