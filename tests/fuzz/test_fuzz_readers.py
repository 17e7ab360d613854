"""Fuzz: malformed files of every reader format (PanNuke npy, Lizard and CoNSeP .mat, MoNuSAC and Camelyon16 XML
with TIFFs, PANDA, image folders) given to `data build`. Valid files come from tests/unit/format_writers.py and
are then damaged one way each."""

from __future__ import annotations

import functools
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import tifffile
from format_writers import (
    aperio_xml,
    asap_xml,
    lizard_fields,
    tissue_slide,
    write_consep,
    write_lizard,
    write_panda,
    write_pannuke_fold,
    write_png,
    write_pyramid,
)
from fuzzkit import Case, check_case, cut, random_bytes
from PIL import Image
from scipy.io import savemat


def build(tmp: Path, source: str, path: Path, *options) -> tuple[list, Path]:
    out = tmp / "work" / "OUT"
    return ["data", "build", "--source", source, "--path", path, *options, "--out", out], out


# ---- PanNuke ---------------------------------------------------------------------------------------------------

def pannuke_arrays():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, 32, 32, 3)).astype(np.float64)
    masks = np.zeros((2, 32, 32, 6))
    masks[..., 5] = 1
    masks[0, 2:6, 3:9, 0] = 1
    masks[0, 10:13, 20:22, 1] = 2
    return images, masks, ["Breast", "Colon"]


def pannuke_case(change: Callable[[Path, dict], None] | None = None, arrays: Callable | None = None, named: str = "", *options):
    def make(tmp: Path, fx):
        images, masks, types = pannuke_arrays()
        if arrays is not None:
            images, masks, types = arrays(images, masks, types)
        paths = write_pannuke_fold(tmp / "in" / "fold1", images, masks, types)
        if change is not None:
            change(tmp / "in" / "fold1", paths)
        argv, out = build(tmp, "pannuke", tmp / "in" / "fold1", *options)
        return argv, out, [named]
    return make


def _with(index: int, fn):
    def arrays(images, masks, types):
        parts = [images, masks, types]
        parts[index] = fn(parts[index])
        return tuple(parts)
    return arrays


def _nan_image(images):
    images = images.copy()
    images[1, 3, 3, 0] = np.nan
    return images


def _binary_masks(masks):
    masks = masks.copy()
    masks[0, 20:24, 20:24, 0] = 1  # a second blob with the id of the first neoplastic nucleus
    return masks


def _set_mask(value):
    def fn(masks):
        masks = masks.copy()
        masks[0, 0, 0, 2] = value
        return masks
    return fn


PANNUKE: dict[str, Callable] = {}
for _file in ("images.npy", "masks.npy", "types.npy"):
    for _how in (0, 64, 0.5, -1):
        PANNUKE[f"pannuke-{_file}-truncated-{_how}"] = pannuke_case((lambda f, h: lambda d, p: cut(p[f], h))(_file, _how), named=_file)
    PANNUKE[f"pannuke-{_file}-random-bytes"] = pannuke_case((lambda f: lambda d, p: random_bytes(p[f], 7))(_file), named=_file)
    PANNUKE[f"pannuke-{_file}-missing"] = pannuke_case((lambda f: lambda d, p: p[f].unlink())(_file), named=_file)
