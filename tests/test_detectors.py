"""
Tests for L{imageproto.features.inference.detectors}: the built-in detectors on real
photographs (tests/data, see SOURCES.md), YOLO output parsing, ONNX models
built by the tests themselves, and the errors C{--detect} reports.
"""

from __future__ import annotations

import os
import sys
import tempfile
import textwrap

from twisted.trial.unittest import SynchronousTestCase

try:
    import cv2
    import numpy
except ImportError:  # pragma: no cover
    cv2 = None

try:
    import onnx
except ImportError:  # pragma: no cover
    onnx = None

try:
    import onnxruntime
except ImportError:  # pragma: no cover
    onnxruntime = None

from imageproto.features.inference import detectors
from imageproto.features.inference.detectors import DetectorError, OnnxOptions, loadDetector

DATA = os.path.join(os.path.dirname(__file__), "data")


def readImage(name: str):
    image = cv2.imread(os.path.join(DATA, name))
    assert image is not None, name
    return image


def centre(box):
    x, y, w, h = box
    return (x + w / 2, y + h / 2)


def inside(point, region):
    (px, py), (x0, y0, x1, y1) = point, region
    return x0 <= px <= x1 and y0 <= py <= y1


def buildYoloModel(path: str, layout: str = "yolov8", inputSize: int = 32) -> None:
    """
    Write a tiny but real ONNX network with a YOLO-shaped output.

    The network averages each input channel (GlobalAveragePool), and a Gemm
    maps those three means onto a C{[1, 6, 8]} (yolov8: 4 box rows + 2 class
    rows, 8 candidates) or C{[1, 8, 7]} (yolov5) tensor.  Candidate 0's class
    0 score is the mean red level, candidate 1's is 0.95 times it (an
    overlapping box NMS must drop) and candidate 2 is class 1 at a constant
    0.9.  Boxes are in input pixels: (16, 16, 16, 16), (17, 17, 16, 16) and
    (48, 40, 8, 24) as centre x, centre y, width, height.
    """
    from onnx import TensorProto, helper, numpy_helper

    candidates = [
        ([16, 16, 16, 16], (0, 1.0)),
        ([17, 17, 16, 16], (0, 0.95)),
        ([48, 40, 8, 24], None),
    ]
    # Eight candidates, five of them empty: like a real export, there are
    # more candidates than attributes, which is how the layout is told.
    if layout == "yolov8":
        rows, cols = 6, 8
    else:
        rows, cols = 8, 7
    bias = numpy.zeros((rows, cols), numpy.float32)
    weights = numpy.zeros((3, rows, cols), numpy.float32)
    for n, (box, redWeight) in enumerate(candidates):
        if layout == "yolov8":
            bias[:4, n] = box
            if redWeight is None:
                bias[5, n] = 0.9
            else:
                weights[0, 4 + redWeight[0], n] = redWeight[1]
        else:
            bias[n, :4] = box
            bias[n, 4] = 1.0  # objectness
            if redWeight is None:
                bias[n, 6] = 0.9
            else:
                weights[0, n, 5 + redWeight[0]] = redWeight[1]
    nodes = [
        helper.make_node("GlobalAveragePool", ["images"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "W", "B"], ["dense"]),
        helper.make_node("Reshape", ["dense", "shape"], ["output0"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny-yolo",
        [
            helper.make_tensor_value_info(
                "images", TensorProto.FLOAT, [1, 3, inputSize, inputSize]
            )
        ],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, rows, cols])],
        [
            numpy_helper.from_array(weights.reshape(3, rows * cols), "W"),
            numpy_helper.from_array(bias.reshape(-1), "B"),
            numpy_helper.from_array(numpy.array([1, rows, cols], numpy.int64), "shape"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)


class PhotographTests(SynchronousTestCase):
    """
    The built-in detectors on real public-domain photographs.
    """

    def setUp(self):
        if cv2 is None:
            raise self.skipTest("cv2 is not installed")

    def test_facesFindsTheAstronautsFace(self):
        """
        C{faces} finds exactly one face in the NASA portrait of Eileen
        Collins, centred on her face (x 90-140, y 30-95 of the 256x256
        image).
        """
        found = loadDetector("faces").factory().detect(
            readImage("astronaut.jpg"), "s"
        )
        self.assertEqual([d["label"] for d in found], ["face"])
        self.assertTrue(inside(centre(found[0]["box"]), (90, 30, 140, 95)), found)
        self.assertTrue(0 < found[0]["confidence"] < 1)

    def test_facesFindsNoFaceOnACat(self):
        """
        C{faces} finds no human face in the photograph of Chelsea the cat.
        """
        found = loadDetector("faces").factory().detect(readImage("chelsea.jpg"), "s")
        self.assertEqual(found, [])

    def test_catsFindsTheCat(self):
        """
        C{cats} finds Chelsea's face: one box of at least 60 px whose centre
        lies within the photograph's cat face (x 40-120, y 40-110 of the
        161x126 image; the top 27 rows are replicated border).
        """
        found = loadDetector("cats").factory().detect(readImage("chelsea.jpg"), "s")
        self.assertEqual([d["label"] for d in found], ["cat"])
        box = found[0]["box"]
        self.assertTrue(inside(centre(box), (40, 40, 120, 110)), found)
        self.assertGreaterEqual(box[2], 60)

    def test_catsFindsNoCatInTheAstronautPortrait(self):
        """
        C{cats} finds nothing in the astronaut portrait.
        """
        found = loadDetector("cats").factory().detect(
            readImage("astronaut.jpg"), "s"
        )
        self.assertEqual(found, [])

    def test_peopleFindsThePhotographer(self):
        """
        C{people} (HOG) finds one person in the photographer photograph, its
        box centred on his body and reaching up to his head (the figure spans
        x 64-140 and starts at y 49 in that 256x288 image).
        """
        found = loadDetector("people").factory().detect(
            readImage("photographer.jpg"), "s"
        )
        self.assertEqual([d["label"] for d in found], ["person"], found)
        x, y, w, h = found[0]["box"]
        self.assertTrue(inside(centre((x, y, w, h)), (64, 49, 140, 288)), found)
        self.assertLessEqual(y, 60)
        self.assertGreaterEqual(h, 128)

    # Where a person's box may have its centre in each photograph at its
    # own size: the man in photographer.jpg (his figure, as above), the
    # astronaut's face (the region test_facesFindsTheAstronautsFace uses;
    # HOG is trained on full-length figures and her portrait is half
    # length), and nowhere in the cat photograph.
    SUBJECTS = {
        "photographer.jpg": (64, 49, 140, 288),
        "astronaut.jpg": (90, 30, 140, 95),
        "chelsea.jpg": None,
    }
    WIDTHS = (None, 192, 256, 320, 400, 512, 640)

    def test_peopleBoxesOnlyTheSubject(self):
        """
        On each test photograph, at its own size and resized (INTER_AREA,
        as the sender resizes) to widths from 192 to 640 pixels, every box
        C{people} reports has its centre on the real subject and none lies
        elsewhere (no cat fur, no background); the photographer is found
        at his own size and at twice it.
        """
        detector = loadDetector("people").factory()
        stray = []
        photographer = {}
        for name, region in self.SUBJECTS.items():
            original = readImage(name)
            for width in self.WIDTHS:
                factor = 1.0 if width is None else width / original.shape[1]
                image = original if width is None else cv2.resize(
                    original,
                    (width, round(original.shape[0] * factor)),
                    interpolation=cv2.INTER_AREA,
                )
                found = detector.detect(image, "s")
                for d in found:
                    x, y, w, h = (v / factor for v in d["box"])
                    if region is None or not inside(centre((x, y, w, h)), region):
                        stray.append((name, width, d))
                if name == "photographer.jpg":
                    photographer[width] = found
        self.assertEqual(stray, [])
        self.assertEqual(len(photographer[None]), 1)
        self.assertEqual(len(photographer[512]), 1)

    def test_peopleConfidenceIsSquashedScore(self):
        """
        C{people}'s confidence is the logistic function of the HOG SVM
        score, so within 0..1 (0.5 on the SVM's boundary), not the raw
        score.
        """
        image = readImage("photographer.jpg")
        [found] = loadDetector("people").factory().detect(image, "s")
        hog = detectors.HogPeopleDetector()
        _, weights = hog._hog.detectMultiScale(
            image,
            hitThreshold=hog.hitThreshold,
            winStride=hog.winStride,
            padding=hog.padding,
            scale=hog.scale,
            groupThreshold=hog.groupThreshold,
        )
        raw = float(numpy.ravel(weights)[0])
        self.assertAlmostEqual(found["confidence"], detectors.squash(raw), places=4)
        self.assertTrue(0.5 < found["confidence"] < 1)

    def test_everyBuiltinConfidenceInUnitInterval(self):
        """
        Every built-in detector reports confidences from 0 to 1 on the
        test photographs, and cascades' level weights go through the same
        squashing as HOG scores.
        """
        found = []
        for name in ("people", "faces", "cats"):
            detector = loadDetector(name).factory()
            for photo in self.SUBJECTS:
                found += detector.detect(readImage(photo), "s")
        motion = loadDetector("motion").factory()
        still = readImage("astronaut.jpg")
        motion.detect(still, "m")
        moved = still.copy()
        moved[150:200, 20:70] = 255
        found += motion.detect(moved, "m")
        self.assertGreaterEqual(len(found), 4, found)
        for d in found:
            self.assertTrue(0 <= d["confidence"] <= 1, d)
        face = loadDetector("faces").factory().detect(readImage("astronaut.jpg"), "s")[0]
        self.assertGreater(face["confidence"], 0.5)

    def test_squash(self):
        """
        L{detectors.squash} maps any score into 0..1 keeping its order: 0
        is 0.5, and huge scores neither overflow nor leave the interval.
        """
        scores = [-1e6, -5.0, -0.1, 0.0, 0.2, 1.38, 1e6]
        squashed = [detectors.squash(s) for s in scores]
        self.assertEqual(squashed, sorted(squashed))
        self.assertEqual(detectors.squash(0), 0.5)
        self.assertTrue(all(0 <= p <= 1 for p in squashed))

    def test_suppressKeepsTheSurest(self):
        """
        Non-maximum suppression keeps the surest of overlapping boxes and
        of a box lying inside another, and every box that overlaps none.
        """
        boxes = [(10, 10, 64, 128), (14, 12, 64, 128), (20, 30, 30, 60), (200, 10, 64, 128)]
        scores = [0.6, 0.7, 0.9, 0.55]
        self.assertEqual(detectors.suppress(boxes, scores, 0.3), [2, 3])

    def test_peopleFindsNobodyInTheCatPhotograph(self):
        """
        C{people} finds nobody in the cat photograph.
        """
        found = loadDetector("people").factory().detect(readImage("chelsea.jpg"), "s")
        self.assertEqual(found, [])

    def test_peopleOnBlankFrameFindsNothing(self):
        """
        C{people} (HOG) runs on a 640x480 frame and reports nothing on an
        empty grey one.
        """
        image = numpy.full((480, 640, 3), 128, numpy.uint8)
        self.assertEqual(loadDetector("people").factory().detect(image, "s"), [])

    def test_motionReportsTheMovingSquare(self):
        """
        C{motion} reports nothing while a scene is still, then one region
        where a bright square appears, per stream: another stream's model is
        untouched.
        """
        detector = loadDetector("motion").factory()
        still = readImage("astronaut.jpg")
        for _ in range(30):
            self.assertEqual(detector.detect(still, "a"), [])
        moved = still.copy()
        moved[150:200, 20:70] = 255
        found = detector.detect(moved, "a")
        self.assertEqual(len(found), 1, found)
        self.assertTrue(inside(centre(found[0]["box"]), (35, 165, 55, 185)), found)
        self.assertEqual(detector.detect(moved, "b"), [])

    def test_motionIsSerial(self):
        """
        C{motion} asks for per-stream ordering; the stateless ones do not.
        """
        self.assertTrue(loadDetector("motion").serial)
        self.assertFalse(loadDetector("faces").serial)

    def test_echoFindsNothing(self):
        """
        C{echo} reports no detections and is marked as an echo.
        """
        spec = loadDetector("echo")
        self.assertTrue(spec.echo)
        self.assertEqual(spec.factory().detect(readImage("chelsea.jpg"), "s"), [])

    def test_annotateDrawsBoxes(self):
        """
        L{detectors.annotate} draws on a copy: the pixels on the box's edge
        change and the original is untouched.
        """
        image = numpy.zeros((100, 100, 3), numpy.uint8)
        out = detectors.annotate(image, [detectors.detection("x", 0.5, (10, 40, 50, 30))])
        self.assertTrue(out[69, 30].any())
        self.assertFalse(image.any())


class ConfidenceFilterTests(SynchronousTestCase):
    """
    C{--confidence} applies to every detector, in one place.
    """

    def setUp(self):
        if cv2 is None:
            raise self.skipTest("cv2 is not installed")

    def userModule(self, source: str) -> str:
        return LoadDetectorTests.userModule(self, source)

    def test_filtersBuiltins(self):
        """
        A confidence above the photographer's drops him from C{people};
        the same option given as C{OnnxOptions.confidence} (how the
        receiver passes C{--confidence}) does too.
        """
        image = readImage("photographer.jpg")
        self.assertEqual(len(loadDetector("people", confidence=0.5).factory().detect(image, "s")), 1)
        self.assertEqual(loadDetector("people", confidence=0.99).factory().detect(image, "s"), [])
        self.assertEqual(
            loadDetector("people", OnnxOptions(confidence=0.99)).factory().detect(image, "s"), []
        )
        face = readImage("astronaut.jpg")
        self.assertEqual(loadDetector("faces", confidence=1.0).factory().detect(face, "s"), [])

    def test_filtersAndClipsUserClasses(self):
        """
        A user's class obeys C{--confidence} too; a confidence outside 0..1
        is clipped into it, with one warning.
        """
        module = self.userModule(
            """
            class Loose:
                def detect(self, image, stream):
                    return [
                        {"label": "low", "confidence": 0.2, "box": [0, 0, 1, 1]},
                        {"label": "high", "confidence": 0.8, "box": [0, 0, 1, 1]},
                        {"label": "raw", "confidence": 3.5, "box": [0, 0, 1, 1]},
                        {"label": "negative", "confidence": -2, "box": [0, 0, 1, 1]},
                    ]
            """
        )
        from twisted.logger import capturedLogs

        detector = loadDetector(module + ":Loose", confidence=0.5).factory()
        with capturedLogs() as events:
            found = detector.detect(None, "s")
            detector.detect(None, "s")
        self.assertEqual(
            [(d["label"], d["confidence"]) for d in found], [("high", 0.8), ("raw", 1.0)]
        )
        self.assertEqual(len([e for e in events if "outside 0..1" in e["log_format"]]), 1)
        everything = loadDetector(module + ":Loose").factory().detect(None, "s")
        self.assertEqual(
            [d["confidence"] for d in everything], [0.2, 0.8, 1.0, 0.0]
        )

    def test_serialAndEchoPassThrough(self):
        """
        The filter keeps the wrapped detector's C{serial} and C{echo}.
        """
        self.assertTrue(loadDetector("motion").factory().serial)
        self.assertTrue(loadDetector("echo").factory().echo)

    def test_defaults(self):
        """
        Without C{--confidence}: 0.25 for onnx and the HOG and cascade
        detectors, 0 for motion, echo and user classes.
        """
        self.assertEqual(detectors.defaultConfidence("onnx:/m.onnx"), 0.25)
        self.assertEqual(detectors.defaultConfidence("people"), 0.25)
        self.assertEqual(detectors.defaultConfidence("faces"), 0.25)
        self.assertEqual(detectors.defaultConfidence("motion"), 0.0)
        self.assertEqual(detectors.defaultConfidence("mine.module:Thing"), 0.0)

    def test_outOfRange(self):
        """
        A confidence outside 0..1 is refused.
        """
        self.assertRaises(DetectorError, loadDetector, "people", confidence=1.5)

    def test_receiverOption(self):
        """
        The receiver's C{--confidence} defaults per detector, must lie in
        0..1, and reaches the detector.
        """
        from twisted.python.usage import UsageError

        from imageproto.tap.receiver import Options

        def parse(*args):
            options = Options()
            options.parseOptions(list(args))
            return options

        self.assertEqual(parse("--detect", "motion")["confidence"], 0.0)
        self.assertEqual(parse("--detect", "people")["confidence"], 0.25)
        options = parse("--detect", "people", "--confidence", "0.99")
        self.assertEqual(
            options.config.inference.detector.factory().detect(readImage("photographer.jpg"), "s"), []
        )
        e = self.assertRaises(UsageError, parse, "--detect", "people", "--confidence", "2")
        self.assertIn("--confidence", str(e))


class YoloParsingTests(SynchronousTestCase):
    """
    L{detectors.parseYoloOutput} on hand-made tensors.
    """

    def setUp(self):
        if cv2 is None:
            raise self.skipTest("cv2 is not installed")

    def test_yolov8Layout(self):
        """
        A C{[1, 4+C, N]} tensor: boxes converted from centre form and scaled
        to frame pixels, low scores dropped, labels from the class names.
        """
        out = numpy.zeros((1, 6, 4), numpy.float32)
        out[0, :4, 0] = [50, 50, 20, 40]
        out[0, 5, 0] = 0.8
        out[0, :4, 1] = [10, 10, 4, 4]
        out[0, 4, 1] = 0.1
        found = detectors.parseYoloOutput(
            out, (2.0, 0.5), OnnxOptions(classes=("a", "b"))
        )
        self.assertEqual(
            found, [{"label": "b", "confidence": 0.8, "box": [80, 15, 40, 20]}]
        )

    def test_yolov5Layout(self):
        """
        A C{[1, N, 5+C]} tensor: class scores are multiplied by objectness;
        unnamed class ids are reported as C{classN}.
        """
        out = numpy.zeros((1, 10, 7), numpy.float32)
        out[0, 0] = [30, 30, 10, 10, 0.5, 0.0, 0.9]
        found = detectors.parseYoloOutput(out, (1.0, 1.0), OnnxOptions())
        self.assertEqual(
            found, [{"label": "class1", "confidence": 0.45, "box": [25, 25, 10, 10]}]
        )

    def test_nmsDropsOverlaps(self):
        """
        Two nearly identical boxes of one class come out as one.
        """
        out = numpy.zeros((1, 5, 8), numpy.float32)
        out[0, :, 0] = [50, 50, 20, 20, 0.9]
        out[0, :, 1] = [51, 51, 20, 20, 0.8]
        self.assertEqual(
            len(detectors.parseYoloOutput(out, (1, 1), OnnxOptions())), 1
        )

    def test_badShape(self):
        """
        An output that is not a 2-D table raises ValueError.
        """
        self.assertRaises(
            ValueError,
            detectors.parseYoloOutput,
            numpy.zeros((2, 3, 4, 5)),
            (1, 1),
            OnnxOptions(),
        )


class OnnxModelTests(SynchronousTestCase):
    """
    C{onnx:PATH} with networks the tests write themselves.
    """

    def setUp(self):
        if cv2 is None or onnx is None:
            raise self.skipTest("cv2 and onnx are needed")
        self.dir = tempfile.mkdtemp()

    def red(self):
        image = numpy.zeros((128, 256, 3), numpy.uint8)
        image[:, :, 2] = 255
        return image

    def test_yolov8Model(self):
        """
        A YOLOv8-shaped model runs (on the preferred backend): on a red 256x128 frame
        (input 32x32, so x scales by 8 and y by 4) it reports the class-0
        box once (NMS removed its neighbour) and the class-1 box, labelled
        from the classes file.
        """
        path = os.path.join(self.dir, "v8.onnx")
        buildYoloModel(path, "yolov8")
        names = os.path.join(self.dir, "names.txt")
        with open(names, "w") as f:
            f.write("red\n\nother\n")
        options = OnnxOptions(size=(32, 32), classes=detectors.readClassNames(names))
        found = loadDetector("onnx:" + path, options).factory().detect(self.red(), "s")
        self.assertEqual(
            sorted(found, key=lambda d: d["label"]),
            [
                {"label": "other", "confidence": 0.9, "box": [352, 112, 64, 96]},
                {"label": "red", "confidence": 1.0, "box": [64, 32, 128, 64]},
            ],
        )

    def test_yolov8ModelSeesTheInput(self):
        """
        The model's class-0 score is the mean red level: on a black frame
        only the constant class-1 box passes the confidence threshold.
        """
        path = os.path.join(self.dir, "v8.onnx")
        buildYoloModel(path, "yolov8")
        options = OnnxOptions(size=(32, 32))
        detector = loadDetector("onnx:" + path, options).factory()
        found = detector.detect(numpy.zeros((64, 64, 3), numpy.uint8), "s")
        self.assertEqual([d["label"] for d in found], ["class1"])

    def test_yolov5Model(self):
        """
        A YOLOv5-shaped model ([1, N, 5+C]) is recognised by its shape.
        """
        path = os.path.join(self.dir, "v5.onnx")
        buildYoloModel(path, "yolov5")
        found = loadDetector("onnx:" + path, OnnxOptions(size=(32, 32))).factory().detect(
            self.red(), "s"
        )
        self.assertEqual(sorted(d["label"] for d in found), ["class0", "class1"])

    def test_missingModel(self):
        """
        A model path that does not exist is named in the error.
        """
        path = os.path.join(self.dir, "nope.onnx")
        e = self.assertRaises(DetectorError, loadDetector, "onnx:" + path)
        self.assertIn(path, str(e))
        self.assertIn("does not exist", str(e))

    def test_unreadableModel(self):
        """
        A file that is not an ONNX model is named, and the backend's
        complaint (onnxruntime's or OpenCV's) is passed on.
        """
        path = os.path.join(self.dir, "junk.onnx")
        with open(path, "wb") as f:
            f.write(b"this is not a model")
        e = self.assertRaises(DetectorError, loadDetector, "onnx:" + path)
        self.assertIn(path, str(e))
        self.assertIn("could not be loaded", str(e))

    def test_missingClassesFile(self):
        """
        An unreadable classes file raises DetectorError naming it.
        """
        path = os.path.join(self.dir, "none.txt")
        e = self.assertRaises(DetectorError, detectors.readClassNames, path)
        self.assertIn(path, str(e))


class OnnxBackendTests(SynchronousTestCase):
    """
    The same C{onnx:PATH} model on onnxruntime and on cv2.dnn.
    """

    def setUp(self):
        if cv2 is None or onnx is None:
            raise self.skipTest("cv2 and onnx are needed")
        self.dir = tempfile.mkdtemp()

    def needOnnxruntime(self):
        if onnxruntime is None:
            raise self.skipTest("onnxruntime is not installed (pip install onnxruntime)")

    def images(self):
        rng = numpy.random.default_rng(7)
        red = numpy.zeros((128, 256, 3), numpy.uint8)
        red[:, :, 2] = 255
        half = red.copy()
        half[:, 128:] = 0
        return [
            red,
            half,
            numpy.zeros((64, 64, 3), numpy.uint8),
            rng.integers(0, 256, (240, 320, 3), dtype=numpy.uint8),
            rng.integers(0, 256, (37, 91, 3), dtype=numpy.uint8),
        ]

    def detector(self, path, backend, **kw):
        options = OnnxOptions(size=(32, 32), backend=backend, confidence=0.1, **kw)
        return loadDetector("onnx:" + path, options)

    def test_sameDetectionsOnBothBackends(self):
        """
        On the suite's tiny YOLOv8 and YOLOv5 models, onnxruntime reports
        the same detections as cv2.dnn, frame after frame: the same labels
        and boxes, confidences equal to 1e-5.
        """
        self.needOnnxruntime()
        compared = 0
        for layout in ("yolov8", "yolov5"):
            path = os.path.join(self.dir, f"{layout}.onnx")
            buildYoloModel(path, layout)
            runtime = self.detector(path, "onnxruntime")
            opencv = self.detector(path, "cv2")
            self.assertTrue(runtime.backend.startswith("onnxruntime/"), runtime.backend)
            self.assertEqual(opencv.backend, "cv2.dnn")
            ours, theirs = runtime.factory(), opencv.factory()
            for image in self.images():
                a = sorted(ours.detect(image, "s"), key=lambda d: (d["label"], d["box"]))
                b = sorted(theirs.detect(image, "s"), key=lambda d: (d["label"], d["box"]))
                self.assertEqual(
                    [(d["label"], d["box"]) for d in a], [(d["label"], d["box"]) for d in b]
                )
                for x, y in zip(a, b):
                    self.assertAlmostEqual(x["confidence"], y["confidence"], places=5)
                compared += len(a)
        self.assertGreater(compared, 10)

    def test_autoPrefersOnnxruntime(self):
        """
        By default an onnx:PATH model runs on onnxruntime when it is
        installed, with the CUDA provider when onnxruntime offers it and
        the CPU provider otherwise.
        """
        self.needOnnxruntime()
        path = os.path.join(self.dir, "v8.onnx")
        buildYoloModel(path)
        spec = self.detector(path, "auto")
        cuda = "CUDAExecutionProvider" in onnxruntime.get_available_providers()
        self.assertIn(
            spec.backend,
            ["onnxruntime/CUDAExecutionProvider", "onnxruntime/CPUExecutionProvider"]
            if cuda
            else ["onnxruntime/CPUExecutionProvider"],
        )
        self.assertEqual(spec.factory().backend, spec.backend)

    def test_autoWithoutOnnxruntimeIsCv2(self):
        """
        Without onnxruntime the model runs through cv2.dnn, and asking for
        onnxruntime by name is an error saying how to install it.
        """
        from imageproto.features.inference import detectors_onnx

        self.patch(detectors_onnx, "onnxruntimeAvailable", lambda: False)
        path = os.path.join(self.dir, "v8.onnx")
        buildYoloModel(path)
        self.assertEqual(self.detector(path, "auto").backend, "cv2.dnn")
        e = self.assertRaises(DetectorError, self.detector, path, "onnxruntime")
        self.assertIn("pip install onnxruntime", str(e))

    def test_unreadableModelOnOnnxruntime(self):
        """
        A file that is not a model is named, and onnxruntime's complaint is
        passed on.
        """
        self.needOnnxruntime()
        path = os.path.join(self.dir, "junk.onnx")
        with open(path, "wb") as f:
            f.write(b"this is not a model")
        e = self.assertRaises(DetectorError, self.detector, path, "onnxruntime")
        self.assertIn(path, str(e))
        self.assertIn("could not be loaded by onnxruntime", str(e))

    def test_backendOption(self):
        """
        --onnx-backend takes auto, onnxruntime or cv2 and reaches the
        detector; anything else is a usage error.
        """
        from twisted.python.usage import UsageError

        from imageproto.tap.receiver import Options

        path = os.path.join(self.dir, "v8.onnx")
        buildYoloModel(path)
        options = Options()
        options.parseOptions(["--detect", "onnx:" + path, "--onnx-size", "32",
                              "--onnx-backend", "cv2"])
        self.assertEqual(options.config.inference.detector.backend, "cv2.dnn")
        self.assertRaises(UsageError, Options().parseOptions,
                          ["--detect", "onnx:" + path, "--onnx-backend", "tpu"])

    def test_builtinsNameNoBackend(self):
        """
        The built-in detectors name no backend.
        """
        self.assertIsNone(loadDetector("echo").backend)


class LoadDetectorTests(SynchronousTestCase):
    """
    L{loadDetector} resolves names and user classes.
    """

    def setUp(self):
        if cv2 is None:
            raise self.skipTest("cv2 is not installed")

    def userModule(self, source: str) -> str:
        directory = tempfile.mkdtemp()
        name = "userdetector_" + os.path.basename(directory).replace("-", "_")
        with open(os.path.join(directory, name + ".py"), "w") as f:
            f.write(textwrap.dedent(source))
        sys.path.insert(0, directory)
        self.addCleanup(sys.path.remove, directory)
        self.addCleanup(sys.modules.pop, name, None)
        return name

    def test_builtins(self):
        """
        Every built-in name loads.
        """
        for name in detectors.BUILTIN:
            self.assertEqual(loadDetector(name).name, name)

    def test_unknownName(self):
        """
        An unknown plain name lists the choices.
        """
        e = self.assertRaises(DetectorError, loadDetector, "dogs")
        self.assertIn("people", str(e))

    def test_userClass(self):
        """
        C{module:Class} loads a user's detector, one instance per call of
        the factory, and honours its C{serial} flag.
        """
        module = self.userModule(
            """
            class Mine:
                serial = True
                def detect(self, image, stream):
                    return [{"label": stream, "confidence": 1.0, "box": [0, 0, 1, 1]}]
            """
        )
        spec = loadDetector(module + ":Mine")
        self.assertTrue(spec.serial)
        self.assertIsNot(spec.factory(), spec.factory())
        self.assertEqual(spec.factory().detect(None, "s")[0]["label"], "s")

    def test_userModuleMissing(self):
        """
        A module that cannot be imported is named.
        """
        e = self.assertRaises(DetectorError, loadDetector, "no_such_mod_xyz:Thing")
        self.assertIn("no_such_mod_xyz", str(e))

    def test_userAttributeMissing(self):
        """
        A missing class in an existing module is named.
        """
        module = self.userModule("x = 1\n")
        e = self.assertRaises(DetectorError, loadDetector, module + ":Thing")
        self.assertIn("Thing", str(e))

    def test_userClassWithoutDetect(self):
        """
        A class without a C{detect} method is refused.
        """
        module = self.userModule("class Thing:\n    pass\n")
        e = self.assertRaises(DetectorError, loadDetector, module + ":Thing")
        self.assertIn("detect", str(e))

    def test_userClassFailsToStart(self):
        """
        A constructor that raises is reported with its exception.
        """
        module = self.userModule(
            "class Thing:\n    def __init__(self):\n        raise IOError('no weights')\n"
        )
        e = self.assertRaises(DetectorError, loadDetector, module + ":Thing")
        self.assertIn("no weights", str(e))
