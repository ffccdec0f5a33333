"""Which faces of a query photo a Search searches: SearchRequest.faces, checked.

A request from before faces could be chosen asks for nothing, and gets the
largest face with the crop's fallback, as it always did. Every other choice is
read here, once, into the numbered faces to embed, or refused with the status
its caller can act on: INVALID_ARGUMENT for a request that cannot be right
(a box with no area, a point outside the photo, a negative limit, several faces
from a gallery whose crop detects none), NOT_FOUND for a photo without the face
asked for when the caller wants faces only.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import grpc
from PIL import Image

from lookalike.server.online.errors import Refused
from lookalike.server.vision.imaging import Crop, Prepared, cut
from lookalike.server.vision.selection import (
    DETECTING_CROPS,
    LARGEST,
    FaceSelection,
    face_at_point,
    face_in_box,
    prepare_faces,
)
from lookalike.v1 import search_pb2

NO_FACE = "no face was found in the photo"
NO_FACE_THERE = "no face was found at the box or point asked for"
NOT_AT_BOX = "no face found at the box; the box itself was searched"
NOT_AT_POINT = "no face found at the point; the largest face was searched"
Mode = search_pb2.FaceMode


@dataclass(frozen=True)
class QueryFace:
    """One face to search: its number among the photo's faces (0 the largest) and pixels."""

    number: int
    prepared: Prepared


def query_faces(
    image: Image.Image,
    crop: Crop,
    size: int,
    request: search_pb2.SearchRequest,
    most: int,
) -> list[QueryFace]:
    """The faces ``request`` asks for, numbered, at most ``most``; never empty."""
    selection = request.faces
    mode = selection.mode or Mode.FACE_MODE_LARGEST
    if mode not in Mode.values():
        raise Refused(grpc.StatusCode.INVALID_ARGUMENT, f"unknown face mode {mode}")
    if mode == Mode.FACE_MODE_LARGEST:
        faces = [QueryFace(0, prepare_faces(image, crop, size, LARGEST)[0])]
    else:
        if crop.mode not in DETECTING_CROPS:
            raise Refused(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"this gallery's crop ({crop.mode}) finds no faces, so only the largest-face "
                "mode can be served; index with --crop align or detect to choose faces",
            )
        if mode == Mode.FACE_MODE_ALL:
            faces = _every(image, crop, size, selection.limit, most)
        elif mode == Mode.FACE_MODE_BOX:
            faces = _at_box(image, crop, size, selection.box, most)
        else:
            faces = _at_point(image, crop, size, selection.point, most)
    if request.faces_only and all(face.prepared.note for face in faces):
        chosen = mode in (Mode.FACE_MODE_BOX, Mode.FACE_MODE_POINT)
        raise Refused(grpc.StatusCode.NOT_FOUND, NO_FACE_THERE if chosen else NO_FACE)
    return [face for face in faces if not (request.faces_only and face.prepared.note)]


def _every(image: Image.Image, crop: Crop, size: int, limit: int, most: int) -> list[QueryFace]:
    if limit < 0:
        raise Refused(grpc.StatusCode.INVALID_ARGUMENT, f"faces.limit cannot be negative ({limit})")
    chosen = FaceSelection("all", limit=min(limit or most, most))
    return [QueryFace(n, face) for n, face in enumerate(prepare_faces(image, crop, size, chosen))]


def _detected(image: Image.Image, crop: Crop, size: int, most: int) -> list[Prepared]:
    faces = prepare_faces(image, crop, size, FaceSelection("all", limit=most))
    return [] if faces[0].note else faces  # a fallback region is no face to choose


def _at_box(
    image: Image.Image, crop: Crop, size: int, box: search_pb2.Box, most: int
) -> list[QueryFace]:
    width, height = image.size
    left, top = max(0, box.left), max(0, box.top)
    right, bottom = min(width, box.right), min(height, box.bottom)
    if right <= left or bottom <= top:
        raise Refused(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"faces.box ({box.left}, {box.top}, {box.right}, {box.bottom}) covers none of the "
            f"{width}x{height} photo; give left < right and top < bottom inside it",
        )
    faces = _detected(image, crop, size, most)
    number = face_in_box(faces, (left, top, right, bottom))
    if number is not None:
        return [QueryFace(number, faces[number])]
    region = (left, top, right, bottom)
    if crop.aligned:
        from lookalike.server.vision.align import Detection, align_detection

        aligned = align_detection(image, Detection(region, 0.0, NOT_AT_BOX), size)
        chosen = Prepared(aligned.pixels, aligned.box, image.size, NOT_AT_BOX, face_box=region)
        return [QueryFace(0, chosen)]
    return [QueryFace(0, cut(image, region, size, NOT_AT_BOX))]


def _at_point(
    image: Image.Image, crop: Crop, size: int, point: search_pb2.Point, most: int
) -> list[QueryFace]:
    width, height = image.size
    if not (0 <= point.x < width and 0 <= point.y < height):
        raise Refused(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"faces.point ({point.x}, {point.y}) is outside the {width}x{height} photo",
        )
    faces = _detected(image, crop, size, most)
    number = face_at_point(faces, point.x, point.y)
    if number is not None:
        return [QueryFace(number, faces[number])]
    largest = prepare_faces(image, crop, size, LARGEST)[0]
    return [QueryFace(0, replace(largest, note=largest.note or NOT_AT_POINT))]


def wire_box(box: tuple[int, int, int, int] | None) -> search_pb2.Box | None:
    """A face's box for the wire; None (the field unset) for a one-face gallery row."""
    if box is None:
        return None
    left, top, right, bottom = box
    return search_pb2.Box(left=left, top=top, right=right, bottom=bottom)