PANNUKE |= {
    "pannuke-images-0-to-1": pannuke_case(arrays=_with(0, lambda a: a / 255.0), named="images.npy"),
    "pannuke-images-above-255": pannuke_case(arrays=_with(0, lambda a: a * 2.0), named="images.npy"),
    "pannuke-images-nan": pannuke_case(arrays=_with(0, _nan_image), named="images.npy"),
    "pannuke-images-4-channels": pannuke_case(arrays=_with(0, lambda a: np.concatenate([a, a[..., :1]], axis=3)), named="images.npy"),
    "pannuke-images-strings": pannuke_case(arrays=_with(0, lambda a: np.full(a.shape, "x")), named="images.npy"),
    "pannuke-images-2d": pannuke_case(arrays=_with(0, lambda a: a[:, :, :, 0]), named="images.npy"),
    "pannuke-masks-binary-per-class": pannuke_case(arrays=_with(1, _binary_masks), named="masks.npy"),
    "pannuke-masks-fractional-id": pannuke_case(arrays=_with(1, _set_mask(0.5)), named="masks.npy"),
    "pannuke-masks-negative-id": pannuke_case(arrays=_with(1, _set_mask(-2)), named="masks.npy"),
    "pannuke-masks-nan-id": pannuke_case(arrays=_with(1, _set_mask(np.nan)), named="masks.npy"),
    "pannuke-masks-5-channels": pannuke_case(arrays=_with(1, lambda m: m[..., :5]), named="masks.npy"),
    "pannuke-masks-other-size": pannuke_case(arrays=_with(1, lambda m: m[:, :16]), named="masks.npy"),
    "pannuke-types-too-few": pannuke_case(arrays=_with(2, lambda t: t[:1]), named="types.npy"),
    "pannuke-types-numbers": pannuke_case(lambda d, p: np.save(p["types.npy"], np.array([1, 2])), named="types.npy"),
    "pannuke-types-pickled": pannuke_case(lambda d, p: np.save(p["types.npy"], np.array(["A", None], dtype=object), allow_pickle=True),
                                          named="types.npy"),
    "pannuke-empty-fold": pannuke_case(lambda d, p: np.save(p["types.npy"], np.array([], dtype="<U8")),
                                       arrays=lambda i, m, t: (i[:0], m[:0], t[:0]), named="--path"),
    "pannuke-no-fold": pannuke_case(lambda d, p: [f.unlink() for f in p.values()], named="fold1"),
    "pannuke-two-image-files": pannuke_case(lambda d, p: np.save(d / "images" / "images.npy", np.zeros((1, 4, 4, 3)))
                                            if (d / "images").mkdir() is None else None, named="images.npy"),
    "pannuke-mpp-other-than-native": pannuke_case(None, None, "mpp", "--mpp", "0.5"),
    "pannuke-n-negative": pannuke_case(None, None, "--n", "--n", "-1"),
}


# ---- Lizard ----------------------------------------------------------------------------------------------------

def lizard_inst():
    inst = np.zeros((40, 48), np.int32)
    inst[2:5, 30:40] = 7
    inst[20:32, 4:7] = 3
    return inst, {7: 5, 3: 2}


def lizard_case(fields_change: Callable[[dict], dict] | None = None, file_change: Callable[[Path, Path], None] | None = None,
                named: str = "a.mat", *options):
    def make(tmp: Path, fx):
        inst, classes = lizard_inst()
        fields = lizard_fields(inst, classes)
        if fields_change is not None:
            fields = fields_change(dict(fields))
        image = np.random.default_rng(1).integers(0, 256, (40, 48, 3), dtype=np.uint8)
        image_path, label = write_lizard(tmp / "in" / "lizard", "a", image, fields)
        if file_change is not None:
            file_change(image_path, label)
        argv, out = build(tmp, "lizard", tmp / "in" / "lizard", *(options or ("--size", "32")))
        return argv, out, [named]
    return make


def _drop(key):
    return lambda f: {k: v for k, v in f.items() if k != key}


def _replace(key, value):
    return lambda f: f | {key: value(f[key]) if callable(value) else value}


def _cut_second(_image: Path, mat: Path, how: float | int) -> Path:
    return cut(mat, how)


LIZARD: dict[str, Callable] = {
    **{f"lizard-mat-truncated-{h}": lizard_case(file_change=functools.partial(_cut_second, how=h)) for h in (0, 100, 0.5, -1)},
    "lizard-mat-random-bytes": lizard_case(file_change=lambda i, m: random_bytes(m, 3)),
    **{f"lizard-mat-no-{k}": lizard_case(_drop(k)) for k in ("inst_map", "id", "class", "bbox", "centroid")},
    "lizard-class-7": lizard_case(_replace("class", lambda c: np.full_like(c, 7))),
    "lizard-class-0": lizard_case(_replace("class", lambda c: np.zeros_like(c))),
    "lizard-id-repeated": lizard_case(_replace("id", lambda c: np.full_like(c, 7))),
    "lizard-inst-unlisted": lizard_case(_replace("id", lambda c: c + 100)),
    "lizard-centroid-swapped": lizard_case(_replace("centroid", lambda c: c[:, ::-1].copy())),
    "lizard-bbox-wrong": lizard_case(_replace("bbox", lambda c: c + 5)),
    "lizard-inst-fractional": lizard_case(_replace("inst_map", lambda c: c.astype(np.float64) + 0.5)),
    "lizard-inst-negative": lizard_case(_replace("inst_map", lambda c: c - 1)),
    "lizard-inst-3d": lizard_case(_replace("inst_map", lambda c: np.stack([c, c], axis=2))),
    "lizard-class-rows-mismatch": lizard_case(_replace("class", lambda c: c[:1])),
    "lizard-centroid-shape": lizard_case(_replace("centroid", lambda c: c[:, :1])),
    "lizard-image-missing": lizard_case(file_change=lambda i, m: i.unlink()),
    "lizard-image-random-bytes": lizard_case(file_change=lambda i, m: random_bytes(i, 4), named="a.png"),
    "lizard-image-truncated": lizard_case(file_change=lambda i, m: cut(i, 0.5), named="a.png"),
    "lizard-image-16bit": lizard_case(file_change=lambda i, m: Image.fromarray(np.zeros((40, 48), np.uint16)).save(i), named="a.png"),
    "lizard-image-other-size": lizard_case(file_change=lambda i, m: write_png(i, np.zeros((20, 48, 3), np.uint8))),
    "lizard-small-images-default-size": lizard_case(None, None, "--path", "--stride", "8"),
    "lizard-size-zero": lizard_case(None, None, "size", "--size", "0"),
}


