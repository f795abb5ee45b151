"""`Model`: a graph ready to run.

This is what the Python API and `graphconv run` use: it accepts (C, H, W) or
(N, C, H, W) arrays of any size the network fits, and maps score-map cells back to
boxes in the image. Everything a compilation decided is in the graph itself (a
shift-and-stitch model has its `shift_copies` and `interleave` layers), so there is
one way to run any model.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np

from graphconv.classes import class_index
from graphconv.errors import GraphconvError, counted, shown, warn_caller
from graphconv.georef import MONAI_SIGMA_SCALE
from graphconv.ir import Graph
from graphconv.receptive import Field, MixedStridesError, crop_stride, receptive_fields
from graphconv.runtime import Executor
from graphconv.shapes import check_holds_a_crop
from graphconv.strides import stitch_copies
from graphconv.frontends import load_network as load_spec
from graphconv.frontends.yaml import save_model


class Model:
    """A graph ready to run. What it derives from the graph (an executor per device,
    the receptive field) is kept while `graph.version` stays the same, and worked out
    again after any edit, so an edited graph runs as edited."""

    def __init__(self, graph: Graph, *, as_written: bool = False):
        """`as_written`: run the graph's layers exactly as they are, where a graph not
        compiled otherwise runs after the passes that keep its function
        (`runnable_graph`): what `verify` checks the passes against."""
        self.graph = graph
        self.as_written = as_written
        self._derived: dict = {}
        self._derived_version: int | None = None
        self._warned: set = set()  # the warnings given, for `warn_caller` to give once per line and model

    def __repr__(self) -> str:
        """One line a notebook shows: name, input crop, output channels, layers, and whether
        compiled, sliding without being compiled, or a classifier as loaded (`_state`)."""
        c, h, w = self.crop_shape
        try:
            channels = f"{self.output_channels} output channels"
        except Exception:  # noqa: BLE001 - a repr must not fail on a graph being edited
            channels = "output channels unknown"
        task = ", segmentation" if self.segmentation else ""
        return (f"<graphconv.Model {self.graph.name!r}: input {c}x{h}x{w}, {channels}, "
                f"{len(self.graph.layers())} layers, {self._state()}{task}>")

    def summary(self, input_size: tuple[int, int] | None = None) -> str:
        """`graphconv inspect`'s table, as text a notebook prints: each layer's output shape,
        receptive field, stride, parameters and FLOPs at `input_size` (H, W; the crop
        where None), then the map's size and where its cells stand (`print(model.graph)`
        gives the IR itself)."""
        from graphconv.inspect_report import inspect_report

        return inspect_report(self, tuple(input_size) if input_size is not None else None)

    def _state(self) -> str:
        """What `run` of this model returns, in the repr's words: compiled, maps without
        being compiled (passes run by hand: fc-to-conv alone slides), or class vectors."""
        if self.graph.meta.get("compiled"):
            return "compiled"
        try:
            return "a classifier (returns class vectors)" if self.returns_vectors else "returns maps, not compiled"
        except Exception:  # noqa: BLE001 - a repr must not fail on a graph being edited
            return "not compiled"

    def __getstate__(self) -> dict:
        """Pickled and deep-copied as its graph alone: what it derived (executors bound to
        kernels, plans, buffers, a lock) is rebuilt on the next run, so a model that ran
        can go to a spawn pool, joblib or Dask."""
        return {"graph": self.graph, "as_written": self.as_written}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["graph"], as_written=state.get("as_written", False))

    def _cache(self) -> dict:
        """What was derived from the graph at its current version."""
        if self.graph.version != self._derived_version:
            self._derived, self._derived_version = {}, self.graph.version
        return self._derived

    def derived(self, key: str, compute: Callable[[], Any]) -> Any:
        """`compute()`, worked out once per graph version: for what other modules derive
        from the model and ask for again and again (the crop loop's batch size, per tile)."""
        cache = self._cache()
        if key not in cache:
            cache[key] = compute()
        return cache[key]

    @classmethod
    def load(cls, path: str | os.PathLike, *, weights: str | os.PathLike | None = None,
             labels: str | os.PathLike | Sequence[str] | None = None,
             crop_size: int | tuple[int, int] | None = None, task: str | None = None,
             preprocess: dict | None = None, activation: str | None = None) -> "Model":
        """Load a spec file, a compiled model directory or an ONNX model; `weights` /
        `labels` replace the files the spec names (see graphconv/frontends/yaml.py on which
        paths are trusted; `labels` may also be the list of class names itself);
        `crop_size` is the training crop, (H, W) or one number for a square, of an ONNX
        model whose input size is dynamic; `task` ("segmentation" or
        "classification") replaces the file's (`segmentation`); `preprocess` replaces the
        file's preprocess block whole (see `Model.preprocess`); `activation` ("sigmoid" or
        "softmax") ends a model exported giving logits in it: "sigmoid" declares a
        multi-label model (`graphconv.frontends.end_in_activation`)."""
        return cls(load_graph(path, weights=weights, labels=labels, crop_size=crop_size, task=task,
                              preprocess=preprocess, activation=activation))

    def save(self, directory: str | os.PathLike) -> Path:
        """Write the model as a folder (model.yaml, weights, labels) that `graphconv.load`
        reads back. What the graph's meta says (preprocess, task, labels) is checked first,
        as `load` will check it: a block edited by hand that load would refuse is refused
        here, before anything is written (`graphconv.save_model`)."""
        return save_model(self.graph, directory)

    def export(self, path: str | os.PathLike, *, input_size: tuple[int, int] | None = None,
               batch: int | None = None, pixels: bool = False, argmax: bool = False) -> list[str]:
        """Write the model as an ONNX file for onnxruntime, TensorRT and other runtimes,
        as `graphconv export` does: dynamic N, H and W (`input_size` (H, W) and `batch` fix
        them), op set 19, the crop, preprocess, labels and cell placement in its metadata;
        `pixels`: the input is uint8 (N, H, W, C) pixels and the graph applies the
        preprocess; `argmax`: an output 'classes' of each cell's top class besides the
        scores. Returns the notes the CLI prints (a size rule other runtimes do not check;
        pools TensorRT refuses). Refuses to replace a file the model was read from or an
        ONNX file graphconv did not export."""
        from graphconv.frontends.onnx_export import ExportOptions, export_model

        options = ExportOptions(input_size=None if input_size is None else tuple(input_size), batch=batch,
                                pixels=pixels, argmax=argmax)
        return export_model(self, path, options=options)

    @property
    def preprocess(self) -> dict | None:
        """How pixels (0..255) become the network's input, `(x * scale - mean) / std` per
        channel, as the spec's `preprocess` block says: a copy of {scale, mean, std,
        values}, or None. Set it with a dict (checked as a spec's block is: finite numbers,
        one mean and std per channel, or one number for all, no zero std), or None to drop
        it; `classify` and `run_image` apply it, and `save` writes it."""
        block = self.graph.meta.get("preprocess")
        return None if block is None else {k: list(v) if isinstance(v, list) else v for k, v in block.items()}

    @preprocess.setter
    def preprocess(self, block: dict | None) -> None:
        set_preprocess(self.graph, {} if block is None else block)

    # ---- what the model computes ----------------------------------------------------------
    @property
    def crop_shape(self) -> tuple[int, int, int]:
        """C, H, W of the crop the original classifier was trained on."""
        return self.graph.input_shape

    @property
    def stitch_copies(self) -> int:
        """Shifted copies of each image the network runs (1 unless it uses shift-and-stitch)."""
        return stitch_copies(self.graph)

    @property
    def seeded_weights(self) -> bool:
        return bool(self.graph.meta.get("seeded_weights"))

    @property
    def field(self) -> Field:
        """The receptive field of one score-map cell, with the map's stride in pixels.

        Worked out once per graph version, like the executors: every run needs it to crop
        the score map, and walking the graph for it cost about 1 ms per run (1.5% of
        AlexNet-FCN at 384)."""
        cache = self._cache()
        if "field" not in cache:
            cache["field"] = self._output_field()
        return cache["field"]

    def _output_field(self) -> Field:
        """The output's receptive field; for a classifier whose branches meet at different
        strides (equal in size only at its crop), which runs on its crop but cannot slide,
        the crop itself: its one cell reads the whole crop. Its stride, which `run --crops`
        takes by default, is the finest its branches sample the image at
        (`receptive.crop_stride`): the crop's size was far coarser than either branch.
        Compiling such a network to slide is refused (`compiler.check_can_slide`)."""
        try:
            return receptive_fields(self.graph)[self.graph.output.name]
        except MixedStridesError:
            if self.segmentation or not self.returns_vectors:
                raise
            _, hc, wc = self.crop_shape
            return Field((hc, wc), crop_stride(self.graph), (0, 0))

    @property
    def cell_area(self) -> Field:
        """Where each cell of `run`'s map stands on the image: a classifier's cell (i, j) is
        the classifier on its crop at (i, j) times the stride, so the crop (what a
        georeferenced map centres each cell on; `field`, the pixels the cell reads, may
        reach past the crop and, where the network pads, sit off its centre: a ResNet's,
        (stride - 1) / 2 pixels up and left of it, 15.5 at stride 32); a segmentation
        network's, the receptive field of its output pixel, or, where it gives one label per
        pixel (its output the crop's size), that pixel: a map of a GeoTIFF is then
        georeferenced as the image, where the field's centre put it 1 to 3.5 pixels off for
        a bilinear head or some transposed convs."""
        if self.segmentation:
            return Field((1, 1), (1, 1), (0, 0)) if self._labels_per_pixel() else self.field
        return Field(tuple(self.crop_shape[1:]), self.field.stride, (0, 0))

    @property
    def output_stride(self) -> tuple[int, int]:
        return self.field.stride

    def cell_box(self, i: int, j: int, image_size: tuple[int, int] | None = None) -> tuple[int, int, int, int]:
        """(top, left, bottom, right) in input pixels of the field of score-map cell (i, j).

        The indices must be whole numbers >= 0 and inside the map: the crop grid of an
        image of `image_size` (H, W) when given, else the map `run` returned last (if it
        ran); otherwise a CellIndexError (an IndexError and a GraphconvError) says which
        cells there are."""
        for name, value in (("row", i), ("column", j)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 0:
                raise CellIndexError(f"cell_box: the {name} must be a whole number >= 0, got {value!r}")
        if image_size is not None:
            (rows, cols), what = self.map_size(*image_size), f"of a {image_size[0]}x{image_size[1]} image"
        else:
            (rows, cols), what = self._cache().get("last_map", (None, None)), "that run returned last"
        if rows is not None and (i >= rows or j >= cols):
            raise CellIndexError(f"cell_box: cell ({i}, {j}) is outside the {rows}x{cols} score map {what} "
                                 f"(rows 0..{rows - 1}, columns 0..{cols - 1})")
        return self.field.box(int(i), int(j))

    def classify(self, image, *, scales: list[int] | None = None, flip: bool = False, reduce: str = "mean",
                 top: int | None = 5, device: str = "cpu"):
        """The `top` best classes of one image given as a path, a Pillow image or a uint8
        (H, W, C) array, the spec's preprocess applied: [Prediction(index, label, score)],
        best first. See graphconv.scales.classify for how scales, flips and classifiers
        with fc layers are handled."""
        from graphconv.scales import classify
        return classify(self, image, scales=scales, flip=flip, reduce=reduce, top=top, device=device)

    @property
    def output_channels(self) -> int:
        """Channels of the output: the number of classes of a classifier's score map."""
        from graphconv.shapes import infer_shapes
        return infer_shapes(self.graph, check_weights=False)[self.graph.output.name][0]

    @property
    def labels(self) -> list[str] | None:
        """The class names, one per output channel (a spec's `labels:` file, `load(...,
        labels=)`, an ONNX file's metadata), or None. Read from `graph.meta["labels"]`
        and checked against the output each time: names set there by hand that do not
        count the classes (or a pass that changed the classes left) are refused here, not
        taken as "class 10" by `classify`. `load` checked the labels file."""
        labels = self.graph.meta.get("labels")
        if labels is not None and len(labels) != self.output_channels:
            raise GraphconvError(f"graph.meta['labels'] has {len(labels)} names, but the model has "
                                 f"{self.output_channels} classes (output {self.graph.output.name!r}): give one name "
                                 "per class")
        return None if labels is None else list(labels)

    @labels.setter
    def labels(self, names: Sequence[str] | None) -> None:
        set_labels(self.graph, names)

    @property
    def segmentation(self) -> bool:
        """Whether the network is a dense predictor (`task: segmentation` in its spec): its
        output on its training patch is already a map (a U-Net's, one cell per pixel),
        and on any image every cell it computes is a prediction, so `run` returns its map
        whole. A classifier's map (the default) has one cell per crop position instead,
        and cells whose crop would run off the image are dropped (`map_size`)."""
        return self.graph.meta.get("task") == "segmentation"

    def output_hw(self, height: int, width: int) -> tuple[int, int]:
        """Rows and columns of what `run` returns for an image of height x width: the
        network's map, cut to the crop grid (`map_size`), from shapes alone."""
        from graphconv.shapes import infer_shapes

        if self.segmentation and self.padded_hw(height, width) is not None:
            return height, width  # the map of the padded image, cut back to the image's pixels
        run_hw = self.trimmed_hw(height, width) or (height, width)
        _, full_rows, full_cols = infer_shapes(self.graph, run_hw, check_weights=False)[self.graph.output.name]
        if self.segmentation:
            self._check_labels_line_up(height, width, (full_rows, full_cols))
            return full_rows, full_cols
        rows, cols = self.map_size(height, width)
        return min(rows, full_rows), min(cols, full_cols)

    def _labels_per_pixel(self) -> bool:
        """Whether a segmentation network gives one label per pixel: its output at its crop
        is the crop's size (a U-Net, an FCN head resized to its input)."""
        from graphconv.shapes import infer_shapes

        _, hc, wc = self.crop_shape
        return self.derived("output at the crop", lambda: tuple(
            infer_shapes(self.graph, (hc, wc), check_weights=False)[self.graph.output.name][1:])) == (hc, wc)

    def _check_labels_line_up(self, height: int, width: int, out_hw: tuple[int, int]) -> None:
        """A segmentation network that gives one label per pixel at its crop must give one
        per pixel at any size it runs at. Where its strides round a side that is not a
        multiple of them, its map comes out of another size (an FCN head resizing "to the
        input's size" was imported with the crop's factor: 100x100 gave 104x104), and
        the labels do not line up with the pixels: such an image is padded
        (`padded_hw`), and this refuses only a size no padding within 256 pixels fixes."""
        _, hc, wc = self.crop_shape
        if not self._labels_per_pixel() or out_hw == (height, width):
            return
        raise GraphconvError(f"{self.graph.name} gives one label per pixel at its {hc}x{wc} crop, but a "
                             f"{height}x{width} image would get a {out_hw[0]}x{out_hw[1]} map: its strides round "
                             f"sides that are not multiples of them, and the labels would not line up with the "
                             f"pixels; no image up to 256 pixels larger on each side lines up either")

    def padded_hw(self, height: int, width: int) -> tuple[int, int] | None:
        """The image size a segmentation network that gives one label per pixel runs an
        image of height x width at, where it cannot run at its own: the least sides at
        least as large on which its branches meet and its map is the input's size (a
        U-Net of four 2x2 pools takes multiples of 16; a 2001x1500 slide is padded to
        2016x1504). `run` and tiled runs pad the image with zeros (after the preprocess)
        at the bottom and right, and cut the map back to the image's pixels, as one pads
        an image by hand for PyTorch; the labels near those edges see the padding. None
        where the image's own size works, for a classifier, and where no size up to 256
        pixels larger on a side works (then `output_hw` says why)."""
        if not self.segmentation or not self._labels_per_pixel():
            return None
        return self.derived(f"padded size {height}x{width}", lambda: self._least_lined_up(height, width))

    def _least_lined_up(self, height: int, width: int) -> tuple[int, int] | None:
        from graphconv.shapes import infer_shapes

        def lines_up(h: int, w: int) -> bool:
            try:
                return tuple(infer_shapes(self.graph, (h, w), check_weights=False)[self.graph.output.name][1:]) == (h, w)
            except GraphconvError:
                return False
        if lines_up(height, width):
            return None
        _, hc, wc = self.crop_shape
        rows = next((h for h in range(height, height + 257) if lines_up(h, wc)), None)
        cols = next((w for w in range(width, width + 257) if lines_up(hc, w)), None)
        return (rows, cols) if rows and cols and lines_up(rows, cols) else None

    def trimmed_hw(self, height: int, width: int) -> tuple[int, int] | None:
        """The top-left part of an image of height x width that a sliding classifier
        whose branches meet on some sides only (`shapes.fitting_sizes`: an upsampled
        branch added to a finer one meets it on sides 8k..8k+1 or 8k+6..8k+7) runs the
        image at: each side they do not meet on cut to the largest one they do, which
        still holds every crop of the crop grid (`map_size`). The pixels cut lie in no
        crop, so the map is the same, and for an unpadded network exact: it was refused
        for sides that only added rows no cell is made of. None where the image's sides
        fit, for a segmentation network (`padded_hw`) and a classifier as written, and
        where no such part exists (the shape error then says what to do)."""
        if self.segmentation or self.returns_vectors:
            return None
        return self.derived(f"trimmed size {height}x{width}", lambda: self._largest_fitting_part(height, width))

    @property
    def fitting_sizes(self):
        """The input sides the network's branches meet on (`shapes.fitting_sizes`; None:
        any), worked out once per graph version: a ResNet-50's tries a period of sides
        by shape inference, some 60 ms."""
        from graphconv.shapes import fitting_sizes

        return self.derived("fitting sizes", lambda: fitting_sizes(self.graph))

    def _largest_fitting_part(self, height: int, width: int) -> tuple[int, int] | None:
        sizes = self.fitting_sizes
        if sizes is None or (sizes.fits(height, 0) and sizes.fits(width, 1)):
            return None
        _, hc, wc = self.crop_shape
        if height < hc or width < wc:
            return None
        crops_end = [(cells - 1) * stride + crop for cells, stride, crop
                     in zip(self.map_size(height, width), self.output_stride, (hc, wc))]
        part = tuple(sizes.last_fit(side, axis) for axis, side in enumerate((height, width)))
        return part if all(part[a] >= crops_end[a] for a in (0, 1)) else None

    def padding_note(self, height: int, width: int) -> str | None:
        """The note a run gives for an image `padded_hw` pads; None for one it does not."""
        padded = self.padded_hw(height, width)
        if padded is None:
            return None
        return (f"note: {self.graph.name} gives one label per pixel on images of some sizes only (its strides "
                f"divide them evenly): the {height}x{width} image was padded with zeros (after the preprocess) to "
                f"{padded[0]}x{padded[1]} at the bottom and right, and the map cut back to {height}x{width}; labels "
                "near those edges see the padding" + self._stretch_note(height, width))

    def size_notes(self, height: int, width: int) -> list[str]:
        """What a run of an image of height x width should say about how the network's
        map there relates to the model's own: the padding (`padding_note`), pooling
        bins fixed at the crop (`fixed_bins_note`) and statistics of the whole image
        (`whole_image_statistics_note`)."""
        return [note for note in (self.padding_note(height, width), self.fixed_bins_note(height, width),
                                  self.whole_image_statistics_note(height, width)) if note]

    def whole_image_statistics_note(self, height: int, width: int) -> str | None:
        """A network taken for a classifier whose output is a map (one that needs no pass
        to slide, so compiling refused nothing) with a layer of whole-map statistics (an
        InstanceNorm, `OpDef.whole_map`): on an image larger than its crop those are the
        image's, so its map is the network on the whole image, not the classifier on each
        crop the cells are placed as. None where that does not arise."""
        _, hc, wc = self.crop_shape
        if self.segmentation or self.returns_vectors or (height, width) == (hc, wc):
            return None
        from graphconv.strides import PREDICTS_A_MAP, first_whole_map_layer

        found = first_whole_map_layer(self.graph)
        if found is None:
            return None
        node, reason = found
        return (f"note: {self.graph.name}'s {node.op} '{node.name}' {reason}: its map of this {height}x{width} image "
                f"is the network run on the whole image, not the classifier on each {hc}x{wc} crop its cells are "
                f"placed at; --crops computes that map (exact){PREDICTS_A_MAP}")

    def fixed_bins_note(self, height: int, width: int) -> str | None:
        """A segmentation network that pools its map at the crop into a few bins and
        enlarges them back (PSPNet's pyramid: AdaptiveAvgPool2d(2), (3), (6) exported are
        pools of fixed windows, a whole number of them over the crop's map, even with a
        dynamic input size, and resizes by their size) keeps those windows on an image of
        another size, where the model itself would cut its map into the same number of
        bins: the note that says so; None where the image is the crop's size or there are
        no such bins."""
        _, hc, wc = self.crop_shape
        if not self.segmentation or (height, width) == (hc, wc):
            return None
        found = self.derived("pyramid pooling bins", self._bins_at_the_crop)
        if not found:
            return None
        pool, upsample, (bh, bw), (kh, kw) = found[0]
        more = f" (and {len(found) - 1} more such)" if len(found) > 1 else ""
        does, adaptive = ("averages", "AdaptiveAvgPool2d") if pool.op == "avgpool" else ("pools", "AdaptiveMaxPool2d")
        return (f"note: {self.graph.name}'s {pool.name} {does} its map at the {hc}x{wc} crop in {bh}x{bw} bins, "
                f"windows of {kh}x{kw} that {upsample.name} enlarges back{more}: PyTorch's {adaptive} as an "
                f"exporter writes it; on this {height}x{width} image the windows stay {kh}x{kw}, "
                f"where the model itself would cut its map into {bh}x{bw} bins, so its pyramid pooling differs from "
                f"the model's own on any size but {hc}x{wc} (ONNX has no adaptive pooling: exporters write the "
                f"windows of the size they export at, with a dynamic input size too)")

    def _bins_at_the_crop(self) -> list:
        """(pool, upsample, bins, window) for each average or max pool of windows of its
        own stride that cuts its map at the crop into at most 8x8 bins, whole, which
        layers of one input keeping their size lead to an upsample by the window's size."""
        from graphconv.ops.pool import window
        from graphconv.ops.registry import pair
        from graphconv.shapes import infer_shapes

        shapes = infer_shapes(self.graph, check_weights=False)
        found = []
        for pool in self.graph.layers():
            if pool.op not in ("avgpool", "maxpool") or len(shapes[pool.inputs[0].name]) != 3:
                continue
            win = window(pool.params, None)
            _, h, w = shapes[pool.inputs[0].name]
            if win.stride != win.kernel or win.padding != (0, 0) or h % win.kernel[0] or w % win.kernel[1] \
                    or max(h // win.kernel[0], w // win.kernel[1]) > 8:
                continue
            layer = pool
            while len(layer.users) == 1 and layer.users[0].op != "upsample" and len(layer.users[0].inputs) == 1 \
                    and shapes[layer.users[0].name][1:] == shapes[layer.name][1:]:  # a 1x1 conv, a norm, a ReLU
                layer = layer.users[0]
            upsample = layer.users[0] if len(layer.users) == 1 else None
            if upsample is not None and upsample.op == "upsample" and pair(upsample.params["factor"]) == win.kernel:
                found.append((pool, upsample, (h // win.kernel[0], w // win.kernel[1]), win.kernel))
        return found

    def _stretch_note(self, height: int, width: int) -> str:
        """Where the network ends by resizing its map by a whole factor (an FCN or DeepLab
        head's F.interpolate(size=x.shape[-2:]), imported with the crop's factor), the
        model run on an image of another size resizes by another factor, stretching its
        cells over the image: its scores differ from the padded run's everywhere, not only
        near the padding (reviews measured 48% of a 333x517 map's pixels off by more than
        1e-3, where the note named the edges alone, and a torchvision FCN's labels changed
        on 3% of the pixels far from the padding, where the note said "a little"). ""
        otherwise."""
        from graphconv.ops.registry import pair
        from graphconv.shapes import infer_shapes

        resize = self.derived("resize at the end", self._resize_at_the_end)
        if resize is None:
            return ""
        try:
            _, rows, cols = infer_shapes(self.graph, (height, width), check_weights=False)[resize.inputs[0].name]
        except GraphconvError:
            return ""
        factor = pair(resize.params["factor"])
        if (rows * factor[0], cols * factor[1]) == (height, width):
            return ""
        apart = str(factor[0]) if factor[0] == factor[1] else f"{factor[0]}x{factor[1]}"
        multiples = (f"sides are multiples of {factor[0]}" if factor[0] == factor[1] else
                     f"height is a multiple of {factor[0]} and width of {factor[1]}")
        return (f"; where the model itself, on the {height}x{width} image as it is, resizes its {rows}x{cols} map to "
                f"the image (layer {resize.name}), it enlarges it by {height / rows:.4g}x{width / cols:.4g}, not "
                f"{apart}, so its scores differ from these everywhere, by enough to change some labels (these keep the "
                f"cells {apart} pixels apart, where the network computed them); for its own numbers, give an image "
                f"whose {multiples}")

    def _resize_at_the_end(self):
        """The `upsample` layer the network's output is, or is read from through layers of
        one input that keep its size (a softmax); None where there is none."""
        from graphconv.shapes import infer_shapes

        shapes = infer_shapes(self.graph, check_weights=False)
        layer = self.graph.output
        while layer.op != "upsample":
            if len(layer.inputs) != 1 or shapes[layer.inputs[0].name] != shapes[layer.name]:
                return None
            layer = layer.inputs[0]
        return layer

    def scores_on_pixels(self, scores: np.ndarray, image_size: int | tuple[int, int], *, blend: str = "bilinear",
                         padded: bool = False, sigma_scale: float = MONAI_SIGMA_SCALE) -> np.ndarray:
        """`run`'s map of an image of `image_size` (H, W; one number for a square) as (N,
        K, H, W), one value per pixel (`georef.CellPlacement.on_pixels`). `blend`
        "bilinear": each pixel the bilinear blend of the cells whose centres (`cell_area`)
        surround it; "mean": the mean of the cells whose crops cover it, what MONAI's
        sliding_window_inference(mode="constant") returns with these crops as its windows
        (roi_size the crop, its step the stride); "gaussian": that mean weighted as its
        mode="gaussian" weights them, with its `sigma_scale`. Pixels past the outermost cells hold the
        edge's. `padded`: the map is of the image padded as `run --pad-image` and
        `sources.pad_batch` pad it, placed back on the image itself. One image's map,
        (K, rows, cols), gives (K, H, W)."""
        from graphconv.georef import cells_on_pixels
        from graphconv.params import size_pair
        from graphconv.sources import border_margins, shifted_cells

        image_size = size_pair(image_size, "scores_on_pixels: image_size is the image's (H, W) in pixels, or one "
                                           "whole number for a square")
        scores = np.asarray(scores)
        one_image = scores.ndim == 3
        if scores.ndim not in (2, 3, 4):
            raise GraphconvError(f"scores_on_pixels: scores are run's map, (N, K, rows, cols), or one image's (K, "
                                 f"rows, cols); got shape {scores.shape}")
        scores = as_map(scores[None] if one_image else scores)
        top, left, bottom, right = border_margins(self.cell_area, image_size)
        padded_map = self.map_size(image_size[0] + top + bottom, image_size[1] + left + right)
        unpadded_map = self.map_size(*image_size)
        expected = padded_map if padded else unpadded_map
        if tuple(scores.shape[2:]) != tuple(expected):
            hint = ("; that is the padded image's map (run --pad-image, sources.pad_batch): give padded=True"
                    if not padded and tuple(scores.shape[2:]) == padded_map else
                    "; that is the unpadded image's map: leave out padded=True"
                    if padded and tuple(scores.shape[2:]) == unpadded_map else "")
            what = " padded as run --pad-image pads it" if padded else ""
            raise GraphconvError(f"scores_on_pixels: a {image_size[0]}x{image_size[1]} image's map{what} has "
                                 f"{expected[0]}x{expected[1]} cells, got {scores.shape[2]}x{scores.shape[3]}{hint}")
        placement = cells_on_pixels(shifted_cells(self.cell_area, (top, left) if padded else (0, 0)))
        on_pixels = placement.on_pixels(scores, image_size, blend=blend, sigma_scale=sigma_scale)
        return on_pixels[0] if one_image else on_pixels

    def map_size(self, height: int, width: int) -> tuple[int, int]:
        """Rows and columns of the score map for an image of height x width: one cell per
        crop of a classifier; a segmentation network's whole output (`segmentation`)."""
        for name, value in (("height", height), ("width", width)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
                raise GraphconvError(f"map_size: the {name} is a whole number of pixels, got {value!r}")
        if self.segmentation:
            return self.output_hw(height, width)
        _, hc, wc = self.crop_shape
        sy, sx = self.output_stride
        if height < hc or width < wc:
            raise GraphconvError(f"an image of {height}x{width} is smaller than the {hc}x{wc} crop")
        return (height - hc) // sy + 1, (width - wc) // sx + 1

    # ---- running ------------------------------------------------------------------------
    def executor(self, device: str = "cpu") -> Executor:
        """The Executor for `device` ("cpu", "cuda" or "auto"), made once per graph
        version; it resolves the device itself, once. It binds its own copy of the graph
        (the weights shared, not copied): what it marks on it (the CPU's `layout:
        channels-last`) is its own, and the model's graph stays as the user left it."""
        executors = self._cache().setdefault("executors", {})
        if device not in executors:
            graph = self.runnable_graph()
            executors[device] = Executor(graph, device)
            if _warn_of_cold_kernels(graph, executors[device].device):
                self._cache()["compiling_foreseen"] = True
        return executors[device]

    def runnable_graph(self) -> Graph:
        """The graph the executors run. A compiled one as it is (its pipeline is the
        user's choice), and one made `as_written`; one not compiled after the passes that
        keep it the same function (`CLASSIFIER_PIPELINE`: pads and batch norm folded,
        activations and residual adds fused), as onnxruntime optimises a model it loads. Run as loaded, a
        network imported from ONNX ran its layers one by one: an inverted-residual block
        at 224x224 24 ms against 15 ms (session 96). A graph those passes refuse runs as
        it is, to fail, where it does, with the executor's own error."""
        if self.graph.meta.get("compiled") or self.as_written:
            return self.graph

        def optimised() -> Graph:
            from graphconv.pass_manager import CLASSIFIER_PIPELINE, PassManager
            try:
                return PassManager(CLASSIFIER_PIPELINE).run(self.graph)
            except GraphconvError:
                return self.graph
        return self.derived("runnable graph", optimised)

    def release_memory(self) -> None:
        """Let go of what its executors keep between runs for reuse (`Executor.release_memory`)."""
        for executor in self._cache().get("executors", {}).values():
            executor.release_memory()

    @property
    def returns_vectors(self) -> bool:
        """Whether `run` returns (N, K) class vectors rather than (N, K, rows, cols) maps.

        The rule, PyTorch's and onnxruntime's: a network whose output is computed through
        a layer that flattens the map (`fc`, `flatten`) returns vectors; such a network is
        a classifier as trained, and its output is 1x1 by construction. A network that
        keeps its spatial axes to the end returns maps, 1x1 on its crop: every compiled
        (fully convolutional) network, which is what fc-to-conv and remove-flatten make,
        and a network ending in a global pool without a flatten (as PyTorch's pooling
        layers return N x K x 1 x 1). The rule looks at the graph alone, so it is the same
        for every input and every device."""
        cache = self._cache()
        if "returns_vectors" not in cache:
            import networkx as nx
            output = self.graph.output.name
            upstream = nx.ancestors(self.graph.nx, output) | {output}
            cache["returns_vectors"] = any(node.opdef.fixes_input_size for node in self.graph.layers()
                                           if node.name in upstream)
        return cache["returns_vectors"]

    def run(self, x: np.ndarray, device: str = "cpu", profile: dict | None = None, *,
            full: bool = False) -> np.ndarray:
        """The network's output for (C, H, W) or (N, C, H, W) float32 input: (N, K, rows,
        cols), one cell per crop of the classifier's size at the output stride, or (N, K)
        for a classifier with fc or flatten layers (`returns_vectors`).

        Cells whose crop would run off the image are dropped (`map_size` gives the crop
        grid): when the classifier's windows leave the last pixels of its crop unused
        (floor rounding), the network computes extra cells at the bottom and right whose
        fields lie in the image but whose crops would not, and a shift-and-stitch
        network computes cells for copies shifted past the image's end. `full=True`
        returns everything the network computed, as it computed it: those cells
        included, and always (N, K, rows, cols). The map's size is what `cell_box`
        checks cells against afterwards."""
        from graphconv.kernel_cache import compile_clock

        self._warn_if_pixels_not_preprocessed(x)
        with compile_clock() as compiled:
            out = self._scores(x, device, profile, full=full)
        self._warn_of_unforeseen_compiling(compiled())
        self._cache()["last_map"] = tuple(out.shape[2:]) if out.ndim == 4 else (1, 1)
        self._warn_if_cells_off_the_lattice()
        for said in [] if full else self.size_notes(*np.shape(x)[-2:]):  # `run` on the command line notes them
            warn_caller(said.removeprefix("note: "))
        return out

    def _warn_if_pixels_not_preprocessed(self, x) -> None:
        """`run` takes the preprocessed input; raw 0..255 pixels given to a model with a
        preprocess mapped nonsense without a word (`images.unpreprocessed_pixels`)."""
        from graphconv import images

        raw = images.unpreprocessed_pixels(as_batch(x, self.crop_shape[0], convert=False),
                                           self.graph.meta.get("preprocess"))
        if raw is not None:
            top, low, high = raw
            warn_caller(f"the input's values reach {top:g}, but this model's preprocess puts pixels (0..255) in "
                        f"{low:.3g}..{high:.3g}: run takes input already preprocessed; for pixels, run_image(x) "
                        "(a uint8 (H, W, C) array) or prepare_image(x) preprocesses them", said=self._warned)

    def _warn_of_unforeseen_compiling(self, seconds: float) -> None:
        """After a call that compiled kernels for a while unannounced, why it was slow: a
        notebook timing it took it for the run's own time. The warning before a run
        (`_warn_of_cold_kernels`) foresees cold kernel modules only; one partly cached
        counts as warm, and a new input size may choose other conv strategies."""
        if seconds >= 1.0 and not self._cache().pop("compiling_foreseen", False):
            warn_caller(f"this call spent {seconds:.0f} s compiling kernels this installation had not run "
                        "before (once each): later calls are faster")

    def cells_off_the_lattice_note(self) -> str | None:
        """The note for a map holding cells on no crop (a classifier compiled without
        keep-crop-cells, such as one compiled before that pass, that upsamples after a
        stride: `receptive.cells_off_the_lattice_note`), worked out once per graph version;
        None for vectors, which have no cells, and for a network that cannot slide."""
        from graphconv.receptive import cells_off_the_lattice_note

        def note() -> str | None:
            if self.returns_vectors:
                return None
            try:
                return cells_off_the_lattice_note(self.graph)
            except MixedStridesError:
                return None
        return self.derived("cells_off_the_lattice_note", note)

    def _warn_if_cells_off_the_lattice(self) -> None:
        """A GraphconvWarning for such a map: `run` on the command line says so in a note."""
        message = self.cells_off_the_lattice_note()
        if message:
            warn_caller(message.removeprefix("note: "))

    def _scores(self, x: np.ndarray, device: str = "cpu", profile: dict | None = None, *,
                full: bool = False) -> np.ndarray:
        """`run` without remembering the map's size for `cell_box`: for graphconv's own
        runs (tiles, the crop loop of verify, classify's scales), which are not the map
        the user holds."""
        batch = as_batch(x, self.crop_shape[0], convert=False)
        image_hw = tuple(batch.shape[2:])
        padded = None
        if not full:
            check_holds_a_crop(self.graph, image_hw)
            if self.segmentation:  # pads a size whose labels would not line up, or refuses it
                padded = self.padded_hw(*image_hw)
                if padded is None:
                    self.derived(f"output size {image_hw}", lambda: self.output_hw(*image_hw))
        if padded is not None:
            batch = padded_batch(batch, padded)
        elif not full and (trimmed := self.trimmed_hw(*image_hw)):
            batch = batch[:, :, :trimmed[0], :trimmed[1]]
        self.check_memory(batch.shape[0], batch.shape[2:], hint=lambda: self._memory_hint(batch.shape[0], image_hw))
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        out = self.executor(device).run(batch, profile)
        if padded is not None:
            out = np.ascontiguousarray(out[:, :, :image_hw[0], :image_hw[1]])
        if not full and not self.segmentation:
            out = self._crop_grid(out, batch.shape[2:])
        if not full and self.returns_vectors and out.shape[2:] == (1, 1):
            out = out.reshape(out.shape[:2])
        return out

    def check_memory(self, images: int, input_hw: tuple[int, int], *, file: str | None = None,
                     hint: str | Callable[[], str] | None = None) -> None:
        """Refuse, before anything is allocated, a run of `images` images of `input_hw` whose
        peak memory (`memory.run_estimate`: weights, activations, scratch, the output) is
        over the memory limit (`graphconv.set_memory_limit`, `--memory-limit`): a
        GraphconvError giving the estimate, naming `file` if given and ending with `hint` (a
        function for one worked out only then: `run`'s searches for a tile that fits).
        `run` checks every run so (the CLI's too), at the size the image runs at (`padded_hw`);
        the estimate is worked out once per size and graph version."""
        from graphconv.memory import check_fits, memory_limit, run_estimate

        hw = (int(input_hw[0]), int(input_hw[1]))
        hw = self.padded_hw(*hw) or self.trimmed_hw(*hw) or hw  # the size the network runs the image at
        estimate = self.derived(f"run estimate {images}x{hw}", lambda: run_estimate(self.graph, images, hw))
        if estimate > memory_limit():
            check_fits(estimate, f"running {self.graph.name} on {counted(images, 'image')} of "
                                 f"{hw[0]}x{hw[1]}", file=file,
                       hint=hint() if callable(hint) else hint)

    def _memory_hint(self, images: int, image_hw: tuple[int, int]) -> str:
        """What to do instead of a whole run that does not fit, from Python: the tile
        `run_tiled` can take under the limit (`tiling.choose_tile`)."""
        from graphconv.tiling import fitting_tile

        fewer = "run fewer images at a time" if images > 1 else ""
        if self.returns_vectors:
            return fewer
        example = fitting_tile(self, tuple(image_hw), images)
        return (f"Model.run_tiled(x, tile) computes the same map tile by tile in bounded memory ({example})"
                + (f", or {fewer}" if fewer else ""))

    def run_image(self, image, *, device: str = "cpu", full: bool = False,
                  resize: int | tuple[int, int] | None = None) -> np.ndarray:
        """`run` on a picture: a file path, a Pillow image or a uint8 (H, W) / (H, W, C)
        array, read as `classify` reads it (`images.as_picture`: turned upright per its
        EXIF orientation, given the network's channels, values on 0..255), resized to
        `resize` = (H, W) or to the shorter side `resize` = S (as `run --resize`), and
        preprocessed by the model's `preprocess`: the map `graphconv run MODEL --image
        FILE` computes for a picture run whole, (1, K, rows, cols) (or (1, K), see `run`).
        For an image too big to hold, `run_tiled` on a reader (graphconv.sources) instead."""
        return self.run(self.prepare_image(image, resize=resize), device, full=full)

    def prepare_image(self, image, *, resize: int | tuple[int, int] | None = None) -> np.ndarray:
        """The (1, C, H, W) float32 array `run_image` feeds `run` for a picture (read,
        upright, the network's channels, resized, preprocessed): what `run`, `verify` and
        `dense.crop_loop` take, so that a notebook's crop loop sees the pixels the dense
        map saw without writing the preprocess by hand."""
        from graphconv import images

        spec = self.graph.meta.get("preprocess")
        self.warn_if_pixels_unscaled()
        picture = images.as_picture(image, self.crop_shape[0], images.stores_values(spec), resize)
        return images.preprocess(picture, spec)[None].astype(np.float32, copy=False)

    def heatmap(self, image, klass: int | str = "top", *, scores: np.ndarray | None = None,
                resize: int | tuple[int, int] | None = None, value_range: str | tuple[float, float] = "auto",
                opacity: float | None = None, device: str = "cpu"):
        """`graphconv run --heatmap`'s picture, as a Pillow RGB image (a notebook shows it;
        `.save("x.png")` writes it): class `klass`'s scores (its index, or its name in the
        model's labels) coloured over `image` with a labelled colour bar, or with "top" each
        cell's best class, every region named. `image` is what `run_image` takes, read and
        resized as it reads it; `scores`, `run_image`'s map of that same picture where you
        have it already (else it is computed here). `value_range`: "auto" (0..1 for
        probabilities, else the map's own min..max), "map" or (low, high); `opacity`, the
        map's share of each pixel (0.5; 0.45 for "top")."""
        from graphconv import images

        if self.returns_vectors:
            raise GraphconvError(f"{self.graph.name} as written gives one class vector per image, not a map to "
                                 "draw: graphconv.compile_model(...) makes the network that slides")
        if opacity is not None and not 0 < opacity <= 1:
            raise GraphconvError(f"heatmap: opacity is more than 0 and at most 1, got {opacity!r}")
        if klass == "top" and self.output_channels == 1:
            raise GraphconvError(f"heatmap: 'top' of {self.graph.name}, which {images.ONE_SCORE_TOP}: draw its "
                                 "scores, heatmap(image, 0)")
        if klass != "top":
            klass = class_index(klass, self.graph.meta.get("labels"), "heatmap: class",
                                "or set model.labels")
            if not 0 <= klass < self.output_channels:
                raise GraphconvError(f"heatmap: class {klass}: the model has {self.output_channels} classes (0 to "
                                     f"{self.output_channels - 1})")
        spec = self.graph.meta.get("preprocess")
        picture = images.as_picture(image, self.crop_shape[0], images.stores_values(spec), resize)
        if scores is None:
            self.warn_if_pixels_unscaled()
            scores = self.run(images.preprocess(picture, spec), device)
        scores = self._map_of(picture, scores)
        best = images.best_class(scores, images.call_cut(self.graph, scores.shape[0])) if klass == "top" else None
        one = scores[klass] if klass != "top" else None
        drawn, _ = images.drawn_heatmap(self, picture, self.cell_area, klass, one=one, best=best,
                                        value_range=value_range, opacity=opacity)
        return drawn

    def _map_of(self, picture: np.ndarray, scores) -> np.ndarray:
        """`heatmap`'s `scores` as (K, rows, cols), checked against the picture's map."""
        given = scores = np.asarray(scores)
        expected = (self.output_channels, *self.map_size(*picture.shape[1:]))
        if scores.ndim == 4 and scores.shape[0] == 1:
            scores = scores[0]
        if scores.shape != expected:
            raise GraphconvError(f"heatmap: scores of shape {given.shape} are not this picture's map: "
                                 f"run_image gives (1, {', '.join(map(str, expected))}) for its "
                                 f"{picture.shape[1]}x{picture.shape[2]} pixels")
        return scores

    def warn_if_pixels_unscaled(self) -> None:
        """A GraphconvWarning where `classify` and `run_image` feed an ONNX model's pixels
        as they are (`unstated_preprocess_origin`): the right input for few PyTorch models,
        whose maps are then nonsense without a word (the command says so in a note)."""
        from graphconv.frontends import frontend_named

        source = unstated_preprocess_origin(self.graph)
        if source is not None and self.graph.meta.get("preprocess") is None:
            no_place = f"({frontend_named(source).a_file} has no place for one)"
            warn_caller(f"{Path(source).name} states no preprocess {no_place}, so the "
                        "pixels go in as they are, 0..255: if the model was trained on normalised pixels, set "
                        "model.preprocess = {'scale': 1/255, 'mean': [...], 'std': [...]} (or load it with "
                        "preprocess=...)", said=self._warned)

    def run_tiled(self, source, tile: int | tuple[int, int], *, out=None, device: str = "cpu",
                  transform=None, progress=None):
        """`run`'s map of an image too big to evaluate whole, computed exactly, tile by tile
        (graphconv.tiling.run_tiled). `source` is what `run` takes (a preprocessed (N, C,
        H, W) or (C, H, W) float array, checked as `run` checks it, read a tile at a time:
        it may be memory-mapped), or a reader with height, width, channels and
        read(top, left, bottom, right) returning that box as (C, h, w) floats. `tile`: input
        pixels per tile, one whole number (a square) or (H, W). `out`, where to write the
        map (a numpy array, np.memmap or zarr array), is checked before any tile runs: the
        map's (N, K, rows, cols), floating point unless `transform`, a function of each
        tile's (N, K, r, c) scores, writes integers (the function of
        `tiling.map_transform(reduce="argmax")`, which returns it with the channels and
        dtype it writes). The map's size is what `cell_box` checks cells against
        afterwards, as after `run`."""
        from graphconv.memory import memory_limit
        from graphconv.tiling import as_source, plan_tiles, run_tiled, wasteful_tile_note
        if isinstance(transform, tuple):
            raise GraphconvError("transform is a function of each tile's scores: map_transform returns (function, "
                                 "channels, dtype), so pass map_transform(...)[0]")
        source = as_source(source, self.crop_shape[0])
        image_hw = (source.height, source.width)
        said = wasteful_tile_note(self, image_hw, plan_tiles(self, image_hw, tile), memory_limit(), tile_option="tile=",
                                  whole="model.run evaluates it whole")
        if said:  # a tile of one cell among halos ran 60x slower than the whole image, unsaid
            warn_caller(said, said=self._warned)
        out = run_tiled(self, source, tile, out=out, device=device, transform=transform, progress=progress)
        self._cache()["last_map"] = tuple(out.shape[2:])
        self._warn_if_cells_off_the_lattice()
        return out

    def _crop_grid(self, out: np.ndarray, image_hw) -> np.ndarray:
        """Keep the cells of whole crops. When a classifier's last window does not use the
        last pixels of its crop (floor rounding), the dense map has extra cells at the
        bottom/right whose crop would run off the image, and a shift-and-stitch map has
        the cells of copies shifted past the image's end; the crop grid excludes them.
        One cell is one crop's: a classifier as written, on its crop, whose merging
        branches of different strides (fastai's concat pool) have no common field."""
        if out.shape[2:] == (1, 1):
            return out
        rows, cols = self.map_size(*image_hw)
        if out.shape[2] > rows or out.shape[3] > cols:
            out = np.ascontiguousarray(out[:, :, :rows, :cols])
        return out


# load_graph's options, as compile_model takes them
LOAD_OPTIONS = ("weights", "labels", "crop_size", "task", "preprocess", "activation")


def load_graph(source: str | os.PathLike, *, weights: str | os.PathLike | None = None,
               labels: str | os.PathLike | Sequence[str] | None = None,
               crop_size: int | tuple[int, int] | None = None, task: str | None = None,
               preprocess: dict | None = None, activation: str | None = None) -> Graph:
    """The graph of a spec file, a model folder or an ONNX model, with `Model.load`'s
    options applied: what `graphconv.load` and `graphconv.compile_model` read."""
    if not isinstance(source, (str, os.PathLike)):
        raise GraphconvError(f"a model to load is a path (a spec, a model folder or an .onnx file), not "
                             f"{type(source).__name__}")
    names = None if labels is None or isinstance(labels, (str, os.PathLike)) else labels
    labels = None if names is not None else labels
    graph = load_spec(source, weights=weights, labels=labels, crop_size=checked_crop_size(crop_size), task=task,
                      activation=activation)
    check_labels(graph, labels or source)
    if names is not None:
        set_labels(graph, names)
    if preprocess is not None:
        set_preprocess(graph, preprocess)
    if graph.meta.get("seeded_weights"):
        warn_caller(f"{graph.name} ({source}) has no trained weights: it runs with deterministic seeded (random) "
                    "weights, so its scores mean nothing (give the trained ones with weights=...npz)")
    return graph


def unstated_preprocess_origin(graph: Graph) -> str | None:
    """The file a network was read from, imported from (a spec's first line) or compiled
    from whose format has no place for a preprocess (ONNX: `FrontEnd.states_preprocess`),
    or None: without one set here its pixels go in as they are, 0..255."""
    from graphconv.frontends import states_no_preprocess
    from graphconv.frontends.yaml import IMPORTED_FROM

    compiled_from = graph.meta.get("compiled", {}).get("source", "")
    paths = [compiled_from, graph.meta.get(IMPORTED_FROM, ""), *graph.meta.get("read_from", [])]
    return next((path for path in paths if states_no_preprocess(path)), None)


# the widest a first layer may map 0..255 onto and count as the network scaling its pixels: Rescaling(1/255) gives 1,
# an ImageNet Normalization of 0..255 (EfficientNetV2's Rescaling then Normalization, ConvNeXt's PreStem) 4.4-4.6
OWN_SCALING_RANGE = 6.0
# the smallest mean a first layer that only subtracts one may take off and count as a mean of 0..255 pixels (Keras'
# caffe mode takes 103.9, 116.8, 123.7): pixels in 0..1 or -1..1 have means of at most 1
PIXEL_UNIT_MEAN = 2.0


class OwnInputScaling(NamedTuple):
    """A network's first layer that takes pixels in 0..255 and scales them itself (see
    `own_input_scaling`)."""

    layer: str
    factors: tuple[float, ...]  # what it multiplies each channel by (their sizes)
    shifts: tuple[float, ...]  # and adds to each after
    mean: tuple[float, ...] = ()  # where it only subtracts one, in pixel units (Keras' caffe mode): per channel

    @property
    def factor(self) -> float:
        """The largest it multiplies a channel by."""
        return max(self.factors)

    @property
    def onto(self) -> tuple[float, float]:
        """The range it takes pixels of 0..255 onto, over every channel."""
        return (min(self.shifts), max(255 * f + s for f, s in zip(self.factors, self.shifts)))


def own_input_scaling(graph: Graph) -> OwnInputScaling | None:
    """The network's only first layer where it is a per-channel affine map that shows
    the network takes pixels in 0..255 and normalises them itself: import's usual
    advice, --scale 0.00392157, would scale them twice (a review's map 0.115 off,
    without a word). Either it takes 0..255 onto at most OWN_SCALING_RANGE (a
    `batchnorm`: Keras's Rescaling(1/255) or (1/127.5, -1), or a Normalization of 0..255
    pixels, imports so; a model trained on 0..1 pixels cannot start so: its first layer
    would squeeze them into 0.02 of a unit), or it only subtracts a mean of at least
    PIXEL_UNIT_MEAN, one of 0..255 pixels (Keras' caffe mode: the RGB -> BGR flip and the
    mean, which tf2onnx folds into one 1x1 conv of 0s and 1s with a bias). A reordering
    of the channels before it is looked through. None otherwise."""
    users = graph.input.users
    while len(users) == 1 and _picks_channels(users[0]):  # an RGB -> BGR flip before the scaling (Keras' caffe mode)
        users = users[0].users
    affine = _scale_and_shift(users[0]) if len(users) == 1 else None
    if affine is None:
        return None
    factors, shifts = affine
    own = OwnInputScaling(users[0].name, tuple(float(v) for v in factors), tuple(float(v) for v in shifts))
    if factors.size and factors.min() > 0 and 255 * factors.max() <= OWN_SCALING_RANGE:
        return own
    if np.allclose(factors, 1.0, rtol=1e-6, atol=0) and ((-shifts >= PIXEL_UNIT_MEAN) & (-shifts <= 255)).all():
        return own._replace(mean=tuple(-v for v in own.shifts))
    return None


def _scale_and_shift(layer) -> tuple[np.ndarray, np.ndarray] | None:
    """(|factor|, shift) per channel of a layer that is a per-channel affine map: a
    `batchnorm`, or a channel pick with a bias (a pick's factors are 1); None for others."""
    from graphconv.ops.batchnorm import scale_and_shift

    if layer.op == "batchnorm" and layer.weights:
        factors, shifts = scale_and_shift(dict(layer.params), dict(layer.weights))
        return np.abs(np.asarray(factors, np.float64)), np.asarray(shifts, np.float64)
    if _picks_channels(layer, with_bias=True) and "bias" in layer.weights:
        bias = np.asarray(layer.weights["bias"], np.float64)
        return np.ones_like(bias), bias
    return None


def _picks_channels(layer, with_bias: bool = False) -> bool:
    """Whether `layer` only copies channels: a slice of them, or a 1x1 conv whose weights
    pick one input channel per output (how import writes a reversal or a gather), with
    a bias where `with_bias`."""
    if layer.op == "slice_channels":
        return True
    from graphconv.ops.registry import pair

    if layer.op != "conv" or (layer.params.get("bias") and not with_bias) or "weight" not in layer.weights:
        return False
    weight = np.asarray(layer.weights["weight"])
    plain = all(pair(layer.params[key]) == value for key, value in (("stride", (1, 1)), ("padding", (0, 0))))
    return (plain and layer.params["groups"] == 1 and weight.shape[2:] == (1, 1)
            and bool(np.isin(weight, (0.0, 1.0)).all()) and bool((weight.sum(axis=(1, 2, 3)) == 1).all()))


def check_labels(graph: Graph, source: str | os.PathLike) -> None:
    """A labels file must name every class: one line per output channel (the error
    names the labels file where the graph knows it, else `source`). Checked as a model
    is loaded: classify named the classes past the file's last line 'class 3', and a
    later compile blamed the passes for the mismatch."""
    from graphconv.frontends.yaml import labels_mismatch
    from graphconv.shapes import infer_shapes

    if graph.meta.get("labels") is None:
        return
    error = labels_mismatch(graph, infer_shapes(graph, check_weights=False)[graph.output.name][0])
    if error is not None:
        raise error if error.loc is not None else GraphconvError(error.message, file=str(source))


def set_labels(graph: Graph, names: Sequence[str] | None) -> None:
    """Give `graph` the class names `names`, one per output channel (checked as a labels
    file's lines are); None drops them."""
    if names is None:
        graph.meta.pop("labels", None)
        return
    if isinstance(names, (str, bytes, os.PathLike)):
        raise GraphconvError("labels are a list of class names, one per class; a labels file is read by "
                             "graphconv.load(..., labels='labels.txt')")
    try:
        names = list(names)
    except TypeError:
        raise GraphconvError(f"labels are a list of class names, one per class, not {type(names).__name__}") from None
    _check_label_names(names)
    from graphconv.shapes import infer_shapes
    classes = infer_shapes(graph, check_weights=False)[graph.output.name][0]
    if len(names) != classes:  # labels_mismatch's message names a labels file, which a list is not
        raise GraphconvError(f"{len(names)} class names for {classes} classes (output {graph.output.name!r}): "
                             "give one name per class")
    graph.meta["labels"] = names


def set_preprocess(graph: Graph, block: dict) -> None:
    """Give `graph` the preprocess `block` (checked: `checked_preprocess`); {} drops it."""
    if not block and isinstance(block, dict):
        graph.meta.pop("preprocess", None)
    else:
        graph.meta["preprocess"] = checked_preprocess(block, graph.input_shape[0])


def checked_preprocess(block, channels: int) -> dict:
    """A preprocess block given from Python, checked by the code that checks a spec's
    (`frontends.yaml.checked_preprocess`): a tuple or array for mean and std is a list,
    and one number is the same for every channel, as import's --mean and --std take it."""
    from graphconv.frontends import yaml as yaml_frontend

    if isinstance(block, dict):
        block = dict(block)
        for key in ("mean", "std"):
            value = block.get(key)
            if isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
                block[key] = [float(value)] * channels
            elif isinstance(value, (tuple, np.ndarray)):
                block[key] = np.asarray(value).tolist() if isinstance(value, np.ndarray) else list(value)
        if isinstance(block.get("scale"), np.generic):
            block["scale"] = block["scale"].item()
    try:
        return yaml_frontend.checked_preprocess(block, channels, Path("preprocess"), None)
    except GraphconvError as err:
        raise GraphconvError(err.message) from None


def _warn_of_cold_kernels(graph: Graph, device: str) -> bool:
    """A GraphconvWarning before a first run that compiles kernels (10-60 s, once per kind
    of layer and installation): a notebook's cell otherwise hung that long without a
    word. The command says it on stderr itself (`cli.note_cold_kernels`). Whether it warned."""
    from graphconv.kernel_cache import COLD_NOTE, cold_kernel_modules

    cold = bool(cold_kernel_modules(graph, device))
    if cold:
        warn_caller(COLD_NOTE.removeprefix("note: "))
    return cold


def check_meta(graph: Graph, prefix: str = "") -> None:
    """What a model folder's model.yaml must hold to load back: the preprocess block, the
    task and the labels (one per output channel), each checked as `load` checks it."""
    from graphconv.frontends import yaml as yaml_frontend

    try:
        if "preprocess" in graph.meta:
            checked_preprocess(graph.meta["preprocess"], graph.input_shape[0])
        task = graph.meta.get("task")
        if task is not None and task not in yaml_frontend.TASKS:
            raise GraphconvError(f"the task is one of {list(yaml_frontend.TASKS)}, not {shown(task)}")
        if graph.meta.get("labels") is not None:
            _check_label_names(graph.meta["labels"])
            from graphconv.shapes import infer_shapes
            mismatch = yaml_frontend.labels_mismatch(graph, infer_shapes(graph, check_weights=False)[graph.output.name][0])
            if mismatch is not None:
                raise mismatch
    except GraphconvError as err:
        raise GraphconvError(prefix + err.message, loc=err.loc) from None


def _check_label_names(labels) -> None:
    """Class names as a labels file's lines must be: strings, each fit to be a line."""
    from graphconv.frontends import yaml as yaml_frontend

    if not isinstance(labels, (list, tuple)) or not all(isinstance(name, str) for name in labels):
        raise GraphconvError(f"labels must be a list of class names (strings), got {shown(labels)}")
    problem = next(filter(None, map(yaml_frontend.label_problem, labels)), None)
    if problem:
        raise GraphconvError(problem)


def checked_crop_size(crop_size) -> tuple[int, int] | None:
    """`crop_size` as (H, W): one whole number is a square crop."""
    if crop_size is None:
        return None
    from graphconv.params import size_pair
    return size_pair(crop_size, "crop_size is the training crop (H, W), or one whole number for a square crop, "
                                "each >= 1")


class CellIndexError(GraphconvError, IndexError):
    """A score-map cell that does not exist (Model.cell_box)."""


def as_map(scores: np.ndarray) -> np.ndarray:
    """Scores as (N, K, rows, cols): a classifier's (N, K) vectors become 1x1 maps."""
    return scores[:, :, None, None] if scores.ndim == 2 else scores


def padded_batch(batch: np.ndarray, padded_hw: tuple[int, int]) -> np.ndarray:
    """`batch` with zeros below and to the right, to `padded_hw` (`Model.padded_hw`)."""
    height, width = batch.shape[2:]
    return np.pad(batch, ((0, 0), (0, 0), (0, padded_hw[0] - height), (0, padded_hw[1] - width)))


def as_batch(x, channels: int, *, file: str | None = None, convert: bool = True) -> np.ndarray:
    """(C, H, W) -> (1, C, H, W); checks the dtype, the rank and that there is something
    to run (no axis of size 0: a batch of 0 images would reach the kernels, whose work
    division assumes one). `file`, when the array was read from one, is named in errors.
    Anything numpy reads as an array (a list, a CPU torch tensor) is taken; the result is
    C-contiguous float32, or with `convert=False` the array as given (a view), checked
    only: what `Model.run` checks before estimating its memory, and `run_tiled` before
    reading a tile."""
    if hasattr(x, "detach") and getattr(x, "requires_grad", False):  # a torch tensor a model handed back
        x = x.detach()
    try:
        x = np.asarray(x)
    except ValueError:  # numpy's "inhomogeneous shape"
        raise GraphconvError("input: a list of images of different sizes cannot be one batch, which is (N, C, H, "
                             "W) of one size: run each image on its own", file=file) from None
    if not np.issubdtype(x.dtype, np.floating):
        raise GraphconvError(f"input must be a floating-point array (float32; float16 and float64 are converted), "
                             f"got {x.dtype}"
                             + ("; pixels of a picture are preprocessed first (Model.run_image reads and "
                                "preprocesses an image file)" if np.issubdtype(x.dtype, np.integer) else "")
                             + ("; for an image file, Model.run_image(path) reads and preprocesses it"
                                if x.dtype.kind in "US" else ""),
                             file=file)
    given = tuple(x.shape)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[1] != channels:
        hwc = len(given) == 3 and given[2] == channels
        nhwc = len(given) == 4 and given[3] == channels  # a Keras (N, H, W, C) batch
        raise GraphconvError(f"input must be (N, {channels}, H, W) or ({channels}, H, W), got shape {given}"
                             + ("; for an (H, W, C) image, x.transpose(2, 0, 1)" if hwc else "")
                             + ("; for an (N, H, W, C) batch (Keras' layout), x.transpose(0, 3, 1, 2)" if nhwc
                                else "")
                             + ("; for an (H, W) grey image, x[None]" if len(given) == 2 and channels == 1 else ""),
                             file=file)
    if x.size == 0:
        what = "no images (a batch of 0)" if x.shape[0] == 0 else "an image of no pixels"
        raise GraphconvError(f"the input of shape {tuple(x.shape)} is empty: {what}", file=file)
    return np.ascontiguousarray(x, dtype=np.float32) if convert else x
