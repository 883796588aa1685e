"""What the failures of a model on the ISIC 2017 official validation images are made of (issue 14).

For each image with Jaccard below 0.65 (the ISIC failure line) it prints the lesion's and the
prediction's share of the image, whether the lesion touches the border, recall and precision,
and classes the failure as under-segmentation (precision above recall: the model drew part of
the lesion) or over-segmentation. Then three cheap remedies, none tuned on these images:

- an **oracle** threshold per image (the best of 0.1 .. 0.8 for each image, chosen with its
  truth): an upper bound for any operating-point or clean-up rule applied to these maps;
- one global threshold (0.3, 0.4, 0.5);
- **zoom refinement**: a second pass on a square crop around the first pass's lesion (25%, 50%,
  100% margin), averaged with the first pass.

    python benchmarks/failure_anatomy.py models/isic2017/balanced-*/model.keras
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "isic2017-256"
sys.path.insert(0, str(REPO))


def jaccard(pred: np.ndarray, truth: np.ndarray) -> float:
    from glassbox_audit.metrics import confusion_counts, metrics_from_counts

    return float(metrics_from_counts(confusion_counts(truth, pred))["iou"])


def summary(js: np.ndarray) -> str:
    return f"mean Jaccard {js.mean():.4f}, thresholded {np.where(js < 0.65, 0, js).mean():.4f}, " \
           f"failures {(js < 0.65).sum()}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path)
    ap.add_argument("--data", type=Path, default=DATA)
    args = ap.parse_args()
    import keras

    from glassbox_audit.data.imageio import read_image, read_mask

    model = keras.saving.load_model(str(args.model), compile=False, safe_mode=True)
    size = model.input_shape[1]
    images_dir = args.data / "ISIC-2017_Validation_Data"
    masks_dir = args.data / "ISIC-2017_Validation_Part1_GroundTruth"
    files = sorted(images_dir.glob("*.jpg"))
    images = [read_image(f) for f in files]
    truths = [read_mask(masks_dir / f"{f.stem}_segmentation.png", 128, 0.02) for f in files]

    def predict(batch: list[np.ndarray]) -> list[np.ndarray]:
        x = np.stack([cv2.resize(b, (size, size), interpolation=cv2.INTER_AREA) for b in batch]).astype(np.float32)
        logits = model.predict(x / 255.0, verbose=0, batch_size=16)[..., 0]
        return [1 / (1 + np.exp(-lg)) for lg in logits]

    probs = [cv2.resize(p, (t.shape[1], t.shape[0]), interpolation=cv2.INTER_LINEAR)
             for p, t in zip(predict(images), truths)]
    js = np.array([jaccard(p > 0.5, t) for p, t in zip(probs, truths)])
    print(f"{args.model} on {len(files)} official validation images: {summary(js)}\n")
    print(f"{'image':<14} {'Jaccard':>7} {'lesion':>7} {'pred':>6} {'border':>6} {'recall':>6} {'prec':>6}  kind")
    under = 0
    for i in np.argsort(js):
        if js[i] >= 0.65:
            break
        t, p = truths[i], probs[i] > 0.5
        tp = (t & p).sum()
        recall, prec = tp / max(t.sum(), 1), tp / max(p.sum(), 1)
        border = bool(t[0].any() or t[-1].any() or t[:, 0].any() or t[:, -1].any())
        kind = "under" if prec > recall else "over"
        under += kind == "under"
        print(f"{files[i].stem:<14} {js[i]:7.3f} {t.mean():7.3f} {p.mean():6.3f} {'yes' if border else '':>6} "
              f"{recall:6.3f} {prec:6.3f}  {kind}-segmented")
    n_fail = int((js < 0.65).sum())
    print(f"\n{under} of {n_fail} failures under-segmented (precision > recall), {n_fail - under} over-segmented")

    thresholds = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
    per = np.array([[jaccard(p > th, t) for th in thresholds] for p, t in zip(probs, truths)])
    print(f"oracle threshold per image: {summary(per.max(axis=1))}")
    for th in (0.3, 0.4):
        print(f"threshold {th}: {summary(per[:, thresholds.index(th)])}")
    for margin in (0.25, 0.5, 1.0):
        refined = []
        for img, p, t in zip(images, probs, truths):
            ys, xs = np.nonzero(p > 0.5)
            if not len(ys):
                refined.append(jaccard(p > 0.5, t))
                continue
            h, w = p.shape
            cy, cx = (ys.min() + ys.max()) / 2, (xs.min() + xs.max()) / 2
            half = max(32.0, max(ys.max() - ys.min(), xs.max() - xs.min()) / 2 * (1 + margin))
            y0, y1 = int(max(0, cy - half)), int(min(h, cy + half + 1))
            x0, x1 = int(max(0, cx - half)), int(min(w, cx + half + 1))
            if (y1 - y0) * (x1 - x0) > 0.8 * h * w:
                refined.append(jaccard(p > 0.5, t))
                continue
            crop = predict([img[y0:y1, x0:x1]])[0]
            second = np.zeros_like(p)
            second[y0:y1, x0:x1] = cv2.resize(crop, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
            refined.append(jaccard((p + second) / 2 > 0.5, t))
        print(f"zoom refinement, margin {margin:g}: {summary(np.array(refined))}")


if __name__ == "__main__":
    main()