# ---- CoNSeP ----------------------------------------------------------------------------------------------------

def consep_case(override: dict | None = None, file_change: Callable[[Path], None] | None = None, named: str = "t.mat", *options):
    def make(tmp: Path, fx):
        image = np.random.default_rng(2).integers(0, 256, (40, 40, 3), dtype=np.uint8)
        inst = np.zeros((40, 40), np.int64)
        inst[2:6, 2:8], inst[20:24, 20:30] = 1, 2
        label = write_consep(tmp / "in" / "consep" / "Train", "t", image, inst, [1, 4], override)
        if file_change is not None:
            file_change(label)
        argv, out = build(tmp, "consep", tmp / "in" / "consep", *(options or ("--size", "32")))
        return argv, out, [named]
    return make


def _resave_without(key):
    def change(label: Path) -> None:
        from scipy.io import loadmat

        content = {k: v for k, v in loadmat(label).items() if not k.startswith("__") and k != key}
        savemat(label, content)
    return change


CONSEP: dict[str, Callable] = {
    **{f"consep-mat-truncated-{h}": consep_case(file_change=functools.partial(cut, how=h)) for h in (0, 100, 0.5)},
    "consep-mat-random-bytes": consep_case(file_change=lambda m: random_bytes(m, 5)),
    **{f"consep-mat-no-{k}": consep_case(file_change=_resave_without(k)) for k in ("inst_map", "type_map", "inst_type", "inst_centroid")},
    "consep-type-8": consep_case({"inst_type": np.array([[1.0], [8.0]])}),
    "consep-type-fractional": consep_case({"inst_type": np.array([[1.5], [2.0]])}),
    "consep-inst-above-n": consep_case({"inst_type": np.array([[1.0]]), "inst_centroid": np.zeros((1, 2))}),
    "consep-type-map-shape": consep_case({"type_map": np.zeros((10, 10))}),
    "consep-centroid-shape": consep_case({"inst_centroid": np.zeros((2, 3))}),
    "consep-inst-nan": consep_case({"inst_map": np.full((40, 40), np.nan)}),
    "consep-image-missing": consep_case(file_change=lambda m: (m.parent.parent / "Images" / "t.png").unlink()),
    "consep-image-random-bytes": consep_case(file_change=lambda m: random_bytes(m.parent.parent / "Images" / "t.png", 6), named="t.png"),
    "consep-no-labels": consep_case(file_change=lambda m: m.unlink(), named="consep"),
    "consep-bad-classes": consep_case(None, None, "classes", "--classes", "consep-5"),
}


# ---- MoNuSAC ---------------------------------------------------------------------------------------------------

RECT = [(2, 3), (6, 3), (6, 8), (2, 8)]


def monusac_case(annotations=None, xml_change: Callable[[Path], None] | None = None, named: str = "p_1.xml"):
    def make(tmp: Path, fx):
        folder = tmp / "in" / "monusac" / "TCGA-XX"
        folder.mkdir(parents=True)
        tifffile.imwrite(folder / "p_1.tif", np.random.default_rng(3).integers(0, 256, (30, 40, 3), dtype=np.uint8), photometric="rgb")
        xml = aperio_xml(folder / "p_1.xml", annotations or [("Lymphocyte", [RECT])])
        if xml_change is not None:
            xml_change(xml)
        argv, out = build(tmp, "monusac", tmp / "in" / "monusac")
        return argv, out, [named]
    return make


