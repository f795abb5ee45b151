"""Train the small digit classifier behind specs/digits.yaml and draw the quick start's page.

    pip install torch scikit-learn Pillow      # for this script only; graphconv needs none of them
    python3 examples/train_digits.py           # about a minute on one CPU thread

What it does, reproducibly (fixed seeds, one thread, deterministic PyTorch):

1. Splits scikit-learn's bundled handwritten digits (1797 images of 8x8, values 0..16)
   into 1347 training and 450 held-out digits.
2. Renders 28x28 training crops the way the page is drawn: each digit upsampled (bicubic)
   to 14..22 pixels, dark ink on light, slightly uneven, noisy paper. Eleven classes:
   a digit centred within 3 pixels of the crop's centre is that digit (neighbouring digits
   may show at the edges); "background" is blank paper and crops whose digits are all at
   least 7 pixels off centre (parts of digits, the gaps between them). A digit 4..6 pixels
   off centre is never shown: the network may call it either.
3. Trains a LeNet-sized network (conv 5x5 -> pool -> conv 5x5 -> pool -> fc -> fc) with
   PyTorch and prints its accuracy on the held-out digits.
4. Writes specs/digits.npz (`<layer>.weight` / `<layer>.bias`, PyTorch layouts, as the spec
   loader expects) and specs/digits.labels.txt.
5. Draws examples/digits_page.png, a 300x400 page of held-out digits at three sizes, and
   examples/digits_page.json, each digit's box, centre and label (tests/test_digits_example.py
   checks the compiled network against it, without PyTorch or scikit-learn), and prints how
   a sliding evaluation of the trained network reads the page.

The network's ops are graphconv's (conv, relu, maxpool, fc, dropout, softmax) and it ends in
fc layers, so `graphconv compile specs/digits.yaml` turns it into a fully convolutional
network with stride 4 whose every cell classifies the 28x28 crop it sees.
"""
from __future__ import annotations

import io
import json
import time
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sklearn.datasets import load_digits
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
WEIGHTS = ROOT / "specs" / "digits.npz"
LABELS = ROOT / "specs" / "digits.labels.txt"
PAGE = ROOT / "examples" / "digits_page.png"
PAGE_JSON = ROOT / "examples" / "digits_page.json"

SEED = 0
CROP = 28  # the network's input: 1 x 28 x 28 (specs/digits.yaml)
STRIDE = 4  # two 2x2 max pools
CLASSES = [str(d) for d in range(10)] + ["background"]
BACKGROUND = 10
TRAIN_SIZES = (14, 22)  # digit heights (pixels) seen in training, inclusive
CENTRE_JITTER = 3  # a digit class: digit centre within this many pixels of the crop's centre
OFF_CENTRE = 7  # background: every digit at least this far off centre (on one axis or both)
N_TRAIN = 36000  # rendered crops
BACKGROUND_FRACTION = 0.4
EPOCHS = 6
BATCH = 128

PAGE_HW = (300, 400)
PAGE_SIZES = (14, 18, 22)  # the page's three digit sizes, a band of rows each
PAPER = 236.0  # the page's paper, before its gentle shading and noise
PAGE_INK = (0.72, 0.9)  # how dark the page's ink is, a fraction of the paper's brightness


# ---- rendering: the same code draws the training crops and the page --------------------------

def digit_ink(image8: np.ndarray, height: int, width: int) -> np.ndarray:
    """One 8x8 digit (0..16) as ink coverage 0..1 at height x width (bicubic, clipped)."""
    plane = Image.fromarray((image8 / 16.0).astype(np.float32), mode="F")
    big = np.asarray(plane.resize((width, height), Image.BICUBIC), dtype=np.float32)
    return np.clip(big, 0.0, 1.0)


