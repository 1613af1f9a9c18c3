"""The drawn examples of docs/detection/REPORT.md: for each validation canvas, the ground truth
beside each detector's drawn detections (`resnet detect --draw`), enlarged, in one PNG.

    python scripts/fashion-det-examples.py DATA OUT.png RUN_DIR[:NAME]... --images 001001 001006 001009

DATA is a fashion-det directory (VOC tree), each RUN_DIR holds drawn/<image>.png (drawn by the
caller with the score threshold the report states). Needs Pillow (the PyTorch venv has it).
"""
import argparse
import xml.etree.ElementTree as ET
from pathlib import Path

from PIL import Image, ImageDraw


def ground_truth(data: Path, image: str, scale: int) -> Image.Image:
    img = Image.open(data / "JPEGImages" / f"{image}.jpg").convert("RGB")
    img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    draw = ImageDraw.Draw(img)
    for obj in ET.parse(data / "Annotations" / f"{image}.xml").getroot().iter("object"):
        b = obj.find("bndbox")
        box = [float(b.find(k).text) * scale for k in ("xmin", "ymin", "xmax", "ymax")]
        draw.rectangle(box, outline=(255, 255, 255), width=2)
        draw.text((box[0] + 3, box[1] + 2), obj.find("name").text, fill=(255, 255, 255))
    return img


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--images", nargs="+", required=True)
    ap.add_argument("--scale", type=int, default=3)
    a = ap.parse_args()
    rows = []
    for image in a.images:
        row = [ground_truth(a.data, image, a.scale)]
        for run in a.runs:
            drawn = Image.open(Path(run.split(":")[0]) / "drawn" / f"{image}.png").convert("RGB")
            row.append(drawn.resize((drawn.width * a.scale, drawn.height * a.scale), Image.NEAREST))
        rows.append(row)
    gap = 8
    w = max(sum(i.width for i in r) + gap * (len(r) - 1) for r in rows)
    h = sum(max(i.height for i in r) for r in rows) + gap * (len(rows) - 1)
    sheet = Image.new("RGB", (w, h), (255, 255, 255))
    y = 0
    for r in rows:
        x = 0
        for i in r:
            sheet.paste(i, (x, y))
            x += i.width + gap
        y += max(i.height for i in r) + gap
    sheet.save(a.out)
    print(f"wrote {a.out} ({w} x {h})")


if __name__ == "__main__":
    main()