def _xml_text(fn: Callable[[str], str]) -> Callable[[Path], None]:
    return lambda p: p.write_text(fn(p.read_text()))


def _xml_tree(fn: Callable[[ET.Element], None]) -> Callable[[Path], None]:
    def change(path: Path) -> None:
        tree = ET.parse(path)
        fn(tree.getroot())
        tree.write(path)
    return change


MONUSAC: dict[str, Callable] = {
    "monusac-xml-not-well-formed": monusac_case(xml_change=_xml_text(lambda t: t.replace("</Annotations>", ""))),
    "monusac-xml-truncated": monusac_case(xml_change=lambda p: cut(p, 0.5)),
    "monusac-xml-empty": monusac_case(xml_change=lambda p: cut(p, 0)),
    "monusac-xml-random-bytes": monusac_case(xml_change=lambda p: random_bytes(p, 8)),
    "monusac-xml-wrong-root": monusac_case(xml_change=_xml_text(lambda t: t.replace("<Annotations", "<Things").replace("</Annotations>", "</Things>"))),
    "monusac-xml-no-class-name": monusac_case(xml_change=_xml_tree(lambda r: r.find("Annotation/Attributes/Attribute").set("Name", ""))),
    "monusac-xml-x-not-a-number": monusac_case(xml_change=_xml_tree(lambda r: r.find(".//Vertex").set("X", "abc"))),
    "monusac-xml-x-infinite": monusac_case(xml_change=_xml_tree(lambda r: r.find(".//Vertex").set("X", "inf"))),
    "monusac-xml-no-y": monusac_case(xml_change=_xml_tree(lambda r: r.find(".//Vertex").attrib.pop("Y"))),
    "monusac-two-vertices": monusac_case([("Lymphocyte", [RECT[:2]])]),
    "monusac-unknown-class": monusac_case([("Ambiguous", [RECT])]),
    "monusac-image-missing": monusac_case(xml_change=lambda p: p.with_suffix(".tif").unlink()),
    "monusac-image-random-bytes": monusac_case(xml_change=lambda p: random_bytes(p.with_suffix(".tif"), 9), named="p_1.tif"),
    "monusac-image-truncated": monusac_case(xml_change=lambda p: cut(p.with_suffix(".tif"), 0.3), named="p_1.tif"),
    "monusac-image-16bit": monusac_case(xml_change=lambda p: tifffile.imwrite(p.with_suffix(".tif"), np.zeros((30, 40, 3), np.uint16),
                                                                              photometric="rgb"), named="p_1.tif"),
}


# ---- Camelyon16 ------------------------------------------------------------------------------------------------

TUMOR = [(100, 60), (180, 60), (180, 140), (100, 140)]


def camelyon_case(groups=(("_0", TUMOR),), slide_change: Callable[[Path], None] | None = None,
                  xml_change: Callable[[Path], None] | None = None, named: str = "tumor_001.xml", options=("--size", "32", "--mpp", "0.5")):
    def make(tmp: Path, fx):
        root = tmp / "in" / "c16"
        slide = write_pyramid(root / "tumor_001.tif", tissue_slide(256, 256, (80, 0, 256, 256)), mpp=0.25, factors=(1, 2, 4))
        xml = asap_xml(root / "tumor_001.xml", list(groups))
        if slide_change is not None:
            slide_change(slide)
        if xml_change is not None:
            xml_change(xml)
        argv, out = build(tmp, "camelyon16", root, *options)
        return argv, out, [named]
    return make