def paste(canvas: np.ndarray, ink: np.ndarray, top: int, left: int) -> None:
    """Add ink into canvas at (top, left), clipped to the canvas (ink may hang off its edges)."""
    h, w = ink.shape
    t0, l0 = max(top, 0), max(left, 0)
    t1, l1 = min(top + h, canvas.shape[0]), min(left + w, canvas.shape[1])
    if t0 < t1 and l0 < l1:
        region = canvas[t0:t1, l0:l1]
        np.maximum(region, ink[t0 - top:t1 - top, l0 - left:l1 - left], out=region)


def on_paper(ink: np.ndarray, paper, strength, shade: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """Ink coverage drawn on paper: 8-bit grey pixels, as an image file holds them
    (paper brightness + shade, darkened by strength x ink, plus noise; broadcasts)."""
    bright = paper + shade
    pixels = bright * (1.0 - strength * ink) + noise
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def to_network_input(pixels: np.ndarray) -> np.ndarray:
    """specs/digits.yaml's preprocess, {scale: -1/255, mean: [-1]}: 1 - p/255, so paper is
    near 0 and ink near 1."""
    return (1.0 - pixels.astype(np.float32) / 255.0).astype(np.float32)


def random_shade(rng: np.random.Generator, h: int, w: int, amount: float) -> np.ndarray:
    """A gentle linear brightness ramp across the paper, up to +-amount."""
    gy, gx = rng.uniform(-amount, amount, 2)
    ys = np.linspace(-0.5, 0.5, h)[:, None]
    xs = np.linspace(-0.5, 0.5, w)[None, :]
    return (gy * ys + gx * xs).astype(np.float32)


# ---- training crops ----------------------------------------------------------------------------

def random_box(rng: np.random.Generator) -> tuple[int, int]:
    """A digit's (height, width): height in TRAIN_SIZES, width 0.8..1.1 of it."""
    h = int(rng.integers(TRAIN_SIZES[0], TRAIN_SIZES[1] + 1))
    return h, max(8, int(round(h * rng.uniform(0.8, 1.1))))


def apart(a, b, gap: float = 2.0) -> bool:
    """Two boxes (cy, cx, h, w) do not overlap (with a gap), as digits on a page do not."""
    return (abs(a[0] - b[0]) >= (a[2] + b[2]) / 2 + gap) or (abs(a[1] - b[1]) >= (a[3] + b[3]) / 2 + gap)


def render_ink(rng: np.random.Generator, images: np.ndarray, target: int | None) -> np.ndarray:
    """The ink of one CROP x CROP training crop: images[target] centred (within
    CENTRE_JITTER) with perhaps some neighbours, or (target None) nothing or digits
    all at least OFF_CENTRE away."""
    canvas = np.zeros((CROP, CROP), np.float32)
    centre = CROP / 2
    boxes = []
    if target is not None:
        h, w = random_box(rng)
        dy, dx = rng.integers(-CENTRE_JITTER, CENTRE_JITTER + 1, 2)
        boxes.append((centre + dy, centre + dx, h, w, target))
        extra = int(rng.choice([0, 1, 2, 3], p=[0.3, 0.3, 0.25, 0.15]))
    else:
        extra = int(rng.choice([0, 1, 2, 3, 4], p=[0.15, 0.35, 0.25, 0.15, 0.1]))
    for _ in range(extra):
        for _attempt in range(20):
            h, w = random_box(rng)
            cy, cx = rng.uniform(-h / 2 + 2, CROP + h / 2 - 2), rng.uniform(-w / 2 + 2, CROP + w / 2 - 2)
            cy, cx = round(cy - h / 2) + h / 2, round(cx - w / 2) + w / 2  # whole-pixel boxes
            if max(abs(cy - centre), abs(cx - centre)) < OFF_CENTRE:
                continue
            box = (cy, cx, h, w, int(rng.integers(len(images))))
            if all(apart(box, other) for other in boxes):
                boxes.append(box)
                break
    for cy, cx, h, w, index in boxes:
        paste(canvas, digit_ink(images[index], h, w), int(round(cy - h / 2)), int(round(cx - w / 2)))
    return canvas


def render_set(rng: np.random.Generator, images: np.ndarray, labels: np.ndarray, n: int,
               background_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """n training crops (network input, (n, 1, CROP, CROP)) and their classes: the ink
    drawn one crop at a time, then put on paper of random brightness, shading and noise,
    with ink of random darkness."""
    ink = np.empty((n, CROP, CROP), np.float32)
    ys = np.empty(n, np.int64)
    for k in range(n):
        if rng.random() < background_fraction:
            ink[k], ys[k] = render_ink(rng, images, None), BACKGROUND
        else:
            index = int(rng.integers(len(images)))
            ink[k], ys[k] = render_ink(rng, images, index), labels[index]
    paper = rng.uniform(195.0, 252.0, (n, 1, 1)).astype(np.float32)
    strength = rng.uniform(0.55, 0.95, (n, 1, 1)).astype(np.float32)
    ramp = np.linspace(-0.5, 0.5, CROP, dtype=np.float32)
    amount = rng.uniform(0.0, 12.0, (n, 1, 1))
    gy, gx = rng.uniform(-1.0, 1.0, (2, n, 1, 1)) * amount
    shade = (gy * ramp[:, None] + gx * ramp[None, :]).astype(np.float32)
    noise = (rng.standard_normal((n, CROP, CROP), np.float32)
             * rng.uniform(0.0, 6.0, (n, 1, 1)).astype(np.float32))
    return to_network_input(on_paper(ink, paper, strength, shade, noise))[:, None], ys


def centred_crops(images: np.ndarray, size: int) -> np.ndarray:
    """Each digit alone, centred, `size` pixels square, on the page's plain paper."""
    out = np.empty((len(images), 1, CROP, CROP), np.float32)
    flat = np.zeros((CROP, CROP), np.float32)
    for k, image in enumerate(images):
        canvas = np.zeros((CROP, CROP), np.float32)
        paste(canvas, digit_ink(image, size, size), (CROP - size) // 2, (CROP - size) // 2)
        out[k, 0] = to_network_input(on_paper(canvas, PAPER, 0.8, flat, flat))
    return out


# ---- the network ---------------------------------------------------------------------------------

class DigitNet(nn.Module):
    """specs/digits.yaml, layer for layer (the names are the weight names)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 5)  # 28 -> 24, pool -> 12
        self.conv2 = nn.Conv2d(8, 32, 5)  # 12 -> 8, pool -> 4
        self.fc3 = nn.Linear(32 * 4 * 4, 64)
        self.drop3 = nn.Dropout(0.3)
        self.fc4 = nn.Linear(64, len(CLASSES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # logits; the spec adds softmax
        x = torch.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = torch.max_pool2d(torch.relu(self.conv2(x)), 2)
        x = torch.relu(self.fc3(x.flatten(1)))
        return self.fc4(self.drop3(x))


def train(net: DigitNet, xs: np.ndarray, ys: np.ndarray) -> None:
    gen = torch.Generator().manual_seed(SEED)
    x_all, y_all = torch.from_numpy(xs), torch.from_numpy(ys)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, EPOCHS * ((len(xs) + BATCH - 1) // BATCH))
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(EPOCHS):
        net.train()
        order = torch.randperm(len(xs), generator=gen)
        total, correct, loss_sum = 0, 0, 0.0
        for start in range(0, len(xs), BATCH):
            idx = order[start:start + BATCH]
            xb, yb = x_all[idx], y_all[idx]
            logits = net(xb)
            loss = loss_fn(logits, yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.item() * len(idx)
            correct += int((logits.argmax(1) == yb).sum())
            total += len(idx)
        print(f"  epoch {epoch + 1:2d}/{EPOCHS}: loss {loss_sum / total:.4f}, "
              f"training accuracy {100 * correct / total:.2f}%")


def predict(net: DigitNet, xs: np.ndarray) -> np.ndarray:
    net.eval()
    with torch.no_grad():
        return np.concatenate([net(torch.from_numpy(xs[k:k + 2048])).argmax(1).numpy()
                               for k in range(0, len(xs), 2048)])


# ---- the page -------------------------------------------------------------------------------------

def draw_page(rng: np.random.Generator, images: np.ndarray, labels: np.ndarray,
              indices: np.ndarray) -> tuple[np.ndarray, list[dict]]:
    """A PAGE_HW page: three bands of rows, one digit size each, digits at jittered places
    in a loose grid with some places left blank. Returns the 8-bit page and its digits."""
    height, width = PAGE_HW
    canvas = np.zeros(PAGE_HW, np.float32)
    shade = random_shade(rng, height, width, 10.0)
    noise = rng.normal(0.0, 3.0, PAGE_HW).astype(np.float32)
    strength_map = np.zeros(PAGE_HW, np.float32)
    digits: list[dict] = []
    pool = iter(indices)
    bands = [(8, 92, PAGE_SIZES[0], 30, 3), (100, 196, PAGE_SIZES[1], 36, 2), (204, 294, PAGE_SIZES[2], 44, 2)]
    for top, bottom, size, pitch, rows in bands:
        row_pitch = (bottom - top) / rows
        for r in range(rows):
            cols = int((width - 16) // pitch)
            x0 = (width - cols * pitch) / 2
            for c in range(cols):
                if rng.random() < 0.2:  # a gap of plain paper
                    continue
                index = int(next(pool))
                h = size
                w = max(8, int(round(size * rng.uniform(0.8, 1.05))))
                jitter = (pitch - w) / 2 - 3
                cy = top + (r + 0.5) * row_pitch + rng.uniform(-2.5, 2.5)
                cx = x0 + (c + 0.5) * pitch + rng.uniform(-jitter, jitter)
                t, l = int(round(cy - h / 2)), int(round(cx - w / 2))
                ink = digit_ink(images[index], h, w)
                paste(canvas, ink, t, l)
                strength_map[t:t + h, l:l + w] = rng.uniform(*PAGE_INK)
                digits.append({"label": int(labels[index]), "box": [t, l, t + h, l + w],
                               "centre": [t + h / 2, l + w / 2], "size": h, "digits_index": index})
    return on_paper(canvas, PAPER, strength_map, shade, noise), digits


def balanced_order(rng: np.random.Generator, indices: np.ndarray, labels: np.ndarray) -> list[int]:
    """indices shuffled so that every run of ten holds each class once (while they last),
    so that the page shows every digit about equally often."""
    by_class = [list(rng.permutation(indices[labels[indices] == c])) for c in range(10)]
    order: list[int] = []
    for r in range(max(len(b) for b in by_class)):
        order += [int(by_class[c][r]) for c in rng.permutation(10) if r < len(by_class[c])]
    return order


def nearest_cell(centre: float) -> int:
    """The score-map row/column whose 28x28 crop is centred nearest a pixel coordinate."""
    return int(round((centre - CROP / 2) / STRIDE))


def slide(net: DigitNet, page: np.ndarray) -> np.ndarray:
    """The classifier on every 28x28 crop at stride 4 (what the compiled network computes)."""
    x = torch.from_numpy(to_network_input(page))[None, None]
    crops = torch.nn.functional.unfold(x, CROP, stride=STRIDE)  # (1, 784, cells)
    rows = (page.shape[0] - CROP) // STRIDE + 1
    cols = (page.shape[1] - CROP) // STRIDE + 1
    flat = crops[0].T.reshape(-1, 1, CROP, CROP).numpy()
    return predict(net, flat).reshape(rows, cols)


def page_report(classes: np.ndarray, digits: list[dict]) -> None:
    rows, cols = classes.shape
    found = sum(classes[nearest_cell(d["centre"][0]), nearest_cell(d["centre"][1])] == d["label"]
                for d in digits)
    near = np.zeros_like(classes, dtype=bool)
    for d in digits:
        i, j = nearest_cell(d["centre"][0]), nearest_cell(d["centre"][1])
        near[max(i - 1, 0):i + 2, max(j - 1, 0):j + 2] = True  # the cells within 4 px
    clean = (classes[~near] == BACKGROUND).mean()
    print(f"page: {found}/{len(digits)} digits read correctly at their centre cell; "
          f"{100 * clean:.1f}% of the {int((~near).sum())} cells more than one cell away from every "
          f"digit's centre say background")


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """np.savez_compressed, but byte for byte the same on every run (no timestamps), so
    rerunning the script leaves the committed file unchanged."""
    with zipfile.ZipFile(path, "w") as archive:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.ascontiguousarray(array), allow_pickle=False)
            archive.writestr(info, buffer.getvalue())


def main() -> None:
    start = time.perf_counter()
    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    data = load_digits()
    images, labels = data.images.astype(np.float32), data.target.astype(np.int64)
    order = np.random.default_rng(SEED).permutation(len(images))
    n_test = 450
    test_idx, train_idx = np.sort(order[:n_test]), np.sort(order[n_test:])
    print(f"scikit-learn digits: {len(train_idx)} for training, {len(test_idx)} held out")

    rng = np.random.default_rng(SEED + 1)
    xs, ys = render_set(rng, images[train_idx], labels[train_idx], N_TRAIN, BACKGROUND_FRACTION)
    print(f"rendered {len(xs)} training crops of {CROP}x{CROP} in {time.perf_counter() - start:.1f} s")

    net = DigitNet()
    train(net, xs, ys)

    test_images, test_labels = images[test_idx], labels[test_idx]
    centred = predict(net, centred_crops(test_images, 18))
    accuracy = (centred == test_labels).mean()
    print(f"TEST ACCURACY: {100 * accuracy:.2f}% of the {len(test_idx)} held-out digits "
          f"(alone, centred, 18 px)")
    for size in (TRAIN_SIZES[0], TRAIN_SIZES[1]):
        acc = (predict(net, centred_crops(test_images, size)) == test_labels).mean()
        print(f"  at {size} px: {100 * acc:.2f}%")
    test_rng = np.random.default_rng(SEED + 2)
    tx, ty = render_set(test_rng, test_images, test_labels, 6000, 0.4)
    tp = predict(net, tx)
    digit = ty != BACKGROUND
    print(f"  held-out crops as in training (sizes {TRAIN_SIZES[0]}-{TRAIN_SIZES[1]}, jitter, neighbours): "
          f"digits {100 * (tp[digit] == ty[digit]).mean():.2f}% right, "
          f"{100 * (tp[digit] == BACKGROUND).mean():.2f}% called background; "
          f"background {100 * (tp[~digit] == BACKGROUND).mean():.2f}% right")

    weights = {name: p.detach().numpy().astype(np.float32) for name, p in net.state_dict().items()}
    save_npz(WEIGHTS, weights)
    LABELS.write_text("\n".join(CLASSES) + "\n")
    print(f"-> {WEIGHTS.relative_to(ROOT)} ({WEIGHTS.stat().st_size} bytes), {LABELS.relative_to(ROOT)}")

    page_rng = np.random.default_rng(SEED + 3)
    page, digits = draw_page(page_rng, images, labels, balanced_order(page_rng, test_idx, labels))
    Image.fromarray(page, mode="L").save(PAGE, format="PNG", optimize=True)
    PAGE_JSON.write_text(json.dumps({
        "about": "examples/digits_page.png, drawn by examples/train_digits.py: held-out scikit-learn "
                 "digits; box is [top, left, bottom, right) in pixels, centre its centre",
        "image_size": list(PAGE_HW), "crop": CROP, "stride": STRIDE,
        "digits": digits}, indent=1) + "\n")
    print(f"-> {PAGE.relative_to(ROOT)} ({PAGE.stat().st_size} bytes, {len(digits)} digits), "
          f"{PAGE_JSON.relative_to(ROOT)}")
    page_report(slide(net, page), digits)
    print(f"done in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