CAMELYON: dict[str, Callable] = {
    "c16-xml-not-well-formed": camelyon_case(xml_change=_xml_text(lambda t: t[: len(t) // 2])),
    "c16-xml-wrong-root": camelyon_case(xml_change=_xml_text(lambda t: t.replace("ASAP_Annotations", "Other"))),
    "c16-unknown-group": camelyon_case((("Metastasis", TUMOR),)),
    "c16-point-in-tumor-group": camelyon_case(xml_change=_xml_tree(lambda r: r.find(".//Annotation").set("Type", "Dot"))),
    "c16-unknown-type": camelyon_case(xml_change=_xml_tree(lambda r: r.find(".//Annotation").set("Type", "Blob"))),
    "c16-no-group-attribute": camelyon_case(xml_change=_xml_tree(lambda r: r.find(".//Annotation").attrib.pop("PartOfGroup"))),
    "c16-outside-the-slide": camelyon_case((("Tumor", [(1000, 60), (1800, 60), (1800, 1400)]),)),
    "c16-x-not-a-number": camelyon_case(xml_change=_xml_tree(lambda r: r.find(".//Coordinate").set("X", "1,5"))),
    "c16-two-coordinates": camelyon_case((("_1", TUMOR[:2]),)),
    "c16-slide-truncated": camelyon_case(slide_change=lambda s: cut(s, 0.5), named="tumor_001.tif"),
    "c16-slide-header-only": camelyon_case(slide_change=lambda s: cut(s, 64), named="tumor_001.tif"),
    "c16-slide-random-bytes": camelyon_case(slide_change=lambda s: random_bytes(s, 10), named="tumor_001.tif"),
    "c16-slide-16bit": camelyon_case(slide_change=lambda s: write_pyramid(s, np.zeros((64, 64, 3), np.uint16), factors=(1,)),
                                     named="tumor_001.tif"),
    "c16-all-glass": camelyon_case(slide_change=lambda s: write_pyramid(s, tissue_slide(256, 256, (0, 0, 0, 0)), factors=(1, 2, 4)),
                                   named="--path"),
    "c16-min-tissue-above-1": camelyon_case(named="--min-tissue", options=("--min-tissue", "2")),
    "c16-mpp-zero": camelyon_case(named="mpp", options=("--mpp", "0")),
}


# ---- PANDA -----------------------------------------------------------------------------------------------------

def panda_case(change: Callable[[Path], None] | None = None, named: str = "train.csv", options=("--size", "16", "--mpp", "1.0"),
               labels_value: int | None = None):
    def make(tmp: Path, fx):
        root = tmp / "in" / "panda"
        labels = np.zeros((128, 128), np.uint8)
        labels[:, 32:] = 1 if labels_value is None else labels_value
        write_panda(root, "r1", tissue_slide(128, 128, (32, 0, 128, 128)), labels, "radboud", np.random.default_rng(0))
        if change is not None:
            change(root)
        argv, out = build(tmp, "panda", root, *options)
        return argv, out, [named]
    return make


PANDA: dict[str, Callable] = {
    "panda-no-csv": panda_case(lambda r: (r / "train.csv").unlink()),
    "panda-csv-no-provider-column": panda_case(lambda r: (r / "train.csv").write_text("image_id,isup_grade\nr1,0\n")),
    "panda-csv-unknown-provider": panda_case(lambda r: (r / "train.csv").write_text("image_id,data_provider\nr1,utrecht\n")),
    "panda-csv-no-row": panda_case(lambda r: (r / "train.csv").write_text("image_id,data_provider\nother,radboud\n")),
    "panda-csv-not-utf8": panda_case(lambda r: (r / "train.csv").write_bytes(b"image_id,data_provider\nr1,rad\xffboud\n")),
    "panda-csv-random-bytes": panda_case(lambda r: random_bytes(r / "train.csv", 12)),
    "panda-mask-wrong-size": panda_case(lambda r: write_pyramid(r / "train_label_masks" / "r1_mask.tiff", np.zeros((64, 64, 3), np.uint8),
                                                                 mpp=0.5), named="r1_mask.tiff"),
    "panda-mask-value-outside-schema": panda_case(named="r1_mask.tiff", labels_value=9),
    "panda-mask-truncated": panda_case(lambda r: cut(r / "train_label_masks" / "r1_mask.tiff", 0.5), named="r1_mask.tiff"),
    "panda-slide-truncated": panda_case(lambda r: cut(r / "train_images" / "r1.tiff", 0.4), named="r1.tiff"),
    "panda-slide-random-bytes": panda_case(lambda r: random_bytes(r / "train_images" / "r1.tiff", 13), named="r1.tiff"),
    "panda-no-images-folder": panda_case(lambda r: [p.unlink() for p in (r / "train_images").iterdir()] and (r / "train_images").rmdir(),
                                         named="train_images"),
    "panda-bad-provider-option": panda_case(named="provider", options=("--provider", "utrecht")),
}


# ---- image folder ----------------------------------------------------------------------------------------------

def folder_case(change: Callable[[Path], None] | None = None, named: str = "a.png", options=(), masks: bool = False):
    def make(tmp: Path, fx):
        root = tmp / "in" / "img"
        rng = np.random.default_rng(4)
        write_png(root / "a.png", rng.integers(0, 256, (24, 30, 3), dtype=np.uint8))
        extra = list(options)
        if masks:
            write_png(tmp / "in" / "masks" / "a.png", np.ones((24, 30), np.uint8))
            extra += ["--masks", tmp / "in" / "masks", "--schema", "camelyon16"]
        if change is not None:
            change(tmp / "in")
        argv, out = build(tmp, "folder", root, *extra)
        return argv, out, [named]
    return make


FOLDER: dict[str, Callable] = {
    "folder-empty": folder_case(lambda d: (d / "img" / "a.png").unlink(), named="img"),
    "folder-image-smaller-than-size": folder_case(named="--path", options=("--size", "64")),
    "folder-image-smaller-than-size-pseudolabel": folder_case(named="--path", options=("--size", "64", "--pseudolabel")),
    "folder-image-random-bytes": folder_case(lambda d: random_bytes(d / "img" / "a.png", 14)),
    "folder-image-truncated": folder_case(lambda d: cut(d / "img" / "a.png", 0.5)),
    "folder-image-zero-bytes": folder_case(lambda d: cut(d / "img" / "a.png", 0)),
    "folder-image-16bit": folder_case(lambda d: Image.fromarray(np.zeros((24, 30), np.uint16)).save(d / "img" / "a.png")),
    "folder-tif-float": folder_case(lambda d: tifffile.imwrite(d / "img" / "b.tif", np.zeros((8, 8, 3), np.float32), photometric="rgb"), named="b.tif"),
    "folder-mask-missing": folder_case(lambda d: (d / "masks" / "a.png").unlink(), masks=True),
    "folder-mask-other-size": folder_case(lambda d: write_png(d / "masks" / "a.png", np.ones((10, 30), np.uint8)), masks=True),
    "folder-mask-unknown-ids": folder_case(lambda d: write_png(d / "masks" / "a.png", np.full((24, 30), 7, np.uint8)), masks=True),
    "folder-mask-rgb": folder_case(lambda d: write_png(d / "masks" / "a.png", np.ones((24, 30, 3), np.uint8)), masks=True),
    "folder-mask-random-bytes": folder_case(lambda d: random_bytes(d / "masks" / "a.png", 15), masks=True),
    "folder-masks-without-schema": folder_case(named="schema", options=("--masks", "MASKS")),
    "folder-schema-unknown": folder_case(named="no-such", options=("--masks", "MASKS", "--schema", "no-such")),
    "folder-schema-of-nuclei": folder_case(named="pannuke", options=("--masks", "MASKS", "--schema", "pannuke")),
    "folder-size-zero": folder_case(named="size", options=("--size", "0")),
    "folder-stride-negative": folder_case(named="stride", options=("--size", "8", "--stride", "-3")),
    "folder-mpp-negative": folder_case(named="mpp", options=("--mpp", "-1")),
    "folder-path-missing": folder_case(lambda d: [p.unlink() for p in (d / "img").iterdir()] and (d / "img").rmdir(), named="img"),
}

ALL = {**PANNUKE, **LIZARD, **CONSEP, **MONUSAC, **CAMELYON, **PANDA, **FOLDER}


def _masks_placeholder(make):
    """Options naming MASKS point at a real (empty) folder under the case's inputs."""
    def wrapped(tmp: Path, fx):
        argv, out, names = make(tmp, fx)
        if "MASKS" in argv:
            (tmp / "in" / "masks-empty").mkdir(parents=True, exist_ok=True)
            argv = [tmp / "in" / "masks-empty" if a == "MASKS" else a for a in argv]
        return argv, out, names
    return wrapped


def _problem(name: str) -> str | None:
    """What the message must say besides the file, for damaged and missing files."""
    if any(word in name for word in ("truncated", "random-bytes", "zero-bytes", "not-well-formed", "xml-empty", "header-only")):
        return r"read|truncat|damag|decod|not (a|well)|unreadable|empty|header|magic|corrupt|identify|parse|XML|UTF-8|column"
    if name.endswith("-missing") or "-no-" in name:
        return r"not found|no |lacks|missing|without"
    return None


@pytest.mark.parametrize("case", [Case(name, _masks_placeholder(make), problem=_problem(name)).param() for name, make in ALL.items()])
def test_malformed_reader_input(case, tmp_path, capsys):
    check_case(case, tmp_path, capsys, inputs=[tmp_path / "in"])
